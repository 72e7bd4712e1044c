"""The JSON the service answers with, as pydantic models: they document the API on ``/docs``."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, Field

__all__ = ["EnrollOut", "ErrorOut", "FaceOut", "HealthOut", "PeopleOut", "RecognizeOut", "RemoveOut", "Skipped", "VerifyOut"]


class ErrorOut(BaseModel):
    """Every refusal: one line that says what was expected, what came, and where."""

    error: str


class FaceOut(BaseModel):
    """One face of a picture."""

    box: list[float] = Field(description="x1, y1, x2, y2 in pixels of the picture (x2, y2 one past the face)")
    name: str = Field(description="the enrolled person, or 'unknown' below the threshold")
    score: float = Field(description="cosine similarity to the best-matching person's closest enrolled image")


class RecognizeOut(BaseModel):
    """Every face of a picture, named."""

    faces: list[FaceOut]
    width: int
    height: int
    threshold: Optional[float] = Field(description="the similarity that names a face (null: none yet, all 'unknown')")


class VerifyOut(BaseModel):
    """Whether the person's face in two photos is the same person."""

    same: bool
    score: float = Field(description="cosine similarity of the two faces")
    threshold: float
    threshold_kind: str = Field(description="given (--pair_threshold), pair (the model's, from validation) or open_set "
                                            "(the gallery's, stricter)")  # fmt: skip
    boxes: list[list[float]] = Field(description="the face used in image1 and in image2")


class Skipped(BaseModel):
    """An enrolment photo that was not used, and why."""

    image: str
    reason: str


class EnrollOut(BaseModel):
    """What an enrolment did."""

    name: str
    added: int = Field(description="photos enrolled now")
    skipped: list[Skipped]
    people: int = Field(description="people enrolled in all")
    threshold: Optional[float] = Field(description="the open-set threshold after this enrolment (null: none yet)")
    notes: list[str]


class RemoveOut(BaseModel):
    """What a removal did."""

    name: str
    removed: int = Field(description="images of the person removed")
    people: int


class PeopleOut(BaseModel):
    """Enrolled names, sorted, a page at a time."""

    people: list[str]
    total: int
    offset: int


class HealthOut(BaseModel):
    """The service is up, and what it serves."""

    status: str
    version: str
    people: int
    images: int
    threshold: Optional[float]
    detector: str
    model: str
    auth: bool
    notes: list[str]
