"""OpenFace nn4.small2: the published network, the Keras-OpenFace weight files, the original schedule.

The real weight files are not on this machine: the loader is tested on generated files with the
names and shapes of Keras-OpenFace's ``weights/`` folder (the lists below are that project's).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from facetorch import cli
from facetorch.callbacks import FreezeStages
from facetorch.data import FaceDataModule
from facetorch.inference.checkpoint import load_task
from facetorch.models import PretrainedWeightsError, build_backbone
from facetorch.models.embedding import EmbeddingNet
from facetorch.models.openface import (
    NUM_PARAMETERS,
    L2Pool2d,
    OpenFaceNN4Small2,
    _read_csv_tensor,
    keras_openface_files,
    read_keras_openface_weights,
)
from facetorch.tasks import EmbeddingTask
from tests.conftest import REPO, write_identity_folders

CONFIG = REPO / "configs" / "embedding_openface.yaml"

# Keras-OpenFace utils.py: the layers its weights/ folder holds, and the conv shapes (out, in, kh, kw).
KERAS_LAYERS = [
    "conv1", "bn1", "conv2", "bn2", "conv3", "bn3",
    "inception_3a_1x1_conv", "inception_3a_1x1_bn", "inception_3a_pool_conv", "inception_3a_pool_bn",
    "inception_3a_5x5_conv1", "inception_3a_5x5_conv2", "inception_3a_5x5_bn1", "inception_3a_5x5_bn2",
    "inception_3a_3x3_conv1", "inception_3a_3x3_conv2", "inception_3a_3x3_bn1", "inception_3a_3x3_bn2",
    "inception_3b_3x3_conv1", "inception_3b_3x3_conv2", "inception_3b_3x3_bn1", "inception_3b_3x3_bn2",
    "inception_3b_5x5_conv1", "inception_3b_5x5_conv2", "inception_3b_5x5_bn1", "inception_3b_5x5_bn2",
    "inception_3b_pool_conv", "inception_3b_pool_bn", "inception_3b_1x1_conv", "inception_3b_1x1_bn",
    "inception_3c_3x3_conv1", "inception_3c_3x3_conv2", "inception_3c_3x3_bn1", "inception_3c_3x3_bn2",
    "inception_3c_5x5_conv1", "inception_3c_5x5_conv2", "inception_3c_5x5_bn1", "inception_3c_5x5_bn2",
    "inception_4a_3x3_conv1", "inception_4a_3x3_conv2", "inception_4a_3x3_bn1", "inception_4a_3x3_bn2",
    "inception_4a_5x5_conv1", "inception_4a_5x5_conv2", "inception_4a_5x5_bn1", "inception_4a_5x5_bn2",
    "inception_4a_pool_conv", "inception_4a_pool_bn", "inception_4a_1x1_conv", "inception_4a_1x1_bn",
    "inception_4e_3x3_conv1", "inception_4e_3x3_conv2", "inception_4e_3x3_bn1", "inception_4e_3x3_bn2",
    "inception_4e_5x5_conv1", "inception_4e_5x5_conv2", "inception_4e_5x5_bn1", "inception_4e_5x5_bn2",
    "inception_5a_3x3_conv1", "inception_5a_3x3_conv2", "inception_5a_3x3_bn1", "inception_5a_3x3_bn2",
    "inception_5a_pool_conv", "inception_5a_pool_bn", "inception_5a_1x1_conv", "inception_5a_1x1_bn",
    "inception_5b_3x3_conv1", "inception_5b_3x3_conv2", "inception_5b_3x3_bn1", "inception_5b_3x3_bn2",
    "inception_5b_pool_conv", "inception_5b_pool_bn", "inception_5b_1x1_conv", "inception_5b_1x1_bn",
    "dense",
]  # fmt: skip
KERAS_CONV_SHAPES = {
    "conv1": (64, 3, 7, 7), "conv2": (64, 64, 1, 1), "conv3": (192, 64, 3, 3),
    "inception_3a_1x1_conv": (64, 192, 1, 1), "inception_3a_pool_conv": (32, 192, 1, 1),
    "inception_3a_5x5_conv1": (16, 192, 1, 1), "inception_3a_5x5_conv2": (32, 16, 5, 5),
    "inception_3a_3x3_conv1": (96, 192, 1, 1), "inception_3a_3x3_conv2": (128, 96, 3, 3),
    "inception_3b_3x3_conv1": (96, 256, 1, 1), "inception_3b_3x3_conv2": (128, 96, 3, 3),
    "inception_3b_5x5_conv1": (32, 256, 1, 1), "inception_3b_5x5_conv2": (64, 32, 5, 5),
    "inception_3b_pool_conv": (64, 256, 1, 1), "inception_3b_1x1_conv": (64, 256, 1, 1),
    "inception_3c_3x3_conv1": (128, 320, 1, 1), "inception_3c_3x3_conv2": (256, 128, 3, 3),
    "inception_3c_5x5_conv1": (32, 320, 1, 1), "inception_3c_5x5_conv2": (64, 32, 5, 5),
    "inception_4a_3x3_conv1": (96, 640, 1, 1), "inception_4a_3x3_conv2": (192, 96, 3, 3),
    "inception_4a_5x5_conv1": (32, 640, 1, 1), "inception_4a_5x5_conv2": (64, 32, 5, 5),
    "inception_4a_pool_conv": (128, 640, 1, 1), "inception_4a_1x1_conv": (256, 640, 1, 1),
    "inception_4e_3x3_conv1": (160, 640, 1, 1), "inception_4e_3x3_conv2": (256, 160, 3, 3),
    "inception_4e_5x5_conv1": (64, 640, 1, 1), "inception_4e_5x5_conv2": (128, 64, 5, 5),
    "inception_5a_3x3_conv1": (96, 1024, 1, 1), "inception_5a_3x3_conv2": (384, 96, 3, 3),
    "inception_5a_pool_conv": (96, 1024, 1, 1), "inception_5a_1x1_conv": (256, 1024, 1, 1),
    "inception_5b_3x3_conv1": (96, 736, 1, 1), "inception_5b_3x3_conv2": (384, 96, 3, 3),
    "inception_5b_pool_conv": (96, 736, 1, 1), "inception_5b_1x1_conv": (256, 736, 1, 1),
}  # fmt: skip
STRAY_FILES = ("inception_5a_3x3_conv2_m.csv", "inception_5a_3x3_conv2_v.csv")  # in the released folder too


def write_keras_openface_folder(folder: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """Write every CSV file of a Keras-OpenFace weights/ folder (values with 4 decimals); return the tensors."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    expected: dict[str, torch.Tensor] = {}
    for name, (key, shape) in keras_openface_files().items():
        count = math.prod(shape)
        if key.endswith("running_var"):
            values = rng.uniform(0.5, 1.5, count)
        elif key.endswith(("bn.weight", "bn1.weight", "bn2.weight", "bn3.weight")):
            values = rng.uniform(0.5, 1.5, count)
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 64
            values = rng.uniform(-1, 1, count) * (3.0 / fan_in) ** 0.5
        values = np.round(values, 4)
        (folder / name).write_text(",".join(map(str, values.tolist())))
        expected[key] = torch.from_numpy(values.astype(np.float32).reshape(shape))
    for name in STRAY_FILES:
        (folder / name).write_text(",".join(["0.5"] * 96))
    return expected


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    folder = tmp_path_factory.mktemp("openface") / "weights"
    return folder, write_keras_openface_folder(folder)


