"""Shared fixtures: tiny generated image folders in tmp dirs (no real data, nothing downloads)."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np  # noqa: F401 (test modules import it from here)
import pytest
from PIL import Image

from facetorch.data.synthetic import (  # noqa: F401 (the tests' generated data, shared with benchmarks)
    face_like,
    non_face,
    square_face_photo,
    write_face_crops,
    write_identity_folders,
    write_labelme_folder,
)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
# Overrides that shrink each real config to a CPU-test size and point it at generated data.
SHRINK = {
    "face_vgg.yaml": ["--data.image_size=[32,24]", "--data.batch_size=4"],
    "face_vgg_original.yaml": ["--data.image_size=[32,24]", "--data.batch_size=4"],
    # Generated identities have 5 images each: 1 val + 1 test image per person needs fractions of 0.2.
    "identity_resnet50.yaml": ["--data.image_size=[32,32]", "--data.batch_size=4",
                               "--data.val_fraction=0.2", "--data.test_fraction=0.2"],
    "identity_resnet50_original.yaml": ["--data.image_size=[32,32]", "--data.batch_size=4",
                                        "--data.val_fraction=0.2", "--data.test_fraction=0.2",
                                        "--model.init_args.pretrained=false"],  # tests never read ImageNet weights
    # Generated labelme photos are 64x48: a 32x32 input still passes VGG16's five pools (1x1 at the end).
    "detector_vgg16.yaml": ["--data.image_size=[32,32]", "--data.batch_size=4",
                            "--data.val_fraction=0.2", "--data.test_fraction=0.2"],
    # 6 generated people: 2 validate (verification needs two), 4 train in P x K = 2 x 2 batches.
    "embedding_triplet.yaml": ["--data.image_size=[32,32]", "--data.val_fraction=0.34",
                               "--data.identities_per_batch=2", "--data.images_per_identity=2"],
    "embedding_contrastive.yaml": ["--data.image_size=[32,32]", "--data.val_fraction=0.34", "--data.batch_size=4"],
    "embedding_arcface.yaml": ["--data.image_size=[32,32]", "--data.val_fraction=0.34", "--data.batch_size=4",
                               "--data.num_workers=0", "--model.init_args.embedding_dim=16"],
    # nn4.small2 needs at least 65x65; tests never have the Keras-OpenFace weight folder.
    "embedding_openface.yaml": ["--data.image_size=[72,72]", "--data.val_fraction=0.34", "--data.identities_per_batch=2",
                                "--data.images_per_identity=2", "--model.init_args.weights_path=null"],
    # dlib's network needs about 103 pixels; without its .dat files (tests/test_dlib.py runs them aligned and pretrained).
    "embedding_dlib.yaml": ["--data.image_size=[112,112]", "--data.val_fraction=0.34", "--data.identities_per_batch=2",
                            "--data.images_per_identity=2", "--model.init_args.pretrained=false", "--data.align=null"],
    "identity_dlib.yaml": ["--data.image_size=[112,112]", "--data.batch_size=4", "--data.val_fraction=0.2",
                           "--data.test_fraction=0.2", "--model.init_args.pretrained=false", "--data.align=null"],
}
# The generated-data fixture for each layout a config can name.
FIXTURE_FOR_LAYOUT = {"face_crops": "face_crops_dir", "identity_folders": "identity_dir", "labelme": "labelme_dir"}


# Keep CPU tests predictable on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")


RANKS_REGISTERED = "All distributed processes registered"  # Lightning's line once every rank joined the group
# Runs that hung once and were started again: listed, with their stacks, at the end of the test session.
HUNG_ONCE: list[str] = []


def _run_with_stacks(args: list[str], cwd: Path, env: dict[str, str],
                     timeout: float) -> tuple[subprocess.CompletedProcess[str], bool]:
    """``python ARGS`` in its own process group; past ``timeout``, every process prints its stacks and is killed.

    Returns:
        The finished process, and whether it was stopped for running past ``timeout``.
    """
    process = subprocess.Popen([sys.executable, *args], cwd=cwd, env={**env, "PYTHONFAULTHANDLER": "1"}, text=True,
                               start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    hung = False
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        hung = True
        with contextlib.suppress(ProcessLookupError):  # the fault handler prints every thread's stack on SIGABRT
            os.killpg(process.pid, signal.SIGABRT)
        try:
            stdout, stderr = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # a rank or loader worker left behind would hold a core
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), hung


def run_training_processes(args: list[str], *, cwd: Path, timeout: float = 100,
                           env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS``, a training run of several processes (DDP); if it hangs, show where every process waits.

    pytest's own time limit would print the waiting test's stack only. Here, past ``timeout``,
    every process of the run (ranks and loader workers) prints where each of its threads waits.
    A run that hangs is started once more from the same folder: a hang that comes back fails the
    test with those stacks; one that does not is listed, stacks and all, at the end of the session
    (a rare hang is worth reading, not a reason to fail every change). Two tries and their stack
    dumps stay under pytest's 300 s.
    """
    env = dict(env if env is not None else os.environ)
    before = set(cwd.iterdir())
    result, hung = _run_with_stacks(args, cwd, env, timeout)
    if hung:
        met = "after" if RANKS_REGISTERED in result.stderr else "before"
        first = f"{' '.join(args[:2])} (in {cwd}) hung {met} its ranks met:\n{result.stderr[-12000:]}"
        for path in set(cwd.iterdir()) - before:  # the second try starts from the same folder (its run is version_0)
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        result, hung = _run_with_stacks(args, cwd, env, timeout)
        if not hung:
            HUNG_ONCE.append(first)
    if hung:
        pytest.fail(f"{' '.join(args[:2])} hung twice (past {timeout:.0f} s); every process's stacks:\n{result.stderr[-20000:]}")
    return result


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """List the training runs that hung once and passed when started again (with their stacks)."""
    # Test modules import this file as tests.conftest, pytest as its own plugin: read the list they filled.
    hung = importlib.import_module("tests.conftest").HUNG_ONCE
    if hung:
        terminalreporter.section("training runs that hung once and passed when started again")
        for report in hung:
            terminalreporter.write_line(report)


