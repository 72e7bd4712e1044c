"""Export: every task to ONNX and TorchScript, the metadata contract, parity with the PyTorch model
(batch 1 and 7), the gallery from an exported model, the onnxruntime-only path and its README script.

``pytest tests/test_export.py -k parity -s`` prints the parity numbers the README quotes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from facetorch import cli
from facetorch.cli import export as export_cli
from facetorch.cli import gallery as gallery_cli
from facetorch.inference.checkpoint import load_task, model_fingerprint
from facetorch.inference.embedder import Embedder
from facetorch.inference.export import METADATA_KEY, METADATA_KEYS, graph_and_onnx, read_torchscript
from facetorch.inference.onnx_model import ExportError, OnnxEmbedder, OnnxModel
from facetorch.recognition.database import open_gallery
from facetorch.recognition.enrollment import split_open_set
from facetorch.tasks import EmbeddingTask, FaceClassifierTask, FaceDetectorTask, IdentityTask
from tests.conftest import REPO, write_face_crops, write_identity_folders

TINY = REPO / "tests" / "configs"
TASKS = {  # name -> (tiny config, task class)
    "face_vgg": ("face_vgg.yaml", FaceClassifierTask),
    "identity": ("identity_tiny.yaml", IdentityTask),
    "embedding": ("embedding_tiny.yaml", EmbeddingTask),
    "detector": ("detector_tiny.yaml", FaceDetectorTask),
}
FORMATS = ("onnx", "torchscript")
PARITY_BOUND = 1e-5  # fp32 throughout; measured differences are about 1e-7
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def trained(tiny_checkpoints: dict) -> dict[str, tuple[Path, Path]]:
    """One checkpoint per task (conftest's, one epoch on generated data): name -> (best.ckpt, data root)."""
    return {name: tiny_checkpoints[config] for name, (config, _) in TASKS.items()}


def run_export(config: str, ckpt: Path | None, fmt: str, output: Path, *extra: str) -> dict:
    args = ["--config", str(TINY / config), "--format", fmt, "--output", str(output), *extra]
    return export_cli.export(args + (["--ckpt_path", str(ckpt)] if ckpt is not None else []))


@pytest.fixture(scope="module")
def exported(trained: dict, work: Path) -> dict[tuple[str, str], Path]:
    """Each task's checkpoint exported in both formats (ONNX with any batch size, the default): (name, format) -> file."""
    files = {}
    for name, (config, _) in TASKS.items():
        for fmt in FORMATS:
            path = work / "exports" / f"{name}.{'onnx' if fmt == 'onnx' else 'pt'}"
            summary = run_export(config, trained[name][0], fmt, path)
            assert summary["check_max_abs_diff"] < PARITY_BOUND and path.is_file()
            files[name, fmt] = path
    return files


def onnx_metadata(path: Path) -> dict:
    props = {entry.key: entry.value for entry in onnx.load(str(path)).metadata_props}
    return json.loads(props[METADATA_KEY])


def metadata_of(path: Path, fmt: str) -> dict:
    return onnx_metadata(path) if fmt == "onnx" else read_torchscript(path)[1]


def reference_outputs(task: torch.nn.Module, images: torch.Tensor) -> list[np.ndarray]:
    """What the PyTorch task itself gives for normalised images, output by output."""
    with torch.no_grad():
        if isinstance(task, EmbeddingTask):
            outputs = [task.embed(images)]
        elif isinstance(task, FaceDetectorTask):
            outputs = list(task.detect(images))
        else:
            logits = task(images)
            outputs = [logits, logits.softmax(dim=1)]
    return [t.float().numpy() for t in outputs]


# --------------------------------------------------------------------------------------------
# Parity and metadata
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(TASKS))
def test_parity_with_the_pytorch_model_at_batch_1_and_7(trained: dict, exported: dict, name: str, fmt: str) -> None:
    loaded = load_task(trained[name][0], TASKS[name][1])
    spec, path = loaded.input, exported[name, fmt]
    normalise = spec.finish()  # the training pipeline's normalisation of an already resized image
    rng = np.random.default_rng(7)
    height, width = spec.image_size
    if fmt == "onnx":
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
    else:
        module, _ = read_torchscript(path)
    for batch in (1, 7):
        pixels = rng.integers(0, 256, (batch, height, width, spec.channels), dtype=np.uint8)  # N x H x W x C
        normalised = torch.stack([normalise(image[..., 0] if spec.channels == 1 else image) for image in pixels])
        expected = reference_outputs(loaded.task, normalised)
        nchw = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))
        if fmt == "onnx":
            got = session.run(names, {"images": nchw.astype(np.float32)})
        else:  # TorchScript takes the uint8 images as they are
            with torch.no_grad():
                got = [t.numpy() for t in module(torch.from_numpy(nchw))]
        assert [g.shape for g in got] == [e.shape for e in expected]
        difference = max(float(np.abs(g - e).max()) for g, e in zip(got, expected))
        print(f"parity {name} {fmt} batch={batch} max_abs_diff={difference:.2e}")
        assert difference < PARITY_BOUND


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(TASKS))
def test_the_metadata_says_how_to_feed_and_decide(trained: dict, exported: dict, name: str, fmt: str) -> None:
    loaded = load_task(trained[name][0], TASKS[name][1])
    meta = metadata_of(exported[name, fmt], fmt)
    assert tuple(meta) == METADATA_KEYS
    spec, task = loaded.input, loaded.task
    assert meta["task"] == type(task).__name__ and meta["input_name"] == "images"
    assert meta["input_size"] == list(spec.image_size) and meta["channels"] == spec.channels
    assert meta["color_order"] == ("RGB" if spec.channels == 3 else "GRAY") and meta["interpolation"] == "INTER_AREA"
    norm = meta["normalization"]
    assert norm["inside_graph"] and norm["mean"] == pytest.approx([255 * m for m in spec.mean])
    assert norm["std"] == pytest.approx([255 * s for s in spec.std]) and norm["center_crop"] is None
    assert meta["align"] is None and meta["fingerprint"] == model_fingerprint(task)
    expected_outputs = {"face_vgg": ["logits", "probabilities"], "identity": ["logits", "probabilities"],
                        "embedding": ["embedding"], "detector": ["score", "box"]}[name]  # fmt: skip
    assert list(meta["outputs"]) == expected_outputs
    if fmt == "onnx":
        session = ort.InferenceSession(str(exported[name, fmt]), providers=["CPUExecutionProvider"])
        assert [o.name for o in session.get_outputs()] == expected_outputs
        assert session.get_inputs()[0].name == "images" and not isinstance(session.get_inputs()[0].shape[0], int)
    if name == "embedding":
        assert meta["threshold"] == pytest.approx(float(task.threshold)) and meta["threshold_metric"] == "cosine"
        assert meta["class_names"] is None and "mirror" in meta["outputs"]["embedding"]["description"]
    elif name == "detector":
        assert meta["threshold"] == task.score_threshold and meta["threshold_metric"] == "score"
        assert meta["class_names"] == ["no_face", "face"]
    else:
        assert meta["threshold"] is None and meta["threshold_metric"] is None
        assert meta["class_names"] == task.class_names
    assert meta["facetorch_version"] == __import__("facetorch").__version__