# ------------------------------------------------------------------------------ the network
def test_the_whole_network_has_openfaces_parameter_count() -> None:
    backbone, width = build_backbone("openface_nn4_small2")
    net = EmbeddingNet(backbone, width, embedding_dim=128, dropout=0.0)
    assert width == 736
    assert sum(p.numel() for p in net.parameters()) == NUM_PARAMETERS == 3_733_968
    net.eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 96, 96) * 2 - 1)
        features = backbone(torch.zeros(2, 3, 96, 96))
    assert out.shape == (2, 128) and torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    assert features.shape == (2, 736, 3, 3)
    assert dict(backbone.named_modules())[backbone.cam_layer] is backbone.inception_5b


def test_lrn_after_the_first_convs_and_l2_pooling_in_3b_4a_5a() -> None:
    model = OpenFaceNN4Small2().eval()
    stem = [type(m).__name__ for m in model.stem]
    assert stem == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "LocalResponseNorm", "Conv2d", "BatchNorm2d", "ReLU",
                    "Conv2d", "BatchNorm2d", "ReLU", "LocalResponseNorm", "MaxPool2d"]  # fmt: skip
    lrn = model.stem.lrn1
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 1.0)
    blocks = ("3a", "3b", "3c", "4a", "4e", "5a", "5b")
    pools = {block: model.get_submodule(f"inception_{block}").branch_pool.pool for block in blocks}
    assert {b for b, pool in pools.items() if isinstance(pool, L2Pool2d)} == {"3b", "4a", "5a"}
    assert all(isinstance(pools[b], nn.MaxPool2d) and pools[b].stride == 2 for b in ("3a", "3c", "4e", "5b"))
    # Block outputs at 96x96: channels and sizes of the trained network.
    shapes, x = [], torch.zeros(1, 3, 96, 96)
    x = model.stem(x)
    for name in ("inception_3a", "inception_3b", "inception_3c", "inception_4a", "inception_4e", "inception_5a", "inception_5b"):
        x = model.get_submodule(name)(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(256, 12, 12), (320, 12, 12), (640, 6, 6), (640, 6, 6), (1024, 3, 3), (736, 3, 3), (736, 3, 3)]