class DownloadAttempted(AssertionError):
    """A test tried to reach the network: tests never download."""


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that opens a connection beyond this machine or calls a download helper."""
    import socket
    import urllib.request

    import torch.hub

    real_connect = socket.socket.connect

    def local_only(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and host not in ("127.0.0.1", "::1", "localhost", "0.0.0.0"):
            raise DownloadAttempted(f"a test tried to connect to {address!r}; tests never download")
        return real_connect(self, address)

    def refuse(*args: object, **kwargs: object) -> None:
        raise DownloadAttempted(f"a test tried to download {args[:1]!r}; tests never download")

    monkeypatch.setattr(socket.socket, "connect", local_only)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


@contextlib.contextmanager
def notices() -> Iterator[SimpleNamespace]:
    """The lines :func:`facetorch.io.notice` said in the block: ``said.lines`` and ``said.text``, filled at its end."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("facetorch")
    logger.addHandler(handler)
    said = SimpleNamespace(lines=[], text="")
    try:
        yield said
    finally:
        logger.removeHandler(handler)
        said.lines = [record.getMessage() for record in records]
        said.text = "\n".join(said.lines)


@contextlib.contextmanager
def expect_warning(category: type[Warning], match: str) -> Iterator[list[warnings.WarningMessage]]:
    """Record warnings in the block and check that one of ``category`` matches ``match``.

    Unlike ``pytest.warns`` it does not re-raise the other (third-party) warnings of the block
    after it, which setup.cfg's error filter would then turn into failures.
    """
    import re

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", category)
        yield caught
    messages = [str(w.message) for w in caught if issubclass(w.category, category)]
    assert any(re.search(match, m) for m in messages), f"no {category.__name__} matching {match!r} in {messages}"


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file, as dicts (the file is closed again)."""
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def image_size_and_mode(path: Path) -> tuple[tuple[int, int], str]:
    """(width, height) and PIL mode of an image file (the file is closed again)."""
    with Image.open(path) as image:
        return image.size, image.mode


TINY_TASKS = {  # tests/configs/<config> -> (data writer, run name)
    "face_vgg.yaml": (write_face_crops, "face_vgg_tiny"),
    "identity_tiny.yaml": (write_identity_folders, "identity_tiny"),
    "embedding_tiny.yaml": (lambda root: write_identity_folders(root, identities=8), "embedding_tiny"),
    "detector_tiny.yaml": (write_labelme_folder, "detector_tiny"),
}


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """One trained checkpoint per task, made once per session (one epoch of each tiny config on
    generated data): config name -> (best.ckpt, data root). Tests only read these files."""
    from facetorch import cli

    work = tmp_path_factory.mktemp("tiny_checkpoints")
    out = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        for config, (write, name) in TINY_TASKS.items():
            data = write(work / f"data_{name}")
            cli.train(["--config", str(REPO / "tests" / "configs" / config), "--data.root", str(data),
                       "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"])  # fmt: skip
            out[config] = (work / "runs" / name / "version_0" / "checkpoints" / "best.ckpt", data)
    return out


@pytest.fixture
def labelme_dir(tmp_path: Path) -> Path:
    return write_labelme_folder(tmp_path / "boxes")


@pytest.fixture
def face_crops_dir(tmp_path: Path) -> Path:
    return write_face_crops(tmp_path / "crops")


@pytest.fixture
def identity_dir(tmp_path: Path) -> Path:
    return write_identity_folders(tmp_path / "ids")


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a fresh folder, so ``runs/`` lands in the tmp dir."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work
