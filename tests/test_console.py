"""What the tools print: stderr holds facetorch's own lines (and a short, named list of Lightning's), stdout no bars.

The main job, evaluate, export, explain and gallery recognize run as real processes, as a user runs
them, on generated data. Also: progress bars go to stderr and only to a terminal, ``--help`` has no
reStructuredText markup, flags are never taken by prefix, an old flag spelling names the new one,
evaluation with ``--output`` leaves no run folder, and the repository ignores what the documented
commands write.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from facetorch.cli.commands import COMMANDS
from tests.conftest import REPO, write_face_crops

ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
# Lines of Lightning's that a run prints on purpose (its set-up and what it restores), and its model
# summary table: the only lines on a tool's stderr that are not facetorch's own.
LIGHTNING_LINES = (
    "Seed set to ", "GPU available: ", "TPU available: ", "HPU available: ", "Using bfloat16 Automatic Mixed Precision",
    "`Trainer.fit` stopped: ", "Restoring states from the checkpoint path at ", "Loaded model weights from the checkpoint at ",
)  # fmt: skip
SUMMARY_TABLE = re.compile(r"^(\s*\|\s*Name\s*\||\d+\s*\||-{10,}$|[\d.]+\s*[KMG]?\s+(Trainable|Non-trainable|Total|Modules))")
FACETORCH_LINES = ("FaceDataModule: ", "Run folder: ", "Wrote ")


def foreign_lines(stderr: str, tool: str) -> list[str]:
    """Lines of stderr that are neither facetorch's own (``<tool>: ...``, the data and run-folder lines) nor allowed."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    allowed = (f"{tool}: ", *FACETORCH_LINES, *LIGHTNING_LINES)
    return [line for line in lines if not line.startswith(allowed) and not SUMMARY_TABLE.match(line)]


def run_tool(tool: str, *args: object, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(REPO / "tools" / tool), *map(str, args)], cwd=cwd, env=ENV,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "\r" not in result.stdout and "\r" not in result.stderr  # no progress bar into a pipe
    return result


@pytest.fixture(scope="module")
def main_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """The README's main job on generated crops: configs/face_vgg.yaml with CPU-test sizes, one epoch."""
    work = tmp_path_factory.mktemp("console")
    crops = write_face_crops(work / "crops")
    result = run_tool("train.py", "--config", REPO / "configs" / "face_vgg.yaml", "--data.root", crops,
                      "--data.image_size=[32,24]", "--data.batch_size=4", "--trainer.max_epochs=1", cwd=work)  # fmt: skip
    return work, result


def test_the_main_job_prints_only_facetorchs_lines(main_job: tuple[Path, subprocess.CompletedProcess]) -> None:
    work, result = main_job
    assert foreign_lines(result.stderr, "train.py") == []
    assert result.stderr.strip().splitlines()[-1].startswith("Run folder: runs/face_vgg/version_0 (")


def test_evaluate_output_writes_there_and_leaves_no_run_folder(main_job: tuple[Path, subprocess.CompletedProcess]) -> None:
    work, _ = main_job
    run = work / "runs" / "face_vgg" / "version_0"
    result = run_tool("evaluate.py", "--config", run / "config.yaml", "--ckpt_path", run / "checkpoints" / "best.ckpt",
                      "--data.root", work / "crops", "--output", work / "eval" / "m.json", cwd=work)  # fmt: skip
    assert sorted(p.name for p in (work / "runs" / "face_vgg").iterdir()) == ["version_0"]  # no version_1
    assert sorted(p.name for p in (work / "eval").iterdir()) == ["m.json", "m_confusion_matrix.png", "m_roc.png"]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == json.loads((work / "eval" / "m.json").read_text())
    assert foreign_lines(result.stderr, "evaluate.py") == [] and "dirpath" not in result.stderr


