"""The models at work for the service: one detector, one embedder and the gallery, shared by every request of a worker.

Requests hand images to :class:`Engine`, which runs them through one :class:`BatchQueue`: a
recognition (every face, named) goes through the same :class:`~facetorch.recognition.pipeline.Recognizer`
as ``gallery.py recognize``, and the person's face of an enrolment or verification photo is found
by :func:`~facetorch.recognition.enrollment.subject_faces`, as ``gallery.py enroll`` finds it. The
models run on the queue's thread only, never on the event loop.

Each batch's pictures go through the detector one by one on a CPU (together on a GPU), and the
faces of all of them through the network in one batch. A picture larger than ``max_side`` is
scaled down for the detector alone (its boxes are scaled
back; faces are aligned and embedded from the full picture): the CNN detector's memory and time
grow with the pixels, and a phone photo would otherwise cost seconds and gigabytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Optional

import cv2
import numpy as np
import torch

from facetorch.recognition.detectors import FaceDetector
from facetorch.recognition.enrollment import Subject, subject_faces
from facetorch.recognition.pipeline import Face, Recognizer
from facetorch.serve.batching import BatchQueue
from facetorch.serve.people import People

__all__ = ["Engine", "Job", "ScaledDetector"]


@dataclass(frozen=True, eq=False)
class Job:
    """One image of a request: ``faces`` (every face, named) or ``subject`` (the person's face, embedded).

    Subject photos of one ``group`` (the photos of one enrolment) are one person's: a crowded photo's
    face is chosen by matching the group's clear photos. Photos of other groups, from other
    requests batched alongside, are never taken for that person's.
    """

    kind: Literal["faces", "subject"]
    image: np.ndarray
    group: object = None  # None: a group of its own


class ScaledDetector:
    """A detector as the service runs it: pictures over ``max_side`` scaled down first (boxes in the picture's pixels).

    ``batch=False`` runs the detector picture by picture: on a CPU, dlib's CNN over a batch of
    four 540 x 960 pictures took 25% longer than over the four one at a time (the feature maps of
    a batch outgrow the caches); on a GPU a batch pays.
    """

    def __init__(self, detector: FaceDetector, max_side: Optional[int] = None, batch: bool = False) -> None:
        if max_side is not None and max_side < 1:
            raise ValueError(f"--max_side must be 1 or more, got {max_side}")
        self.detector = detector
        self.max_side = max_side
        self.batch = batch
        self.name = detector.name  # the same detector to the gallery

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        scales = [min(1.0, self.max_side / max(image.shape[:2])) if self.max_side else 1.0 for image in images]
        small = [image if scale == 1.0 else cv2.resize(image, (max(1, round(image.shape[1] * scale)),
                                                               max(1, round(image.shape[0] * scale))),
                                                       interpolation=cv2.INTER_AREA)
                 for image, scale in zip(images, scales)]  # fmt: skip
        if self.batch:
            found = self.detector.detect_batch(small)
        else:
            found = [self.detector.detect_batch([image])[0] for image in small]
        out = []
        for image, scale, (boxes, scores) in zip(images, scales, found):
            if scale != 1.0 and len(boxes):
                height, width = image.shape[:2]
                boxes = np.clip(np.asarray(boxes, dtype=np.float64) / scale, 0, [width, height, width, height])
            out.append((boxes, scores))
        return out


class Engine:
    """Detector, embedder and people of one worker, behind a batching queue.

    Args:
        embedder: The embedding model (an :class:`~facetorch.inference.embedder.Embedder`, or any
            with ``embed_faces``, ``fingerprint``, ``threshold``, ``channels``).
        detector: The face detector.
        people: The gallery (:class:`~facetorch.serve.people.People`).
        window_s: The batching window.
        max_batch: The most images in one batch.
        max_side: Pictures with a longer side over this are scaled down for the detector (None: never).
        pair_threshold: Cosine similarity at which ``verify`` says "same" (default: the model's).
        batch_detector: Run the detector over a batch's pictures at once (on a GPU), else one by one.
        threads: torch's intra-op threads on the queue's thread (default: the process's setting). A
            new thread does not inherit the main thread's OpenMP setting; without this, the model
            would run on one core there, whatever the machine has.
    """

    def __init__(self, embedder: Any, detector: FaceDetector, people: People, window_s: float = 0.005, max_batch: int = 8,
                 max_side: Optional[int] = 1920, pair_threshold: Optional[float] = None,
                 threads: Optional[int] = None, batch_detector: bool = False) -> None:  # fmt: skip
        self.embedder = embedder
        self.detector = ScaledDetector(detector, max_side, batch_detector)
        self.people = people
        self.pair_threshold = pair_threshold
        self.recognizer = Recognizer(embedder, self.detector, people)  # type: ignore[arg-type]
        self.threads = threads if threads is not None else torch.get_num_threads()
        self.queue: BatchQueue[Job, Any] = BatchQueue(self._run, window_s, max_batch,
                                                      on_start=lambda: torch.set_num_threads(self.threads))  # fmt: skip

    def _run(self, jobs: list[Job]) -> list[Any]:
        """The queue's work: all recognitions of the batch in one pass, then the subject faces of each group."""
        results: list[Any] = [None] * len(jobs)
        recognitions = [i for i, job in enumerate(jobs) if job.kind == "faces"]
        if recognitions:
            for i, faces in zip(recognitions, self.recognizer([jobs[i].image for i in recognitions])):
                results[i] = faces
        groups: dict[int, list[int]] = {}
        for i, job in enumerate(jobs):
            if job.kind == "subject":
                groups.setdefault(id(job) if job.group is None else id(job.group), []).append(i)
        for members in groups.values():
            for i, subject in zip(members, subject_faces(self.embedder, self.detector, [jobs[i].image for i in members])):
                results[i] = subject
        return results

    async def recognize(self, image: np.ndarray) -> list[Face]:
        """Every face of an RGB picture: box, detector score, name (or ``unknown``) and score."""
        return await self.queue.submit(Job("faces", image))

    async def subject(self, image: np.ndarray, group: object = None) -> Subject:
        """The person's face of a photo, embedded, or why there is none.

        The only face, or one clearly the largest; in a crowded photo, the face that matches the
        clear photos of the same ``group`` (one enrolment's photos), else the central one.
        """
        return await self.queue.submit(Job("subject", image, group))

    def verify_threshold(self) -> tuple[Optional[float], str]:
        """The similarity at which two faces are one person, and what it is.

        ``pair_threshold`` (``given``), else the model's pair threshold calibrated at validation
        (``pair``), else the gallery's open-set threshold (``open_set``: stricter, since it is set
        so that a stranger's best match over everyone rarely passes), else ``(None, "none")``.
        """
        if self.pair_threshold is not None:
            return self.pair_threshold, "given"
        value = float(getattr(self.embedder, "threshold", float("nan")))
        if np.isfinite(value):
            return value, "pair"
        open_set = self.people.threshold
        return (open_set, "open_set") if open_set is not None else (None, "none")

    def close(self) -> None:
        """Finish the queued work and stop the queue's thread; release the gallery."""
        self.queue.close()
        self.people.close()