def test_l2_pool_is_the_root_of_the_sum_of_squares_and_the_pool_column_is_centred() -> None:
    x = torch.randn(2, 4, 12, 12)
    windows = x.unfold(2, 3, 3).unfold(3, 3, 3)  # (2, 4, 4, 4, 3, 3)
    assert torch.allclose(L2Pool2d(3, 3)(x), windows.square().sum(dim=(-1, -2)).sqrt(), atol=1e-6)
    zeros = torch.zeros(1, 1, 6, 6, requires_grad=True)
    L2Pool2d(3, 3)(zeros).sum().backward()
    assert torch.isfinite(zeros.grad).all()  # no infinite gradient at 0
    # 3a's max-pool column (12 -> 5) sits in rows / columns 3..7 of the 12x12 block, zeros around it.
    model = OpenFaceNN4Small2().eval()
    block = model.inception_3a
    with torch.no_grad():
        block.branch_pool.proj.conv.weight.zero_()
        block.branch_pool.proj.bn.bias.fill_(1.0)  # the column is 1 wherever it has values
        out = block(torch.randn(1, 192, 12, 12))
    pool_channels = out[0, 128 + 32 : 128 + 32 + 32]
    inside = torch.zeros(12, 12, dtype=torch.bool)
    inside[3:8, 3:8] = True
    assert (pool_channels[:, inside] > 0).all() and (pool_channels[:, ~inside] == 0).all()


def test_small_inputs_and_four_channels_are_clear_errors() -> None:
    backbone, _ = build_backbone("openface_nn4_small2", in_channels=1)
    assert backbone.eval()(torch.zeros(1, 1, 65, 65)).shape[1:] == (736, 3, 3)
    with pytest.raises(ValueError, match="at least 65x65"):
        backbone(torch.zeros(1, 1, 64, 96))
    with pytest.raises(ValueError, match="in_channels 1 or 3"):
        build_backbone("openface_nn4_small2", in_channels=4)