def test_the_graph_embeds_as_the_task_does_with_and_without_the_test_time_flip() -> None:
    from facetorch.data.transforms import InputSpec
    from facetorch.inference.export import export_graph

    spec = InputSpec((32, 32), 3)
    images = torch.randint(0, 256, (3, 3, 32, 32)).float()
    for flip in (True, False):
        torch.manual_seed(0)
        task = EmbeddingTask(backbone="tiny", embedding_dim=8, flip_test=flip).eval()
        graph = export_graph(task, spec)
        assert graph.flip_test is flip
        with torch.no_grad():
            (got,) = graph(images)
            expected = task.embed((images / 255 - 0.5) / 0.5)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
        assert not torch.allclose(got, task.embed(images))  # the normalisation is inside the graph


def test_the_detector_graph_detects_as_the_task_does_with_and_without_the_test_time_flip() -> None:
    from facetorch.data.transforms import InputSpec
    from facetorch.inference.export import export_graph, export_metadata
    from facetorch.tasks import FaceDetectorTask

    spec = InputSpec((32, 32), 3)
    images = torch.randint(0, 256, (3, 3, 32, 32)).float()
    answers = {}
    for flip in (True, False):
        torch.manual_seed(0)
        task = FaceDetectorTask(backbone="tiny", hidden=16, pool_grid=2, tta_flip=flip).eval()
        graph = export_graph(task, spec)
        assert graph.flip_test is flip
        with torch.no_grad():
            answers[flip] = graph(images)
            expected = task.detect((images / 255 - 0.5) / 0.5)
        for got, want in zip(answers[flip], expected):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
        assert ("mirror image" in export_metadata(task, spec, graph)["outputs"]["box"]["description"]) is flip
    assert not torch.allclose(answers[True][1], answers[False][1])  # the flip changes the box: it is in the graph