def test_explain_prints_only_facetorchs_lines_and_reads_no_data(main_job: tuple[Path, subprocess.CompletedProcess]) -> None:
    work, _ = main_job
    run = work / "runs" / "face_vgg" / "version_0"
    result = run_tool("explain.py", "--config", REPO / "configs" / "face_vgg.yaml", "--ckpt_path",
                      run / "checkpoints" / "best.ckpt", "--images", work / "crops" / "face" / "f000.png", "--output",
                      work / "explained", "--method", "gradcam", cwd=work)  # fmt: skip
    assert foreign_lines(result.stderr, "explain.py") == [] and "FaceDataModule" not in result.stderr


def test_export_of_a_config_needs_no_data_set_and_takes_any_batch(tmp_path: Path) -> None:
    import numpy as np
    import onnxruntime as ort

    # An identity_folders config without data.root: export builds the network, not the data set.
    result = run_tool("export.py", "--config", REPO / "tests" / "configs" / "embedding_tiny.yaml", "--format", "onnx",
                      "--output", tmp_path / "e.onnx", cwd=tmp_path)  # fmt: skip
    assert foreign_lines(result.stderr, "export.py") == [] and json.loads(result.stdout)["dynamic_batch"] is True
    session = ort.InferenceSession(str(tmp_path / "e.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 5):
        (out,) = session.run(None, {"images": np.zeros((batch, 3, 32, 32), np.float32)})
        assert out.shape == (batch, 16)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_the_readmes_export_of_the_pretrained_dlib_network_runs_without_data(tmp_path: Path) -> None:
    from facetorch.models import dlib_files

    models = dlib_files.installed_models_dir()
    if models is None or not (models / dlib_files.RESNET_FILE).is_file():
        pytest.skip("face_recognition_models (dlib's .dat files) is not installed")
    result = run_tool("export.py", "--config", REPO / "configs" / "embedding_dlib.yaml", "--format", "onnx", "--output",
                      tmp_path / "x.onnx", cwd=tmp_path)  # fmt: skip
    summary = json.loads(result.stdout)
    assert summary["input_size"] == [150, 150] and summary["dynamic_batch"] and summary["check_max_abs_diff"] < 1e-4


def test_gallery_recognize_prints_only_facetorchs_lines(tiny_checkpoints: dict, tmp_path: Path) -> None:
    from facetorch.inference.embedder import Embedder
    from facetorch.recognition.enrollment import enroll

    embedding, people = tiny_checkpoints["embedding_tiny.yaml"]
    enroll(Embedder(embedding, faces="whole", progress=False), tmp_path / "g.db", people)
    photo = cv2.imread(str(next(people.rglob("*.png"))))
    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (photo.shape[1], photo.shape[0]))
    for _ in range(3):
        writer.write(photo)
    writer.release()
    result = run_tool("gallery.py", "recognize", "--gallery", tmp_path / "g.db", "--ckpt_path", embedding, "--detector",
                      "haar", "--source", tmp_path / "clip.avi", "--output", tmp_path / "out", cwd=tmp_path)  # fmt: skip
    assert json.loads(result.stdout.strip().splitlines()[-1])["frames"] == 3
    assert foreign_lines(result.stderr, "gallery.py") == []


def test_progress_bars_go_to_a_terminal_on_stderr_never_to_stdout(tmp_path: Path) -> None:
    import fcntl
    import pty
    import struct
    import termios

    crops = write_face_crops(tmp_path / "crops")
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal 120 columns wide
    process = subprocess.Popen([sys.executable, str(REPO / "tools" / "train.py"), "--config", str(REPO / "tests" / "configs" /
                                "face_vgg.yaml"), "--data.root", str(crops), "--trainer.max_epochs=1",
                                "--trainer.enable_progress_bar=true"],
                               cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=follower, text=True)  # fmt: skip
    os.close(follower)
    terminal = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the process closed its end
            break
        if not chunk:
            break
        terminal += chunk
    stdout, _ = process.communicate(timeout=600)
    os.close(leader)
    assert process.returncode == 0
    assert b"Epoch 0" in terminal and b"\r" in terminal  # the bars, on the terminal that stderr is
    assert "Epoch" not in stdout and "\r" not in stdout


# --------------------------------------------------------------------------------------------
# Help and flags
# --------------------------------------------------------------------------------------------

MARKUP = re.compile(r"``|:(func|mod|class|meth|data|attr):|`[^`\s][^`]*`")


def _main_of(name: str):
    module, function = COMMANDS[name].target.split(":")
    return getattr(importlib.import_module(module), function), list(COMMANDS[name].prefix)


@pytest.mark.parametrize("name", [n for n in COMMANDS if n not in ("validate", "test", "predict", "recognize")])
def test_help_shows_no_restructuredtext_markup(name: str, capsys: pytest.CaptureFixture) -> None:
    main, prefix = _main_of(name)
    with pytest.raises(SystemExit) as exit_info:
        main([*prefix, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text and not MARKUP.search(text), MARKUP.search(text)


def test_a_facetorch_command_calls_itself_by_that_name(capsys: pytest.CaptureFixture) -> None:
    from facetorch.cli.commands import main

    with pytest.raises(SystemExit):
        main(["recognize", "--help"])
    assert capsys.readouterr().out.startswith("usage: facetorch gallery recognize")
    with pytest.raises(SystemExit) as exit_info:
        main(["gallery", "list", "--gallery", "no_such_gallery.db"])
    assert exit_info.value.code == 2 and capsys.readouterr().err.startswith("facetorch gallery: error: --gallery")
    with pytest.raises(SystemExit):
        _main_of("gallery")[0](["--help"])  # the tool itself (tools/gallery.py) keeps its script's name
    assert capsys.readouterr().out.startswith("usage: gallery.py")


OLD_SPELLINGS = [  # (command, arguments with an old or abbreviated flag, the flag meant)
    ("explain", ["--config", "c.yaml", "--ckpt", "m.ckpt", "--images", "i", "--output", "o"], "--ckpt_path"),
    ("evaluate", ["--config", "c.yaml", "--ckpt_pat", "m.ckpt"], "--ckpt_path"),
    ("export", ["--config", "c.yaml", "--ckpt", "m.ckpt", "--format", "onnx", "--output", "o.onnx"], "--ckpt_path"),
    ("detect", ["--ckpt", "m.ckpt", "--source", "s"], "--ckpt_path"),
    ("detect", ["--ckpt_path", "m.ckpt", "--source", "s", "--max-frames", "3"], "--max_frames"),
    ("gallery", ["enroll", "--images", "i", "--gallery", "g.npz", "--open-set-fpir", "0.1"], "--open_set_fpir"),
    ("gallery", ["split", "--images", "i", "--people", "2", "--per-person", "1", "--output", "o"], "--per_person"),
    ("prepare-crops", ["--haar", "h", "--output", "o", "--identity-layout"], "--identity_layout"),
    ("benchmark", ["--task", "scan", "--data-root", "d"], "--data_root"),
    ("baselines", ["--config", "c.yaml", "--test-root", "t"], "--test_root"),
]


@pytest.mark.parametrize("name, args, meant", OLD_SPELLINGS, ids=[f"{n}:{a[-2]}" for n, a, _ in OLD_SPELLINGS])
def test_an_old_or_shortened_flag_is_an_error_that_names_the_flag_meant(name: str, args: list[str], meant: str,
                                                                        tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "tests" / "configs" / "face_vgg.yaml", tmp_path / "c.yaml")
    main, prefix = _main_of(name)
    with pytest.raises(SystemExit) as exit_info:
        main([*prefix, *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"did you mean {meant}?" in err, err


def test_the_repository_ignores_what_the_documented_commands_write(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    written = ["crops/face/a.png", "x.onnx", "model.pt", "people.npz", "people.db", "people.db-wal", "site/index.html",
               "detections/detections.csv", "explained/grid.png", "metrics.json", "runs/a/version_0/config.yaml"]
    result = subprocess.run(["git", "check-ignore", "--no-index", *written], cwd=REPO, capture_output=True, text=True)
    assert sorted(result.stdout.split()) == sorted(written)