# ------------------------------------------------------------------------------ the weight files
def test_the_files_are_keras_openfaces() -> None:
    files = keras_openface_files()
    stems = {name.rsplit("_", 1)[0] for name in files}
    assert stems == set(KERAS_LAYERS)
    assert len(files) == 224  # the released folder's 226 files less the two stray copies
    for layer, shape in KERAS_CONV_SHAPES.items():
        assert files[f"{layer}_w.csv"][1] == shape and files[f"{layer}_b.csv"][1] == shape[:1]
    assert files["dense_w.csv"] == ("dense.weight", (128, 736)) and files["dense_b.csv"] == ("dense.bias", (128,))
    assert files["bn1_m.csv"] == ("stem.bn1.running_mean", (64,)) and files["bn3_v.csv"] == ("stem.bn3.running_var", (192,))
    assert files["inception_5a_pool_bn_w.csv"] == ("inception_5a.branch_pool.proj.bn.weight", (96,))


def test_the_reader_loads_every_tensor_where_it_belongs(weights: tuple[Path, dict[str, torch.Tensor]]) -> None:
    folder, expected = weights
    # Through the registry (one read of the folder): the backbone gets the convs and batch norms,
    # the head the dense layer.
    backbone, width = build_backbone("openface_nn4_small2", weights_path=str(folder))
    net = EmbeddingNet(backbone, width, 128, dropout=0.0).eval()
    assert backbone.pretrained_embedding is None  # taken by the head
    state = backbone.state_dict()
    assert set(expected) == {k for k in state if not k.endswith("num_batches_tracked")} | {"dense.weight", "dense.bias"}
    for key, value in expected.items():
        loaded = net.head.embedding.get_parameter(key.split(".")[1]) if key.startswith("dense.") else state[key]
        assert torch.equal(loaded, value), key
    images = torch.rand(2, 3, 96, 96) * 2 - 1
    with torch.no_grad():
        dense = backbone(images).mean(dim=(2, 3)) @ expected["dense.weight"].T + expected["dense.bias"]
        assert torch.allclose(net(images), torch.nn.functional.normalize(dense, dim=1), atol=1e-5)