def test_tta_flip_on_puts_the_detectors_flip_in_the_file_and_a_classifier_refuses_it(trained: dict, work: Path) -> None:
    ckpt = trained["detector"][0]
    files = {flip: work / "flip" / f"detector_{flip}.onnx" for flip in ("off", "on")}
    for flip, path in files.items():
        assert run_export("detector_tiny.yaml", ckpt, "onnx", path, "--tta_flip", flip)["tta_flip"] is (flip == "on")
    loaded = load_task(ckpt, FaceDetectorTask)
    height, width = loaded.input.image_size
    pixels = np.random.default_rng(3).integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    normalised = torch.stack([loaded.input.finish()(image) for image in pixels])
    nchw = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)).astype(np.float32)
    for flip, path in files.items():
        loaded.task.tta_flip = flip == "on"
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(["score", "box"], {"images": nchw})
        for g, e in zip(got, reference_outputs(loaded.task, normalised)):
            np.testing.assert_allclose(g, e, atol=PARITY_BOUND, rtol=0)
    with pytest.raises(ValueError, match="--tta_flip on: a FaceClassifierTask has no test-time flip"):
        run_export("face_vgg.yaml", trained["face_vgg"][0], "onnx", work / "flip" / "classifier.onnx", "--tta_flip", "on")
    assert not (work / "flip" / "classifier.onnx").exists()


def test_a_fixed_batch_onnx_runs_any_number_of_images_in_chunks(trained: dict, exported: dict, work: Path) -> None:
    path = work / "fixed" / "face_vgg.onnx"
    summary = run_export("face_vgg.yaml", trained["face_vgg"][0], "onnx", path, "--fixed_batch")
    assert summary["dynamic_batch"] is False
    fixed, dynamic = OnnxModel(path), OnnxModel(exported["face_vgg", "onnx"])
    assert fixed.batch == 1 and dynamic.batch is None
    images = [np.random.default_rng(i).integers(0, 256, (30, 20), dtype=np.uint8) for i in range(7)]
    a, b = fixed(images), dynamic(images)
    assert a["probabilities"].shape == (7, 2)
    np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=1e-6)


def test_the_pretrained_way_exports_a_config_without_checkpoint(work: Path) -> None:
    # The face / non-face config needs no data root (scikit-image's built-in faces); any batch size by default.
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        summary = run_export("face_vgg.yaml", None, "onnx", work / "from_config.onnx")
    assert summary["task"] == "FaceClassifierTask" and summary["dynamic_batch"] and summary["check_max_abs_diff"] < PARITY_BOUND
    assert onnx_metadata(work / "from_config.onnx")["input_size"] == [24, 16]
    assert not (work / "runs" / "face_vgg_tiny" / "version_1").exists()  # nothing was trained: no run folder


# --------------------------------------------------------------------------------------------
# Bad input: one line each
# --------------------------------------------------------------------------------------------


