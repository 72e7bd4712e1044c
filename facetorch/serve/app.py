"""The FastAPI application: the routes of the contract over one :class:`~facetorch.serve.engine.Engine`.

``GET /health`` (no key), ``POST /v1/recognize``, ``POST /v1/verify``, ``GET /v1/people`` (read key),
``POST /v1/enroll``, ``DELETE /v1/people/{name}`` (admin key), ``GET /metrics`` (read key), ``GET /``
the web page and ``/docs`` the OpenAPI page. Every route is ``async``: uploads are decoded in the
thread pool and the models run on the engine's queue thread, so the event loop only moves bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, File, Form, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

import facetorch
from facetorch.recognition.gallery import UNKNOWN, GalleryError
from facetorch.serve.auth import Keys
from facetorch.serve.engine import Engine
from facetorch.serve.errors import install_error_handlers
from facetorch.serve.inputs import ApiError, check_name, decode_upload
from facetorch.serve.limits import BodyLimit
from facetorch.serve.metrics import Metrics, MetricsMiddleware
from facetorch.serve.schemas import EnrollOut, ErrorOut, HealthOut, PeopleOut, RecognizeOut, RemoveOut, VerifyOut

__all__ = ["STATIC", "create_app"]

STATIC = Path(__file__).resolve().parent / "static"
ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorOut} for status in (400, 401, 403, 413, 415, 422)}


def create_app(engine: Engine, keys: Keys, max_upload_mb: float = 10.0, max_pixels: int = 40_000_000,
               max_images: int = 20) -> FastAPI:  # fmt: skip
    """The service over ``engine``.

    Args:
        engine: The models and the gallery (closed when the app shuts down).
        keys: The API keys (:func:`~facetorch.serve.auth.load_keys`); without any, every route is open.
        max_upload_mb: The largest request body, in MB (413 above it, before it is read whole).
        max_pixels: The most pixels an uploaded image may decode to (413 above it).
        max_images: The most photos of one enrolment.
    """
    metrics = Metrics()
    engine.queue.on_batch = metrics.batch.observe
    people = engine.people

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(engine.close)

    app = FastAPI(title="facetorch", version=facetorch.__version__, lifespan=lifespan,
                  description="Face recognition over HTTP: find every face of a picture and name it from the gallery; "
                              "verify two photos; enrol and remove people. Send 'Authorization: Bearer KEY'.")  # fmt: skip
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=int(max_upload_mb * 2**20))
    read = [Depends(keys.require("read"))]
    admin = [Depends(keys.require("admin"))]

    async def decoded(upload: UploadFile, field: str) -> tuple[np.ndarray, bytes]:
        data = await upload.read()
        return await run_in_threadpool(decode_upload, data, field, upload.filename or "", max_pixels), data

    @app.get("/health", response_model=HealthOut, tags=["service"])
    async def health() -> dict[str, Any]:
        """The service is up: what it serves (no key needed)."""
        names = await run_in_threadpool(lambda: people.people)
        return {"status": "ok", "version": facetorch.__version__, "people": len(names), "images": len(people),
                "threshold": people.threshold, "detector": engine.detector.name, "model": engine.embedder.fingerprint,
                "auth": keys.enabled, "notes": people.notes}  # fmt: skip

    @app.post("/v1/recognize", response_model=RecognizeOut, dependencies=read, responses=ERRORS, tags=["recognition"])
    async def recognize(image: Annotated[UploadFile, File(description="the picture (JPEG, PNG, ...)")]) -> dict[str, Any]:
        """Every face of the picture: its box, the enrolled person's name (or ``unknown``) and the score."""
        picture, _ = await decoded(image, "image")
        faces = await engine.recognize(picture)
        metrics.count_faces((face.name for face in faces), UNKNOWN)
        return {"faces": [{"box": [round(v, 1) for v in face.box], "name": face.name, "score": round(face.score, 4)}
                          for face in faces],
                "width": int(picture.shape[1]), "height": int(picture.shape[0]), "threshold": people.threshold}  # fmt: skip

    @app.post("/v1/verify", response_model=VerifyOut, dependencies=read, responses=ERRORS | {503: {"model": ErrorOut}},
              tags=["recognition"])  # fmt: skip
    async def verify(image1: Annotated[UploadFile, File()], image2: Annotated[UploadFile, File()]) -> dict[str, Any]:
        """Whether two photos show the same person: each photo's face chosen on its own (the only one, or the central one)."""
        threshold, kind = engine.verify_threshold()
        if threshold is None:
            raise ApiError(503, "no verification threshold: the model was never validated and the gallery has none yet; "
                                "the server's operator can start it with --pair_threshold T")  # fmt: skip
        pictures = await asyncio.gather(decoded(image1, "image1"), decoded(image2, "image2"))
        subjects = await asyncio.gather(*(engine.subject(picture) for picture, _ in pictures))
        for field, subject in zip(("image1", "image2"), subjects):
            if subject.embedding is None:
                raise ApiError(422, f"{field}: {subject.reason}; send a photo of one person's face")
        score = float(np.dot(subjects[0].embedding, subjects[1].embedding))  # type: ignore[arg-type]
        return {"same": score >= threshold, "score": round(score, 4), "threshold": threshold, "threshold_kind": kind,
                "boxes": [[round(float(v), 1) for v in s.box] for s in subjects]}  # type: ignore[union-attr]  # fmt: skip

    @app.post("/v1/enroll", response_model=EnrollOut, dependencies=admin, responses=ERRORS, tags=["people"])
    async def enroll(images: Annotated[list[UploadFile], File(description="one or more photos of the person")],
                     name: Annotated[str, Form(description="the person's name")] = "") -> dict[str, Any]:  # fmt: skip
        """Enrol a person from photos: the person's face in each (the only one, or one clearly the largest)."""
        name = check_name(name)
        if len(images) > max_images:
            raise ApiError(422, f"images: {len(images)} photos in one enrolment; send at most {max_images}")
        pictures = await asyncio.gather(*(decoded(upload, f"images[{i}]") for i, upload in enumerate(images)))
        person = object()  # the photos of this enrolment, and no other request's, are this person's
        subjects = await asyncio.gather(*(engine.subject(picture, person) for picture, _ in pictures))
        labels = [upload.filename or f"images[{i}]" for i, upload in enumerate(images)]
        rows, keys_of_rows, skipped = [], [], []
        for label, (_, data), subject in zip(labels, pictures, subjects):
            if subject.embedding is None:
                skipped.append({"image": label, "reason": subject.reason})
                continue
            rows.append(subject.embedding)
            keys_of_rows.append(f"upload:sha256:{hashlib.sha256(data).hexdigest()}")  # the same photo twice is one photo
        if not rows:
            reasons = "; ".join(f"{s['image']}: {s['reason']}" for s in skipped)
            raise ApiError(422, f"none of the {len(images)} photos shows one clear face ({reasons}); send photos of "
                                f"{name} alone, face to the camera")  # fmt: skip
        try:
            added, notes = await run_in_threadpool(people.add, name, np.stack(rows), keys_of_rows)
        except GalleryError as error:
            raise ApiError(422, str(error)) from error
        if added == 0:
            raise ApiError(422, f"every photo sent for {name!r} is enrolled already (the same picture, under this or "
                                "another name)")  # fmt: skip
        if added < len(rows):
            notes = [f"{len(rows) - added} of the photos were enrolled already and were left out", *notes]
        return {"name": name, "added": added, "skipped": skipped, "people": len(people.people),
                "threshold": people.threshold, "notes": notes}  # fmt: skip

    @app.get("/v1/people", response_model=PeopleOut, dependencies=read, responses=ERRORS, tags=["people"])
    async def list_people(limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
                          offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:  # fmt: skip
        """Enrolled names, sorted, ``limit`` from ``offset`` on."""
        names = await run_in_threadpool(lambda: people.people)
        return {"people": names[offset : offset + limit], "total": len(names), "offset": offset}

    @app.delete("/v1/people/{name}", response_model=RemoveOut, dependencies=admin, responses=ERRORS | {404: {"model": ErrorOut}},
                tags=["people"])  # fmt: skip
    async def remove(name: str) -> dict[str, Any]:
        """Forget a person: every enrolled image of them."""
        name = check_name(name)
        try:
            removed = await run_in_threadpool(people.remove, name)
        except GalleryError as error:
            raise ApiError(422, str(error)) from error
        if not removed:
            raise ApiError(404, f"{name!r} is not enrolled (GET /v1/people lists who is)")
        return {"name": name, "removed": removed, "people": len(people.people)}

    @app.get("/metrics", dependencies=read, tags=["service"], response_class=Response)
    async def prometheus() -> Response:
        """Prometheus text: requests, latency, faces, errors, batch sizes."""
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    paths = [route.path for route in app.routes if "{" not in getattr(route, "path", "{")]
    app.add_middleware(MetricsMiddleware, metrics=metrics, paths=paths)  # the outermost: it sees every refusal
    return app
