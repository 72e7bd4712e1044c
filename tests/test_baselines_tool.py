"""tools/baselines.py scores classical methods on the DataModule's own split."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from facetorch.cli.baselines import baselines
from tests.conftest import REPO, write_identity_folders


def load_tool() -> SimpleNamespace:
    """tools/baselines.py as a function of argv."""
    return SimpleNamespace(main=baselines)


def test_face_crops_baselines_on_the_model_split(face_crops_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "baselines.json"
    reports = load_tool().main(["--config", str(REPO / "configs" / "face_vgg.yaml"), "--data.root", str(face_crops_dir),
                                "--output", str(output)])
    assert [r["method"] for r in reports] == ["hog_svm", "haar"]
    hog = reports[0]
    assert hog["num_samples"] == 4  # 15% of 12 crops per class, rounded: 2 faces + 2 non-faces
    assert hog["acc"] >= 0.75 and 0.0 <= hog["auc"] <= 1.0
    assert output.is_file()


def test_identity_baselines(tmp_path: Path) -> None:
    root = write_identity_folders(tmp_path / "ids", identities=6, per_identity=6)
    reports = load_tool().main(["--data.root", str(root), "--data.layout", "identity_folders",
                                "--data.test_fraction", "0.34", "--data.val_fraction", "0.0"])
    assert {r["method"] for r in reports} == {"eigenfaces_svm", "lbp_nn"}
    for report in reports:
        assert report["num_samples"] == 12 and report["acc"] >= 0.8 and report["top5_acc"] >= report["acc"]


def test_a_method_that_does_not_fit_the_layout_is_refused(face_crops_dir: Path) -> None:
    with pytest.raises(ValueError, match="does not apply to layout 'face_crops'"):
        load_tool().main(["--data.root", str(face_crops_dir), "--method", "lbp_nn"])


def test_baselines_score_a_held_out_folder(face_crops_dir: Path, tmp_path: Path) -> None:
    from tests.conftest import write_face_crops

    other = write_face_crops(tmp_path / "other", per_class=5, seed=7)
    (report,) = load_tool().main(["--data.root", str(face_crops_dir), "--method", "hog_svm", "--test_root", str(other)])
    assert report["num_samples"] == 10