def one_error_line(main: object, args: list[str], capsys: pytest.CaptureFixture) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(args)  # type: ignore[operator]
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error:" in line]
    assert len(errors) == 1, errors
    return errors[0]


def test_bad_export_input_is_one_clear_line(trained: dict, work: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = str(trained["face_vgg"][0])
    base = ["--config", str(TINY / "face_vgg.yaml")]
    args = [*base, "--ckpt_path", ckpt, "--format", "tflite", "--output", str(work / "x")]
    line = one_error_line(export_cli.main, args, capsys)
    assert "--format must be one of onnx, torchscript, got 'tflite'" in line
    existing = work / "existing.onnx"
    existing.write_bytes(b"keep me")
    line = one_error_line(export_cli.main, [*base, "--ckpt_path", ckpt, "--format", "onnx", "--output", str(existing)], capsys)
    assert "exists and is not empty; pass --overwrite" in line and existing.read_bytes() == b"keep me"
    out = ["--format", "onnx", "--output", str(work / "new.onnx")]
    line = one_error_line(export_cli.main, [*base, "--ckpt_path", str(work / "missing.ckpt"), *out], capsys)
    assert "missing.ckpt' does not exist" in line
    foreign = work / "foreign.ckpt"
    foreign.write_bytes(b"not a checkpoint\n")
    line = one_error_line(export_cli.main, [*base, "--ckpt_path", str(foreign), *out], capsys)
    assert "not a readable facetorch checkpoint" in line
    line = one_error_line(export_cli.main, [*base, "--ckpt_path", str(trained["embedding"][0]), *out], capsys)
    assert "is an EmbeddingTask checkpoint, but the config's model is FaceClassifierTask" in line
    assert not (work / "new.onnx").exists()
    old = ["--format", "onnx", "--opset", "13", "--output", str(work / "old.onnx")]
    line = one_error_line(export_cli.main, [*base, "--ckpt_path", ckpt, *old], capsys)
    assert "could not convert this model to opset 13 (it wrote 18)" in line and not (work / "old.onnx").exists()


def plain_onnx(path: Path) -> Path:
    """An ONNX model that is not a facetorch export (no metadata)."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "plain", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_an_aligned_export_without_alignment_names_flags_not_python_arguments(exported: dict, work: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    model = onnx.load(str(exported["embedding", "onnx"]))
    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            entry.value = json.dumps({**json.loads(entry.value), "align": "five_point"})
    aligned = work / "aligned.onnx"
    onnx.save(model, str(aligned))
    line = one_error_line(gallery_cli.main, ["verify", "--model", str(aligned), "a.png", "b.png"], capsys)
    assert "five_point-aligned faces" in line and "--ckpt_path CKPT or --config CFG" in line
    assert not re.search(r"\b[a-z]+_[a-z_]+=", line)  # no Python argument (face_of=...) in a message to a user


def test_a_model_that_is_not_a_facetorch_export_is_refused(exported: dict, work: Path, capsys: pytest.CaptureFixture) -> None:
    plain = plain_onnx(work / "plain.onnx")
    with pytest.raises(ExportError, match="plain.onnx' is an ONNX model without 'facetorch' metadata"):
        OnnxModel(plain)
    line = one_error_line(gallery_cli.main, ["verify", "--model", str(plain), "a.png", "b.png"], capsys)
    assert "without 'facetorch' metadata (not a facetorch export)" in line
    line = one_error_line(gallery_cli.main, ["verify", "--model", str(exported["face_vgg", "onnx"]), "a.png", "b.png"], capsys)
    assert "is an export of a FaceClassifierTask; gallery.py needs an EmbeddingTask export" in line
    line = one_error_line(gallery_cli.main, ["verify", "--model", str(work / "missing.onnx"), "a.png", "b.png"], capsys)
    assert "missing.onnx' does not exist" in line
    garbage = work / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01 not protobuf")
    line = one_error_line(gallery_cli.main, ["verify", "--model", str(garbage), "a.png", "b.png"], capsys)
    assert "is not a readable ONNX model" in line
    line = one_error_line(gallery_cli.main, ["verify", "a.png", "b.png"], capsys)
    assert "--ckpt_path CKPT or as --model FILE.onnx" in line
    with pytest.raises(ValueError, match="without 'facetorch' metadata"):
        read_torchscript(torch_plain_script(work / "plain.pt"))


def torch_plain_script(path: Path) -> Path:
    """A TorchScript file that is not a facetorch export."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 marks torch.jit as deprecated
        torch.jit.save(torch.jit.script(torch.nn.Identity()), str(path))
    return path


# --------------------------------------------------------------------------------------------
# The gallery from an exported model
# --------------------------------------------------------------------------------------------


def test_a_gallery_from_the_export_gives_the_same_names_as_from_the_checkpoint(
    trained: dict, exported: dict, work: Path, capsys: pytest.CaptureFixture
) -> None:
    ckpt, model = str(trained["embedding"][0]), str(exported["embedding", "onnx"])
    people = split_open_set(write_identity_folders(work / "people", identities=8, per_identity=6, seed=3),
                            work / "open_set", people=5, per_person=3)  # fmt: skip
    assert people == {"enrol": 15, "known": 15, "unknown": 18}
    split = work / "open_set"
    for flag, value, name in (("--ckpt_path", ckpt, "from_ckpt.db"), ("--model", model, "from_onnx.db")):
        gallery_cli.gallery(["enroll", flag, value, "--images", str(split / "enrol"), "--gallery", str(work / name), "--quiet",
                             "--faces", "whole"])  # fmt: skip
    with open_gallery(work / "from_ckpt.db") as from_ckpt, open_gallery(work / "from_onnx.db") as from_onnx:
        assert from_ckpt.meta.model_fingerprint == from_onnx.meta.model_fingerprint == OnnxEmbedder(model).fingerprint
        (names_ckpt, rows_ckpt), (names_onnx, rows_onnx) = from_ckpt.rows(), from_onnx.rows()
        assert names_ckpt == names_onnx and from_ckpt.meta.threshold == pytest.approx(from_onnx.meta.threshold)
        np.testing.assert_allclose(rows_ckpt, rows_onnx, atol=1e-5)
    probes = str(split)  # known and unknown people together

    def identify(flag: str, value: str, gallery: str) -> list[dict]:
        return gallery_cli.gallery(["identify", flag, value, "--gallery", str(work / gallery), "--images", probes, "--quiet"])

    by_ckpt = identify("--ckpt_path", ckpt, "from_ckpt.db")
    by_onnx = identify("--model", model, "from_onnx.db")
    crossed = identify("--model", model, "from_ckpt.db")  # the checkpoint's gallery accepts its export
    assert [r["name"] for r in by_ckpt] == [r["name"] for r in by_onnx] == [r["name"] for r in crossed]
    assert len(by_ckpt) == 48 and all(r["error"] == "" for r in by_onnx)
    np.testing.assert_allclose([float(r["similarity"]) for r in by_ckpt], [float(r["similarity"]) for r in by_onnx], atol=2e-4)
    args = ["--gallery", str(work / "from_onnx.db"), "--known", str(split / "known"), "--unknown", str(split / "unknown"),
            "--quiet"]
    report_ckpt = gallery_cli.gallery(["evaluate", "--ckpt_path", ckpt, *args])
    report_onnx = gallery_cli.gallery(["evaluate", "--model", model, *args])
    for key in ("identification_rate", "unknown_rejection_rate", "rank1_acc", "num_samples"):
        assert report_ckpt[key] == report_onnx[key], key
    image1, image2 = sorted((split / "known" / "person_00").iterdir())[:2]
    verdicts = [gallery_cli.gallery(["verify", flag, value, str(image1), str(image2), "--quiet"])
                for flag, value in (("--ckpt_path", ckpt), ("--model", model))]  # fmt: skip
    assert verdicts[0]["same"] == verdicts[1]["same"]
    assert verdicts[0]["similarity"] == pytest.approx(verdicts[1]["similarity"], abs=1e-5)
    capsys.readouterr()


# --------------------------------------------------------------------------------------------
# A deployment without torch
# --------------------------------------------------------------------------------------------

BLOCK_TORCH = "import sys; sys.modules['torch'] = None  # any import of torch fails\n"
HEAVY = ("torch", "torchvision", "pytorch_lightning", "PIL", "sklearn", "scipy", "albumentations")


@pytest.mark.slow
def test_the_onnx_embedder_runs_without_torch(trained: dict, exported: dict) -> None:
    files = sorted(str(p) for p in (trained["embedding"][1] / "person_01").iterdir())
    code = BLOCK_TORCH + (
        "import json\n"
        "from facetorch.inference.onnx_model import OnnxEmbedder\n"
        f"embedder = OnnxEmbedder({str(exported['embedding', 'onnx'])!r}, progress=False)\n"
        f"embeddings, used, skipped = embedder.embed_files({files!r})\n"
        f"loaded = [m for m in {HEAVY!r} if sys.modules.get(m) is not None]\n"
        "print(json.dumps({'embeddings': embeddings.tolist(), 'loaded': loaded, 'fingerprint': embedder.fingerprint}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["loaded"] == []
    embedder = Embedder(trained["embedding"][0])
    expected, _, _ = embedder.embed_files([Path(f) for f in files])
    assert result["fingerprint"] == embedder.fingerprint
    np.testing.assert_allclose(np.array(result["embeddings"]), expected, atol=1e-5)


def readme_script() -> str:
    """The onnxruntime-only script of the docs' Export page, exactly as written there."""
    text = (REPO / "docs" / "export.md").read_text(encoding="utf-8")
    found = re.search(r"```python\n(# score_face_crops\.py.*?)```", text, flags=re.DOTALL)
    assert found, "docs/export.md lost its score_face_crops.py script"
    return found.group(1)


@pytest.mark.slow
def test_the_readme_script_scores_a_folder_as_evaluate_does(trained: dict, exported: dict, work: Path) -> None:
    script = work / "score_face_crops.py"
    script.write_text(readme_script(), encoding="utf-8")
    folder = write_face_crops(work / "unseen_crops", per_class=10, seed=5)
    code = BLOCK_TORCH + (
        "import runpy\n"
        f"sys.argv = ['score_face_crops.py', {str(exported['face_vgg', 'onnx'])!r}, {str(folder)!r}]\n"
        f"runpy.run_path({str(script)!r}, run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr
    scored = json.loads(done.stdout.splitlines()[-1])
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        report = cli.evaluate(["--config", str(TINY / "face_vgg.yaml"), "--ckpt_path", str(trained["face_vgg"][0]),
                               "--data.root", str(folder), "--trainer.enable_progress_bar=false"])  # fmt: skip
    print(f"README script acc={scored['acc']:.4f} evaluate.py acc={report['acc']:.4f} on {scored['num_samples']} images")
    assert scored["num_samples"] == report["num_samples"] == 20
    assert scored["acc"] == pytest.approx(report["acc"], abs=1e-12)


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_export_benchmark_reports_ratios() -> None:
    from facetorch.bench.export import run_export as benchmark_export

    result = benchmark_export(graph_and_onnx, setups={"face_vgg": ("face_vgg.yaml", FaceClassifierTask, 2)},
                              configs=TINY, batch_size=4, steps=1, warmup=0, repeats=2)  # fmt: skip
    for key in ("onnxruntime_vs_fp32", "onnxruntime_vs_bf16", "bf16_vs_fp32", "onnxruntime_img_s"):
        assert result[f"face_vgg_{key}"] > 0
    assert result["face_vgg_onnxruntime_max_abs_diff"] < PARITY_BOUND
    with pytest.raises(ValueError, match="Unknown export benchmark tasks"):
        benchmark_export(graph_and_onnx, tasks=["nope"])
