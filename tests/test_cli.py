"""The real command line on tiny generated data: train.py, evaluate.py, `facetorch` subcommands, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from facetorch import cli
from tests.conftest import CONFIGS, FIXTURE_FOR_LAYOUT, REPO, SHRINK, run_training_processes, write_face_crops

TINY_FACE_VGG = str(REPO / "tests" / "configs" / "face_vgg.yaml")


def run_dir(work: Path, name: str = "face_vgg_tiny", version: int = 0) -> Path:
    return work / "runs" / name / f"version_{version}"


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_fast_dev_run(config: Path, request: pytest.FixtureRequest, in_tmp: Path) -> None:
    layout = yaml.safe_load(config.read_text())["data"].get("layout", "face_crops")
    data_root = request.getfixturevalue(FIXTURE_FOR_LAYOUT[layout])
    report = cli.train(["--config", str(config), "--data.root", str(data_root),
                        "--trainer.fast_dev_run=1", *SHRINK.get(config.name, [])])
    assert report["num_samples"] > 0
    assert not (in_tmp / "runs").exists() or not any((in_tmp / "runs").rglob("metrics.json"))  # fast_dev_run writes nothing


def test_train_writes_the_run_folder(face_crops_dir: Path, in_tmp: Path) -> None:
    report = cli.train(["--config", TINY_FACE_VGG, "--data.root", str(face_crops_dir)])
    folder = run_dir(in_tmp)
    for name in ("config.yaml", "metrics.json", "metrics.csv", "roc.png", "confusion_matrix.png",
                 "checkpoints/best.ckpt", "checkpoints/last.ckpt"):
        assert (folder / name).is_file(), name
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics == report
    assert {"acc", "auc", "num_samples"} <= set(metrics) and metrics["num_samples"] == 6
    assert all(isinstance(v, (int, float)) for v in metrics.values())  # flat
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["data"]["root"] == str(face_crops_dir)
    # The label map travels in the checkpoint (linked from the data at instantiation).
    state = torch.load(folder / "checkpoints" / "best.ckpt", weights_only=False, map_location="cpu")
    assert state["hyper_parameters"]["class_names"] == ["non_face", "face"]


def test_a_second_run_never_overwrites_the_first(face_crops_dir: Path, in_tmp: Path) -> None:
    args = ["--config", TINY_FACE_VGG, "--data.root", str(face_crops_dir), "--trainer.max_epochs=1"]
    cli.train(args)
    first = (run_dir(in_tmp) / "metrics.json").read_bytes()
    cli.train(args)
    assert (run_dir(in_tmp) / "metrics.json").read_bytes() == first
    assert (run_dir(in_tmp, version=1) / "metrics.json").is_file()


def test_same_seed_same_run(face_crops_dir: Path, in_tmp: Path) -> None:
    args = ["--config", TINY_FACE_VGG, "--data.root", str(face_crops_dir), "--trainer.max_epochs=2"]
    assert cli.train(args) == cli.train(args)
    first, second = (run_dir(in_tmp, version=v) / "metrics.csv" for v in (0, 1))
    assert first.read_text() == second.read_text()


def test_resume_from_checkpoint_continues_training(face_crops_dir: Path, in_tmp: Path) -> None:
    cli.train(["--config", TINY_FACE_VGG, "--data.root", str(face_crops_dir), "--trainer.max_epochs=1"])
    last = run_dir(in_tmp) / "checkpoints" / "last.ckpt"
    cli.train(["--config", TINY_FACE_VGG, "--data.root", str(face_crops_dir), "--trainer.max_epochs=2",
               "--ckpt_path", str(last)])
    resumed = run_dir(in_tmp, version=1)
    state = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert state["epoch"] == 1  # resumed after epoch 0, so exactly one more epoch ran
    header, *rows = (resumed / "metrics.csv").read_text().splitlines()
    columns = header.split(",")
    epoch, train_loss = columns.index("epoch"), columns.index("train_loss")
    assert {row.split(",")[epoch] for row in rows if row.split(",")[train_loss]} == {"1"}


def test_facetorch_console_subcommands(face_crops_dir: Path, in_tmp: Path) -> None:
    base = ["--config", TINY_FACE_VGG, "--data.root", str(face_crops_dir)]
    cli.main(["fit", *base, "--trainer.max_epochs=1"])
    ckpt = run_dir(in_tmp) / "checkpoints" / "best.ckpt"
    assert ckpt.is_file()
    cli.main(["validate", *base, "--ckpt_path", str(ckpt)])
    cli.main(["test", *base, "--ckpt_path", str(ckpt)])
    assert (run_dir(in_tmp, version=2) / "metrics.json").is_file()


def test_predict_writes_a_csv_and_reports_unreadable_images(face_crops_dir: Path, in_tmp: Path, tmp_path: Path) -> None:
    cli.train(["--config", TINY_FACE_VGG, "--data.root", str(face_crops_dir), "--trainer.max_epochs=1"])
    images = tmp_path / "to_predict"
    images.mkdir()
    for path in list((face_crops_dir / "face").iterdir())[:3]:
        (images / path.name).write_bytes(path.read_bytes())
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    cli.main(["predict", "--config", TINY_FACE_VGG, "--data.root", str(face_crops_dir),
              "--data.predict_dir", str(images), "--ckpt_path", str(run_dir(in_tmp) / "checkpoints" / "best.ckpt")])
    rows = (run_dir(in_tmp, version=1) / "predictions.csv").read_text().splitlines()
    assert rows[0] == "file,prediction,probability,top5,error"
    assert len(rows) == 5
    broken = [r for r in rows if "broken.jpg" in r]
    assert broken and "Cannot read image" in broken[0]
    assert sum(r.split(",")[1] in ("face", "non_face") for r in rows[1:]) == 3


@pytest.mark.slow
def test_evaluate_prints_and_writes_flat_json(face_crops_dir: Path, in_tmp: Path, tmp_path: Path) -> None:
    cli.train(["--config", TINY_FACE_VGG, "--data.root", str(face_crops_dir), "--trainer.max_epochs=1"])
    ckpt = run_dir(in_tmp) / "checkpoints" / "best.ckpt"
    saved_config = run_dir(in_tmp) / "config.yaml"  # pins every value, eval_all: false included
    other = write_face_crops(tmp_path / "other_photos", per_class=5, seed=9)
    output = tmp_path / "eval.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "evaluate.py"), "--config", str(saved_config), "--ckpt_path", str(ckpt),
         "--data.root", str(other), "--output", str(output), "--trainer.enable_progress_bar=false"],
        cwd=in_tmp, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    printed = json.loads(result.stdout.strip().splitlines()[-1])
    assert printed == json.loads(output.read_text())
    assert printed["num_samples"] == 10 and {"acc", "auc"} <= set(printed)
    # An existing, non-empty --output is kept unless --overwrite is given.
    again = subprocess.run(
        [sys.executable, str(REPO / "tools" / "evaluate.py"), "--config", TINY_FACE_VGG, "--ckpt_path", str(ckpt),
         "--data.root", str(other), "--output", str(output)],
        cwd=in_tmp, capture_output=True, text=True, timeout=240,
    )
    assert again.returncode != 0 and "--overwrite" in again.stderr


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(face_crops_dir: Path, in_tmp: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = run_training_processes(
        [str(REPO / "tools" / "train.py"), "--config", TINY_FACE_VGG, "--data.root", str(face_crops_dir),
         "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.max_epochs=1",
         "--trainer.enable_progress_bar=false", "--data.batch_size=4"],  # 12 training crops over 2 ranks: 6 each
        cwd=in_tmp, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in result.stderr + result.stdout or "world_size=2" in result.stderr + result.stdout
    # Rank 0 alone wrote the run folder (no collective was left waiting), and the test outputs of
    # both ranks were gathered once each: 6 test images, as in one process.
    metrics = json.loads((run_dir(in_tmp) / "metrics.json").read_text())
    assert metrics["num_samples"] == 6 and (run_dir(in_tmp) / "roc.png").is_file()


def test_unknown_config_key_is_a_clear_error(face_crops_dir: Path, in_tmp: Path) -> None:
    with pytest.raises(SystemExit):
        cli.train(["--config", TINY_FACE_VGG, "--data.not_a_key=1"])


def test_default_root_dir_alone_places_the_run(face_crops_dir: Path, in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    target = in_tmp / "elsewhere"
    cli.train(["--config", str(REPO / "configs" / "face_vgg.yaml"), "--data.root", str(face_crops_dir),
               "--trainer.max_epochs=1", f"--trainer.default_root_dir={target}", "--data.image_size=[32,24]",
               "--data.batch_size=4", "--trainer.enable_progress_bar=false"])  # fmt: skip
    run = target / "face_vgg" / "version_0"
    assert (run / "metrics.json").is_file() and (run / "checkpoints" / "best.ckpt").is_file()
    assert not (in_tmp / "runs").exists()
    # The last word says where the run went and what it holds.
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"Run folder: {run} (") and "metrics.json" in line and "checkpoints/best.ckpt" in line


def test_an_old_config_naming_old_class_paths_still_runs(identity_dir: Path, in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    config = yaml.safe_load((REPO / "tests" / "configs" / "identity_tiny.yaml").read_text())
    old_callback = {"class_path": "facetorch.finetuning.FreezeUnfreeze", "init_args": {"unfreeze_at_epoch": 1}}
    config["trainer"]["callbacks"] = [old_callback]
    config["trainer"]["logger"]["init_args"]["save_dir"] = "runs"  # as saved config.yaml files before the house spell it
    old = in_tmp / "old_config.yaml"
    old.write_text(yaml.safe_dump(config))
    report = cli.train(["--config", str(old), "--data.root", str(identity_dir), "--trainer.max_epochs=2",
                        "--data.val_fraction=0.2", "--data.test_fraction=0.2"])  # fmt: skip
    assert "facetorch.finetuning.FreezeUnfreeze" in old.read_text()  # the user's file is never changed
    assert "read as facetorch.callbacks.FreezeUnfreeze" in capsys.readouterr().err
    assert report["num_samples"] > 0 and (run_dir(in_tmp, "identity_tiny") / "metrics.json").is_file()
