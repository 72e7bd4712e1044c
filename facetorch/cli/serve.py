"""``python tools/serve.py --gallery G --config CFG | --ckpt_path CKPT``: recognition as an HTTP service, with a web page.

Examples::

    python tools/serve.py --gallery people.db --config configs/embedding_dlib.yaml
    python tools/serve.py --gallery people.db --ckpt_path CKPT --detector haar --port 8080
    python tools/serve.py --gallery people.db --config CFG --host 0.0.0.0 --api_keys keys.txt --workers 2

Then open http://127.0.0.1:8000/ (the page) or http://127.0.0.1:8000/docs (the API). Routes:
``GET /health``; ``POST /v1/recognize`` (multipart ``image``); ``POST /v1/verify`` (``image1``,
``image2``); ``POST /v1/enroll`` (``name``, ``images``; admin); ``GET /v1/people``; ``DELETE
/v1/people/{name}`` (admin); ``GET /metrics`` (Prometheus). With ``--api_keys FILE`` (lines ``read
KEY`` / ``admin KEY``) requests send ``Authorization: Bearer KEY``; without it, the service only
binds a loopback address. Each of ``--workers`` loads the model once; they share the gallery.
"""

from __future__ import annotations

import inspect
import os
import shutil
import sys
import tempfile
from dataclasses import fields
from typing import Any, Optional

from facetorch.cli.common import (
    add_ckpt_path,
    cosine,
    nonnegative_float,
    port,
    positive_float,
    positive_int,
    run_tool,
    tool_parser,
    upsample,
)

PROG = "serve.py"
APP = "facetorch.serve.settings:app_from_env"
WORKER_START_S = 120  # seconds a worker may take to load the model before uvicorn gives up on it


def _parser() -> Any:
    parser = tool_parser(PROG, __doc__)
    parser.add_argument("--gallery", required=True,
                        help="the gallery: people.db or sqlite:///PATH (SQLite, created when missing), "
                             "postgresql://... (shared), or a read-only .npz of 0.1")
    parser.add_argument("--config", default=None, metavar="CFG", help="an EmbeddingTask config, e.g. configs/embedding_dlib.yaml")
    add_ckpt_path(parser, "an EmbeddingTask checkpoint, instead of --config", required=False)
    parser.add_argument("--detector", default=None, metavar="haar|dlib_cnn|CKPT",
                        help="face detector (default: the gallery's, else dlib_cnn)")  # fmt: skip
    parser.add_argument("--upsample", type=upsample, default=0, help="dlib_cnn: double each picture this many times first")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (anything but loopback needs --api_keys)")
    parser.add_argument("--port", type=port, default=8000)
    parser.add_argument("--workers", type=positive_int, default=1, help="processes, each with its own model")
    parser.add_argument("--api_keys", default=None, metavar="FILE", help="key file: lines 'read KEY' or 'admin KEY'")
    parser.add_argument("--max_upload_mb", type=positive_float, default=10.0, help="largest request body (413 above it)")
    parser.add_argument("--max_pixels", type=positive_int, default=40_000_000, help="most pixels an upload may decode to")
    parser.add_argument("--max_side", type=positive_int, default=1920,
                        help="pictures with a longer side over this are scaled down for the detector")
    parser.add_argument("--max_images", type=positive_int, default=20, help="most photos of one enrolment")
    parser.add_argument("--threshold", type=cosine, default=None,
                        help="similarity that names a face (default: the gallery's open-set threshold)")
    parser.add_argument("--pair_threshold", type=cosine, default=None,
                        help="similarity at which /v1/verify says 'same' (default: the model's)")
    parser.add_argument("--batch_window_ms", type=nonnegative_float, default=5.0, help="how long a batch waits for more pictures")
    parser.add_argument("--max_batch", type=positive_int, default=8, help="most pictures in one model batch")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch threads of each worker's model (default: torch's, one per core; use 1 per worker on a "
                             "busy or shared machine)")  # fmt: skip
    parser.add_argument("--max_concurrency", type=positive_int, default=64, help="requests at once per worker (503 beyond)")
    parser.add_argument("--log_level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return parser


def serve(argv: Optional[list[str]] = None) -> None:
    """Parse ``argv``, check everything, load the model (once per worker) and serve until Ctrl-C / SIGTERM."""
    import uvicorn

    from facetorch.serve.auth import check_bind, load_keys
    from facetorch.serve.settings import ENV, Settings, build_app

    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    settings = Settings(**{f.name: getattr(args, f.name) for f in fields(Settings)})
    check_bind(args.host, load_keys(args.api_keys))
    for flag, value, low, high in (("--port", args.port, 0, 65535), ("--workers", args.workers, 1, 64),
                                   ("--max_concurrency", args.max_concurrency, 1, 100_000)):  # fmt: skip
        if not low <= value <= high:
            raise ValueError(f"{flag} must be between {low} and {high}, got {value}")
    app = build_app(settings)  # loads the model: bad input fails here, as one line, before anything binds
    options: dict[str, Any] = dict(host=args.host, port=args.port, log_level=args.log_level,
                                   limit_concurrency=args.max_concurrency)  # fmt: skip
    if args.workers == 1:
        uvicorn.run(app, **options)  # type: ignore[arg-type]
        return
    del app  # each worker loads its own
    if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
        # uvicorn kills a worker that does not answer its ping within 5 s; one that is importing torch and
        # loading a model on a busy machine can take longer, and would be killed and restarted for ever
        options["timeout_worker_healthcheck"] = WORKER_START_S
    os.environ[ENV] = settings.to_env()
    metrics_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # /metrics adds up every worker's numbers
        metrics_dir = tempfile.mkdtemp(prefix="facetorch-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run(APP, factory=True, workers=args.workers, **options)  # type: ignore[arg-type]
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def main(argv: Optional[list[str]] = None) -> None:
    """``tools/serve.py``: :func:`serve`, with input errors as one line and exit code 2."""
    sys.exit(run_tool(PROG, serve, argv))