def test_a_state_dict_file_works_too_and_grey_input_sums_the_colours(
    weights: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    _, expected = weights
    path = tmp_path / "openface.pt"
    torch.save(expected, path)  # what torch.save(read_keras_openface_weights(folder)) writes, less the counters
    grey, width = build_backbone("openface_nn4_small2", in_channels=1, weights_path=str(path))
    assert torch.allclose(grey.stem.conv1.weight, expected["stem.conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(grey.inception_5b.branch1x1.bn.running_var, expected["inception_5b.branch1x1.bn.running_var"])
    net = EmbeddingNet(grey, width, 128)
    assert torch.equal(net.head.embedding.bias, expected["dense.bias"])


def test_missing_and_broken_files_are_named(weights: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path) -> None:
    folder, _ = weights
    with pytest.raises(FileNotFoundError, match="does not exist: download the weights/ folder of https://github.com/iwantooxxoox"):
        read_keras_openface_weights(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in folder.iterdir():
        if path.name != "bn2_v.csv":
            (broken / path.name).symlink_to(path)
    with pytest.raises(FileNotFoundError, match=r"lacks 1 of its 224 CSV files: bn2_v\.csv\. Expected the complete"):
        read_keras_openface_weights(broken)
    # The reader stops at the first bad file; bn2_v comes early, so these stay quick.
    (broken / "bn2_v.csv").write_text("0.1,0.2,0.3")
    with pytest.raises(ValueError, match=r"bn2_v\.csv' holds 3 values; stem\.bn2\.running_var of shape \(64,\) needs 64"):
        read_keras_openface_weights(broken)
    (broken / "bn2_v.csv").write_text(",".join(["0.1"] * 63 + ["abc"]))
    with pytest.raises(ValueError, match="bn2_v.csv' must hold comma-separated numbers for stem.bn2.running_var"):
        read_keras_openface_weights(broken)
    (broken / "bn2_v.csv").write_text("\n")
    with pytest.raises(ValueError, match="holds 0 values"):
        read_keras_openface_weights(broken)
    (broken / "bn2_v.csv").write_text(",".join(["0.1"] * 32) + "\n" + ",".join(["0.2"] * 32) + "\n")
    values = _read_csv_tensor(broken / "bn2_v.csv", "stem.bn2.running_var", (64,))  # several lines still read
    assert values.shape == (64,) and values[0] == np.float32(0.1) and values[-1] == np.float32(0.2)


def test_pretrained_needs_the_folder_and_the_head_must_fit(weights: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path) -> None:
    with pytest.raises(PretrainedWeightsError, match="weights_path=FOLDER, the weights/ folder of Keras-OpenFace"):
        build_backbone("openface_nn4_small2", pretrained=True)
    torch.save(weights[1], tmp_path / "openface.pt")
    backbone, width = build_backbone("openface_nn4_small2", weights_path=str(tmp_path / "openface.pt"))
    with pytest.raises(ValueError, match="maps 736 features to 128; this head maps 736 to 64: set model.embedding_dim=128"):
        EmbeddingNet(backbone, width, embedding_dim=64)


# ------------------------------------------------------------------------------ freezing stages
def test_freeze_stages_keeps_the_first_stages_and_their_batch_norm_statistics(identity_dir: Path, tmp_path: Path) -> None:
    pl.seed_everything(0)
    data = FaceDataModule(str(identity_dir), layout="identity_folders", image_size=(24, 24), batch_size=8,
                          split_by="identity", val_fraction=0.34, train_batches="pk", identities_per_batch=2,
                          images_per_identity=2, batches_per_epoch=3)  # fmt: skip
    task = EmbeddingTask(num_classes=data.num_classes, in_channels=1, backbone="tiny", embedding_dim=8, lr=0.01)
    before = {k: v.clone() for k, v in task.model.backbone.state_dict().items()}
    trainer = pl.Trainer(max_epochs=2, callbacks=[FreezeStages(up_to="layer1")], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(task, datamodule=data)
    after = task.model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("layer1."))  # running stats included
    assert not torch.equal(before["layer2.0.weight"], after["layer2.0.weight"])
    assert not torch.equal(before["layer2.1.running_mean"], after["layer2.1.running_mean"])
    assert not any(p.requires_grad for p in task.model.backbone.layer1.parameters())
    with pytest.raises(ValueError, match=r"up_to='layer9' is not a stage of backbone TinyFeatures; its stages are \['layer1', "):
        FreezeStages(up_to="layer9").frozen_stages(task.model.backbone)


@pytest.mark.slow
def test_the_original_schedule_trains_5a_5b_and_the_dense_layer_and_reloads_without_the_files(
    weights: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, expected = weights
    local = tmp_path / "openface_weights"
    shutil.copytree(folder, local)  # the config's own weights_path, relative to the working folder
    people = write_identity_folders(tmp_path / "ids", identities=6, size=(40, 40))
    monkeypatch.chdir(tmp_path)
    cli.train(["--config", str(CONFIG), "--data.root", str(people), "--trainer.max_epochs=1", "--data.image_size=[72,72]",
               "--data.val_fraction=0.34", "--data.identities_per_batch=2", "--data.images_per_identity=2",
               "--data.batches_per_epoch=2", "--model.init_args.lr=0.01", "--trainer.enable_progress_bar=false"])  # fmt: skip
    ckpt = tmp_path / "runs" / "embedding_openface" / "version_0" / "checkpoints" / "best.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    prefix = "model.backbone."
    for key, value in expected.items():
        if key.startswith("dense."):
            continue
        frozen = key.split(".")[0] not in ("inception_5a", "inception_5b")
        assert torch.equal(state[prefix + key], value) == frozen, key
    assert not torch.equal(state["model.head.embedding.weight"], expected["dense.weight"])  # trained
    shutil.rmtree(local)  # restoring never reads the weight files
    loaded = load_task(ckpt, EmbeddingTask)
    assert loaded.task.hparams.backbone == "openface_nn4_small2" and tuple(loaded.input.image_size) == (72, 72)
    with torch.no_grad():
        embeddings = loaded.task(torch.zeros(2, 3, 72, 72))
    assert embeddings.shape == (2, 128)
