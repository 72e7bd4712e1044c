"""EmbeddingTask end to end on generated identities: training (triplet, contrastive, two stages),
verification at validation and test, ``evaluate.py --pairs``, predict, explain, the gallery."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facetorch import cli
from facetorch.cli import explain as explain_cli
from facetorch.cli import gallery as gallery_cli
from facetorch.data import FaceDataModule
from facetorch.data.pairs import balanced_label_pairs
from facetorch.evaluation import enrolled_classifier_accuracy
from facetorch.inference.embedder import Embedder
from facetorch.recognition.database import open_gallery
from facetorch.recognition.gallery import Gallery, GalleryError
from facetorch.tasks import EmbeddingTask
from tests.conftest import REPO, read_csv, run_training_processes, write_identity_folders

TINY = str(REPO / "tests" / "configs" / "embedding_tiny.yaml")
VERIFICATION_KEYS = {"pair_acc", "pair_acc_std", "auc", "eer", "tar_at_far_1e-2", "tar_at_far_1e-3", "threshold", "num_samples"}


def train_tiny(root: Path, *overrides: str) -> dict:
    return cli.train(["--config", TINY, "--data.root", str(root), "--trainer.enable_progress_bar=false", *overrides])


def write_lfw_pairs(root: Path, people: int = 4, per_person: int = 3, seed: int = 1) -> Path:
    """An LFW-style pairs file: ``images/<name>/<name>_000i.jpg`` and ``pairs.txt`` (N matched, N mismatched)."""
    write_identity_folders(root / "raw", identities=people, per_identity=per_person, seed=seed)
    names = [f"Person_{k}" for k in range(people)]
    for k, name in enumerate(names):
        folder = root / "images" / name
        folder.mkdir(parents=True)
        for i, source in enumerate(sorted((root / "raw" / f"person_{k:02d}").iterdir())):
            Image.open(source).convert("RGB").save(folder / f"{name}_{i + 1:04d}.jpg", quality=95)
    matched = [f"{name}\t1\t{j}" for name in names for j in range(2, per_person + 1)]
    mismatched = [f"{a}\t1\t{b}\t2" for a, b in zip(names, names[1:] + names[:1])]
    mismatched += [f"{a}\t{per_person}\t{b}\t1" for a, b in zip(names, names[2:] + names[:2])][: len(matched) - len(mismatched)]
    count = min(len(matched), len(mismatched))
    (root / "pairs.txt").write_text("\n".join([str(count), *matched[:count], *mismatched[:count]]) + "\n")
    return root / "pairs.txt"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """(work folder, best checkpoint, test report) of a 2-epoch tiny triplet run on 8 identities."""
    work = tmp_path_factory.mktemp("embedding")
    people = write_identity_folders(work / "ids", identities=8)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        report = train_tiny(people, "--trainer.callbacks+=facetorch.callbacks.GradCAMLogger",
                            "--trainer.callbacks.every_n_epochs=1")  # fmt: skip
    return work, work / "runs" / "embedding_tiny" / "version_0" / "checkpoints" / "best.ckpt", report


# --------------------------------------------------------------------------------------------
# pure pieces
# --------------------------------------------------------------------------------------------


def test_balanced_label_pairs_are_balanced_valid_and_in_lfw_order() -> None:
    labels = np.repeat(np.arange(5), [1, 2, 3, 4, 10])
    pairs = balanced_label_pairs(labels, max_per_kind=20, seed=3)
    same = pairs[:, 2] == 1
    assert same.sum() == (~same).sum() == 20  # 1 + 3 + 6 + 45 same pairs exist, capped at 20
    assert same[:20].all() and not same[20:].any()  # matched first: lfw_fold_ids applies
    assert (labels[pairs[:, 0]] == labels[pairs[:, 1]]).tolist() == same.tolist()
    assert (pairs[:, 0] < pairs[:, 1]).all() and len({tuple(p) for p in pairs[:, :2]}) == 40
    assert np.array_equal(pairs, balanced_label_pairs(labels, max_per_kind=20, seed=3))  # seeded
    with pytest.raises(ValueError, match="two images and two identities"):
        balanced_label_pairs([0, 1, 2])


def test_enrolled_classifier_accuracy_on_separable_embeddings() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(4)
    labels = np.repeat(np.arange(4), 6)
    embeddings = centres[labels] + rng.normal(0, 0.05, (24, 4))
    result = enrolled_classifier_accuracy(embeddings, labels)
    assert result == {"svm_acc": 1.0, "knn_acc": 1.0, "num_probes": 12}  # 3 of 6 enrolled per person
    assert enrolled_classifier_accuracy(embeddings[:4], labels[:4]) == {}  # one image per person


def test_center_crop_keeps_the_middle(tmp_path: Path) -> None:
    image = np.zeros((100, 80, 3), np.uint8)
    image[25:75, 20:60] = 255  # the middle half is white
    data = FaceDataModule(image_size=(10, 10), channels=3, center_crop=(0.5, 0.5), normalization="unit")
    assert torch.allclose(data.transform(train=False)(image), torch.ones(3, 10, 10))
    with pytest.raises(ValueError, match="center_crop must be two fractions"):
        FaceDataModule(center_crop=(0.0, 0.5))


def test_pk_and_pair_batches_from_the_datamodule(tmp_path: Path) -> None:
    root = write_identity_folders(tmp_path / "ids", identities=8)
    pk = FaceDataModule(str(root), "identity_folders", (16, 16), 3, split_by="identity", val_fraction=0.25,
                        test_fraction=0.0, train_batches="pk", identities_per_batch=3, images_per_identity=2)  # fmt: skip
    pk.setup("fit")
    images, labels = next(iter(pk.train_dataloader()))
    assert images.shape == (6, 3, 16, 16) and len(set(labels.tolist())) == 3
    assert set(labels.tolist()).isdisjoint(pk.splits["val"].labels)  # validation people never train
    pairs = FaceDataModule(str(root), "identity_folders", (16, 16), 3, split_by="identity", val_fraction=0.25,
                           test_fraction=0.0, train_batches="pairs", batch_size=4)  # fmt: skip
    pairs.setup("fit")
    x1, x2, same, y1, y2 = next(iter(pairs.train_dataloader()))
    assert x1.shape == x2.shape == (4, 3, 16, 16) and same.sum() == 2
    assert torch.equal(same, (y1 == y2).float())
    with pytest.raises(ValueError, match="train_batches=.pk. is not used by layout .face_crops. .it applies to identity_folders"):
        FaceDataModule(layout="face_crops", train_batches="pk")


@pytest.mark.parametrize("num_samples, world_size", [(10, 2), (11, 3), (3, 4)])
def test_gathered_embeddings_return_to_dataset_order(num_samples: int, world_size: int) -> None:
    from torch.utils.data import DistributedSampler

    from facetorch.tasks.base import dataset_order

    per_rank = [list(DistributedSampler(range(num_samples), num_replicas=world_size, rank=r, shuffle=False))
                for r in range(world_size)]  # fmt: skip
    gathered = torch.tensor(per_rank, dtype=torch.float32)[..., None]  # (W, n, 1): each row holds its index
    assert dataset_order(gathered, num_samples)[:, 0].tolist() == list(range(num_samples))


# --------------------------------------------------------------------------------------------
# training, evaluation, predict
# --------------------------------------------------------------------------------------------


def test_training_reports_verification_and_stores_the_threshold(trained: tuple[Path, Path, dict]) -> None:
    work, ckpt, report = trained
    run = ckpt.parent.parent
    assert VERIFICATION_KEYS | {"svm_acc", "knn_acc", "acc_at_calibrated_threshold"} <= set(report)
    assert json.loads((run / "metrics.json").read_text()) == report
    for name in ("roc.png", "similarities.png", "config.yaml", "gradcam/epoch_000.png", "gradcam/epoch_001.png"):
        assert (run / name).is_file(), name
    threshold = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]["threshold"]
    assert torch.isfinite(threshold) and -1.0 <= float(threshold) <= 1.0
    assert report["calibrated_threshold"] == pytest.approx(float(threshold))
    metrics = read_csv(run / "metrics.csv")
    assert any(row.get("val_pair_acc") for row in metrics) and any(row.get("train_triplet_loss") for row in metrics)


def test_evaluate_pairs_file_prints_the_contract_keys(trained: tuple[Path, Path, dict], tmp_path: Path, in_tmp: Path,
                                                      capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    _, ckpt, _ = trained
    pairs = write_lfw_pairs(tmp_path / "lfw")
    output = tmp_path / "pairs.json"
    report = cli.evaluate(["--config", TINY, "--ckpt_path", str(ckpt), "--pairs", str(pairs),
                           "--output", str(output), "--trainer.enable_progress_bar=false",
                           "--trainer.logger=false"])  # fmt: skip
    assert VERIFICATION_KEYS <= set(report) and report["num_samples"] == 16  # 8 matched + 8 mismatched pairs
    assert "svm_acc" not in report  # a pairs file verifies only
    assert json.loads(output.read_text()) == report
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report


def test_two_stage_contrastive_trains_only_the_embedding_layer_in_stage_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    people = write_identity_folders(tmp_path / "ids", identities=8)
    seen: dict[int, dict[str, torch.Tensor]] = {}

    original = EmbeddingTask.on_train_epoch_end

    def snapshot(self: EmbeddingTask) -> None:
        seen[self.current_epoch] = {k: v.detach().clone() for k, v in self.state_dict().items()}
        original(self)

    monkeypatch.setattr(EmbeddingTask, "on_train_epoch_end", snapshot, raising=False)
    report = train_tiny(people, "--model.init_args.loss=contrastive", "--data.train_batches=pairs", "--data.batch_size=4",
                        "--model.init_args.classification_weight=0", "--model.init_args.classify_epochs=1",
                        "--model.init_args.stage_two_trains=embedding", "--trainer.max_epochs=3")  # fmt: skip
    assert VERIFICATION_KEYS <= set(report)
    stage_one_end, last = seen[0], seen[2]
    changed = {k for k in last if not torch.equal(stage_one_end[k], last[k])}
    assert {"model.head.embedding.weight", "model.head.embedding.bias"} <= changed
    assert not {k for k in changed if k.startswith("model.backbone.")}  # frozen, BatchNorm statistics too


def test_a_loss_without_its_batches_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    people = write_identity_folders(tmp_path / "ids", identities=8)
    with pytest.raises(ValueError, match="set data.train_batches: pairs"):
        train_tiny(people, "--model.init_args.loss=contrastive", "--trainer.fast_dev_run=1")


def test_predict_writes_embeddings(trained: tuple[Path, Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work, ckpt, _ = trained
    monkeypatch.chdir(tmp_path)
    cli.main(["predict", "--config", TINY, "--ckpt_path", str(ckpt), "--data.root", str(work / "ids"),
              "--data.predict_dir", str(work / "ids" / "person_00"), "--trainer.enable_progress_bar=false"])  # fmt: skip
    rows = read_csv(next(tmp_path.rglob("embeddings.csv")))
    assert len(rows) == 5 and len(rows[0]) == 2 + 16
    vector = np.array([float(rows[0][f"e{i}"]) for i in range(16)])
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)


def test_explain_a_pair_with_a_reference(trained: tuple[Path, Path, dict], tmp_path: Path) -> None:
    work, ckpt, _ = trained
    written = explain_cli.explain(["--config", TINY, "--ckpt_path", str(ckpt), "--data.root", str(work / "ids"),
                                "--images", str(work / "ids" / "person_01"), "--reference",
                                str(work / "ids" / "person_01" / "0.png"), "--output", str(tmp_path / "why"),
                                "--trainer.enable_progress_bar=false"])  # fmt: skip
    assert any(p.name.endswith("_gradcam_overlay.png") for p in written)
    with pytest.raises(ValueError, match="--reference IMG"):
        EmbeddingTask(backbone="tiny").explain_target("face")
    target = EmbeddingTask(backbone="tiny").explain_target(None)  # each image against the next one
    embeddings = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), dim=1)
    assert torch.allclose(target(embeddings), torch.tensor([0.0, 2**-0.5, 2**-0.5]))


# --------------------------------------------------------------------------------------------
# gallery
# --------------------------------------------------------------------------------------------


def test_gallery_enroll_identify_verify_evaluate(trained: tuple[Path, Path, dict], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    work, ckpt, _ = trained
    # person_00..05: images 0-2 enrolled, 3-4 probe; person_06..07 never enrolled.
    split = ["split", "--images", str(work / "ids"), "--people", "6", "--per_person", "3", "--output", str(tmp_path / "split")]
    gallery_cli.gallery(split)
    assert json.loads(capsys.readouterr().out) == {"enrol": 18, "known": 12, "unknown": 10}
    enrol, known, unknown = (tmp_path / "split" / part for part in ("enrol", "known", "unknown"))
    assert sorted(p.name for p in (enrol / "person_00").iterdir()) == ["0.png", "1.pgm", "2.png"]
    with pytest.raises(FileExistsError, match="not empty"):
        gallery_cli.gallery(split)
    gallery_file = tmp_path / "people.db"
    crops = ["--faces", "whole"]  # these images are face crops (enroll finds faces in photos by default)
    gallery_cli.gallery(["enroll", "--ckpt_path", str(ckpt), "--images", str(enrol), "--gallery", str(gallery_file), *crops])
    assert json.loads(capsys.readouterr().out)["added"] == 18
    gallery_cli.gallery(["enroll", "--ckpt_path", str(ckpt), "--images", str(enrol), "--gallery", str(gallery_file), *crops])
    again = json.loads(capsys.readouterr().out)
    assert (again["added"], again["total"], again["skipped"]) == (0, 18, 0)
    assert -1.0 <= again["open_set_threshold"] <= 1.0  # calibrated on the 6 enrolled people
    assert gallery_file.read_bytes()[:16] == b"SQLite format 3\x00"  # new galleries are SQLite files
    with open_gallery(gallery_file) as people:
        names, rows = people.rows()
        assert rows.shape == (18, 16) and sorted(set(names)) == [f"person_0{i}" for i in range(6)]

    # Enrolling the same name again adds its new images.
    more = tmp_path / "more" / "person_00"
    more.mkdir(parents=True)
    (more / "extra.png").write_bytes((known / "person_00" / "3.pgm").read_bytes())
    gallery_cli.gallery(["enroll", "--ckpt_path", str(ckpt), "--images", str(more.parent), "--gallery", str(gallery_file),
                         *crops])  # fmt: skip
    assert json.loads(capsys.readouterr().out)["total"] == 19

    output = tmp_path / "ids.csv"
    gallery_cli.gallery(["identify", "--ckpt_path", str(ckpt), "--gallery", str(gallery_file), "--images", str(known),
                      "--threshold", "0", "--output", str(output)])  # fmt: skip
    rows = read_csv(output)
    assert len(rows) == 12 and all(r["name"].startswith("person_0") for r in rows)  # threshold 0 names each best match
    stranger = unknown / "person_06" / "0.png"
    gallery_cli.gallery(["identify", "--ckpt_path", str(ckpt), "--gallery", str(gallery_file), "--images", str(stranger),
                      "--threshold", "1"])  # fmt: skip
    assert "unknown" in capsys.readouterr().out  # a stranger never reaches a similarity of 1
    with pytest.raises(FileExistsError, match="exists and is not empty; pass --overwrite"):
        gallery_cli.gallery(["identify", "--ckpt_path", str(ckpt), "--gallery", str(gallery_file), "--images", str(known),
                          "--output", str(output)])  # fmt: skip

    pair = [str(known / "person_01" / "3.pgm"), str(known / "person_01" / "4.png")]
    gallery_cli.gallery(["verify", "--ckpt_path", str(ckpt), *pair])
    verdict = json.loads(capsys.readouterr().out)
    assert set(verdict) == {"similarity", "threshold", "same"}
    assert verdict["same"] == (verdict["similarity"] >= verdict["threshold"])

    gallery_cli.gallery(["evaluate", "--ckpt_path", str(ckpt), "--gallery", str(gallery_file), "--known", str(known),
                      "--unknown", str(unknown)])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["num_known"] == 12 and report["num_unknown"] == 10
    for key in ("identification_rate", "unknown_rejection_rate", "dir_at_fpir_0.1", "rank1_acc", "svm_acc", "knn_acc"):
        assert 0.0 <= report[key] <= 1.0, key


def test_open_set_threshold_is_calibrated_on_enrolled_people_as_strangers() -> None:
    from facetorch.recognition.gallery import GalleryMeta

    # Three people, two images each, on three orthogonal axes with a little overlap.
    rows = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0.1, 0.9, 0], [0, 0, 1], [0, 0.2, 0.9]], dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    gallery = Gallery(rows, GalleryMeta("f", threshold=0.5, names=["a", "a", "b", "b", "c", "c"], files=list("123456"),
                                        open_set_fpir=0.0))  # fmt: skip
    threshold = gallery.calibrate_open_set()
    grid = rows.astype(np.float64)
    strangers = [max(grid[i] @ grid[j] for j in range(6) if j // 2 != i // 2) for i in range(6)]
    assert threshold > max(strangers) and threshold == pytest.approx(max(strangers), abs=1e-6)  # FPIR 0: none pass
    assert gallery.default_threshold() == threshold
    assert [name for name, _ in gallery.identify(rows[[0, 2]])] == ["a", "b"]  # the enrolled images themselves
    assert gallery.identify(rows[[1]], threshold=1.01) == [("unknown", pytest.approx(1.0))]


def test_gallery_of_another_model_is_refused(trained: tuple[Path, Path, dict], tmp_path: Path) -> None:
    work, ckpt, _ = trained
    embedder = Embedder(ckpt)
    gallery = Gallery.empty(embedder)
    gallery.meta.model_fingerprint = "0" * 16
    gallery.save(tmp_path / "g.npz")
    with pytest.raises(GalleryError, match="made by another model"):
        Gallery.load(tmp_path / "g.npz").check_model(embedder, tmp_path / "g.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(GalleryError, match="not a facetorch gallery"):
        Gallery.load(tmp_path / "bad.npz")
    open_gallery(tmp_path / "g.db", create=True, dim=embedder.embedding_dim, fingerprint="0" * 16).close()
    with pytest.raises(GalleryError, match="made by another model"):
        open_gallery(tmp_path / "g.db", fingerprint=embedder.fingerprint)


def test_classical_verification_baselines_on_a_pairs_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tests.test_baselines_tool import load_tool

    people = write_identity_folders(tmp_path / "ids", identities=8)
    pairs = write_lfw_pairs(tmp_path / "lfw")
    reports = load_tool().main(["--config", TINY, "--data.root", str(people), "--pairs", str(pairs)])
    assert [r["method"] for r in reports] == ["eigenfaces", "lbp"]
    for report in reports:
        assert VERIFICATION_KEYS <= set(report) and report["num_samples"] == 16
        assert 0.0 <= report["pair_acc"] <= 1.0


@pytest.mark.slow
def test_ddp_training_verifies_like_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two CPU processes with P x K batches (use_distributed_sampler: false): every rank embeds the
    whole validation and test split, and the report matches a one-process test of the checkpoint."""
    import os

    people = write_identity_folders(tmp_path / "ids", identities=8)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = run_training_processes(
        [str(REPO / "tools" / "train.py"), "--config", TINY, "--data.root", str(people),
         "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.max_epochs=1",
         "--trainer.use_distributed_sampler=false", "--trainer.enable_progress_bar=false"],
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "embedding_tiny" / "version_0"
    ddp_report = json.loads((run / "metrics.json").read_text())
    monkeypatch.chdir(tmp_path)
    cli.main(["test", "--config", TINY, "--data.root", str(people), "--ckpt_path", str(run / "checkpoints" / "best.ckpt"),
              "--trainer.enable_progress_bar=false"])  # fmt: skip
    single = json.loads((tmp_path / "runs" / "embedding_tiny" / "version_1" / "metrics.json").read_text())
    for key in ("pair_acc", "auc", "eer", "num_samples", "svm_acc"):
        assert ddp_report[key] == pytest.approx(single[key]), key
