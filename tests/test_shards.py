"""Streaming shards (LitData): prepare_shards.py, data.shards with the folder's splits and samplers, DDP."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facetorch import cli
from facetorch.cli.prepare_shards import prepare_shards
from facetorch.data import FaceDataModule
from facetorch.data.shards import META_NAME, ShardIndex, _reader, read_meta, scan_shards
from facetorch.inference.checkpoint import load_task
from facetorch.tasks import EmbeddingTask
from tests.conftest import REPO, run_training_processes, write_face_crops, write_identity_folders

TINY = str(REPO / "tests" / "configs" / "embedding_tiny.yaml")
PEOPLE, PER_PERSON = 40, 8  # 320 images
DATA = {"layout": "identity_folders", "image_size": (16, 16), "channels": 3}


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_identity_folders(tmp_path_factory.mktemp("people") / "ids", identities=PEOPLE, per_identity=PER_PERSON)


@pytest.fixture(scope="module")
def shards(people: Path) -> Path:
    """320 images in 20 chunk files of 16, written by two processes."""
    out = people.parent / "shards"
    prepare_shards(["--layout", "identity_folders", "--images", str(people), "--output", str(out),
                    "--chunk_size", "16", "--num_workers", "2"])  # fmt: skip
    return out


def test_prepare_shards_writes_chunks_and_a_description(shards: Path, people: Path) -> None:
    assert len(list(shards.glob("chunk-*.bin"))) == PEOPLE * PER_PERSON // 16
    meta = read_meta(str(shards))
    assert meta["layout"] == "identity_folders" and meta["store"] == "raw" and meta["num_samples"] == 320
    assert meta["class_names"] == [f"person_{k:02d}" for k in range(PEOPLE)]
    index = scan_shards(str(shards))
    assert isinstance(index, ShardIndex) and len(index) == 320 and index.labels == sorted(index.labels)
    # The stored bytes are the files' own bytes: sample 9 is the second person's second image.
    with Image.open(people / "person_01" / "1.pgm") as image:
        assert np.array_equal(index.read(9, 3), np.asarray(image.convert("RGB")))


@pytest.mark.parametrize("split_by", ["identity", "image"])
def test_shards_give_the_folder_splits_items_and_samplers(shards: Path, people: Path, split_by: str) -> None:
    options = {**DATA, "split_by": split_by, "augmentation": None, "val_fraction": 0.2, "test_fraction": 0.1,
               "train_batches": "pk", "identities_per_batch": 4, "images_per_identity": 2, "cache_images": False}  # fmt: skip
    folder, sharded = FaceDataModule(str(people), **options), FaceDataModule(shards=str(shards), **options)
    for split in ("train", "val", "test"):
        assert folder.splits[split].labels == sharded.splits[split].labels
        assert np.array_equal(np.asarray(folder.splits[split].labels), np.asarray(sharded.splits[split].labels))
    assert folder.class_names == sharded.class_names
    folder.setup("fit")
    sharded.setup("fit")
    for name in ("train", "val"):
        for i in range(0, len(folder.datasets[name]), 7):
            assert torch.equal(folder.datasets[name][i][0], sharded.datasets[name][i][0])
    batches = [list(loader) for loader in (folder.train_dataloader(), sharded.train_dataloader())]
    assert len(batches[0]) == len(batches[1]) > 0
    for (x1, y1), (x2, y2) in zip(*batches):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_random_reads_decode_only_the_sample_asked_for(shards: Path) -> None:
    """The samplers read shards by position in random order: LitData must not decode a window of rows per read.

    Its default for small samples decodes (and then drops) a window of 256 rows around each random read,
    about 40 times the work of reading the one sample.
    """
    index = scan_shards(str(shards))
    assert _reader(str(shards)).batch_decode == 0
    order = np.random.default_rng(0).permutation(len(index))[:20]
    for i in order:
        assert int(_reader(str(shards))[int(index.sources[i])]["index"]) == int(index.sources[i])


def test_prepared_shards_skip_decoding_and_refuse_another_input(people: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    summary = prepare_shards(["--layout", "identity_folders", "--images", str(people), "--output", str(out),
                              "--store", "prepared", "--image_size", "16", "16", "--chunk_size", "64"])  # fmt: skip
    assert summary["samples"] == 320 and summary["splits"]["all"]["chunks"] == 5
    options = {**DATA, "augmentation": None, "split_by": "identity"}
    folder, prepared = FaceDataModule(str(people), **options), FaceDataModule(shards=str(out), **options)
    folder.setup("fit")
    prepared.setup("fit")
    assert prepared.splits["train"].prepared
    for i in range(0, len(folder.datasets["train"]), 5):
        assert torch.equal(folder.datasets["train"][i][0], prepared.datasets["train"][i][0])
    with pytest.raises(ValueError, match=r"prepared for .*image_size.*differs in \['image_size'\]"):
        _ = FaceDataModule(shards=str(out), **{**options, "image_size": (24, 16)}).splits


def test_split_folders_become_split_shards(tmp_path: Path) -> None:
    crops = write_face_crops(tmp_path / "crops" / "train", per_class=6)
    write_face_crops(tmp_path / "crops" / "test", per_class=3, seed=1)
    summary = prepare_shards(["--layout", "face_crops", "--images", str(crops.parent), "--output", str(tmp_path / "s")])
    assert set(summary["splits"]) == {"train", "test"} and (tmp_path / "s" / "train" / META_NAME).is_file()
    data = FaceDataModule(shards=str(tmp_path / "s"), layout="face_crops", image_size=(16, 12))
    folder = FaceDataModule(str(crops.parent), layout="face_crops", image_size=(16, 12))
    assert [len(data.splits[s]) for s in ("train", "val", "test")] == [len(folder.splits[s]) for s in ("train", "val", "test")]
    assert data.splits["test"].labels == folder.splits["test"].labels and data.class_names == ["non_face", "face"]


def test_shard_errors_name_what_to_do(shards: Path, people: Path, tmp_path: Path, labelme_dir: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        FaceDataModule(str(people), shards=str(shards), layout="identity_folders")
    with pytest.raises(ValueError, match="not available for layout 'labelme'"):
        FaceDataModule(shards=str(shards), layout="labelme")
    with pytest.raises(FileNotFoundError, match="is not a shard set .*prepare_shards"):
        _ = FaceDataModule(shards=str(tmp_path / "nothing"), layout="identity_folders").splits
    with pytest.raises(ValueError, match="holds the 'identity_folders' layout, but data.layout is 'face_crops'"):
        _ = FaceDataModule(shards=str(shards), layout="face_crops").splits
    with pytest.raises(FileExistsError, match="--overwrite"):
        prepare_shards(["--layout", "identity_folders", "--images", str(people), "--output", str(shards)])
    with pytest.raises(SystemExit):  # argparse: labelme has boxes, not shards
        prepare_shards(["--layout", "labelme", "--images", str(labelme_dir), "--output", str(tmp_path / "x")])
    broken = write_identity_folders(tmp_path / "broken", identities=2, per_identity=2)
    (broken / "person_00" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(Exception, match="bad.png"):
        prepare_shards(["--layout", "identity_folders", "--images", str(broken), "--output", str(tmp_path / "b")])


def test_min_images_and_class_names_apply_to_shards(tmp_path: Path) -> None:
    root = write_identity_folders(tmp_path / "ids", identities=4, per_identity=3)
    for extra in (root / "person_03").iterdir():
        if extra.name != "0.png":
            extra.unlink()
    prepare_shards(["--layout", "identity_folders", "--images", str(root), "--output", str(tmp_path / "s")])
    folder = FaceDataModule(str(root), layout="identity_folders", min_images_per_class=2)
    sharded = FaceDataModule(shards=str(tmp_path / "s"), layout="identity_folders", min_images_per_class=2)
    assert sharded.class_names == folder.class_names == ["person_00", "person_01", "person_02"]
    index = scan_shards(str(tmp_path / "s"), 2)
    assert index.dropped == {"person_03": 1} and len(index) == 9


def test_a_run_from_shards_trains_caches_and_reports_its_speed(shards: Path, in_tmp: Path) -> None:
    report = cli.train(["--config", TINY, "--data.shards", str(shards), "--trainer.max_epochs=2",
                        "--data.cache_bytes=100000", "--trainer.enable_progress_bar=false",
                        "--trainer.callbacks+=facetorch.callbacks.TrainThroughput"])  # fmt: skip
    run = in_tmp / "runs" / "embedding_tiny" / "version_0"
    assert report["num_samples"] > 0 and (run / "metrics.json").is_file()
    header, *rows = (run / "metrics.csv").read_text().splitlines()
    logged = [dict(zip(header.split(","), row.split(","))) for row in rows]
    speeds = [float(row["train_img_per_s"]) for row in logged if row.get("train_img_per_s")]
    assert len(speeds) == 2 and min(speeds) > 0
    assert all(0 <= float(row["train_loader_wait"]) <= 1 for row in logged if row.get("train_loader_wait"))
    assert all(float(row["peak_tree_pss_mb"]) > 0 for row in logged if row.get("peak_tree_pss_mb"))


@pytest.mark.slow
def test_ddp_from_shards_with_pk_batches_and_the_sharded_margin_head(shards: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Two CPU processes read their own P x K batches from the shards; each holds half the ArcFace centres."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = run_training_processes(
        [str(REPO / "tools" / "train.py"), "--config", TINY, "--data.shards", str(shards),
         "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.max_epochs=2",
         "--trainer.use_distributed_sampler=false", "--trainer.enable_progress_bar=false",
         "--model.init_args.loss=arcface", "--model.init_args.classification_weight=0", "--model.init_args.sample_rate=0.5",
         "--data.identities_per_batch=4", "--data.images_per_identity=2", "--data.num_workers=1"],
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "embedding_tiny" / "version_0"
    rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()]
    header, values = rows[0], [dict(zip(rows[0], row)) for row in rows[1:]]
    assert "train_arcface_loss" in header
    # num_classes counts every identity of the data (40); rank 0 held 20 of the centres
    assert {float(v["train_head_centres"]) for v in values if v.get("train_head_centres")} == {PEOPLE / 2}
    ddp_report = json.loads((run / "metrics.json").read_text())
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["state_dict"]["margin_head.weight"].shape == (PEOPLE, 16)  # the whole matrix, gathered
    loaded = load_task(run / "checkpoints" / "last.ckpt", EmbeddingTask)
    assert loaded.task.margin_head is None and loaded.task.embed(torch.zeros(2, 3, 32, 32)).shape == (2, 16)
    # One process tests the checkpoint (embedding network only) and reports what the two ranks reported.
    monkeypatch.chdir(tmp_path)
    cli.main(["test", "--config", TINY, "--data.shards", str(shards), "--ckpt_path", str(run / "checkpoints" / "best.ckpt"),
              "--model.init_args.loss=arcface", "--model.init_args.classification_weight=0",
              "--trainer.enable_progress_bar=false"])  # fmt: skip
    single = json.loads((tmp_path / "runs" / "embedding_tiny" / "version_1" / "metrics.json").read_text())
    for key in ("pair_acc", "auc", "num_samples"):
        assert ddp_report[key] == pytest.approx(single[key]), key
