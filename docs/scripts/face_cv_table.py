"""The cross-validation tables of docs/results.md (face / non-face): each fold's test crops, scored again.

Usage (from the repository root, after the cross-validation commands of docs/results.md)::

    python docs/scripts/face_cv_table.py runs/cv final15 [RECIPE ...] [--checkpoint best|last]

For each recipe ``R`` and fold ``I`` (0, 1, 2) it loads ``runs/cv/R_I/face_vgg/version_0/checkpoints/best.ckpt``
(or ``last.ckpt``),
scores the ``test/`` crops of the folder that run trained on (its ``config.yaml``'s ``data.root``), and
prints one markdown row per recipe: accuracy (face probability >= 0.5 is a face), AUC, missed faces and
false faces per fold, and the mean and sample standard deviation over the folds. The accuracy and AUC
of ``best.ckpt`` equal the run's own ``metrics.json`` (checked: the script stops if they differ by more
than 0.002, the bf16 autocast of training's test against float32 here).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from sklearn.metrics import roc_auc_score

from facetorch.data.images import read_image
from facetorch.inference.checkpoint import load_task
from facetorch.tasks import FaceClassifierTask

FOLDS = (0, 1, 2)


def fold_scores(run: Path, checkpoint: str = "best") -> dict[str, Any]:
    """One fold's run folder -> its test crops' face probabilities, labels and the run's own metrics."""
    loaded = load_task(run / "checkpoints" / f"{checkpoint}.ckpt", FaceClassifierTask, "cpu")
    root = Path(yaml.safe_load((run / "config.yaml").read_text())["data"]["root"])
    face = list(loaded.task.class_names).index("face")
    scores, labels = [], []
    for label, folder in ((1, "face"), (0, "non_face")):
        files = sorted((root / "test" / folder).iterdir())
        images = torch.stack([loaded.transform(read_image(f, loaded.input.channels)) for f in files])
        with torch.inference_mode():
            scores.append(loaded.task(images).float().softmax(dim=1)[:, face].numpy())
        labels.append(np.full(len(files), label))
    return {"scores": np.concatenate(scores), "labels": np.concatenate(labels),
            "metrics": json.loads((run / "metrics.json").read_text())}  # fmt: skip


def recipe_row(cv: Path, recipe: str, checkpoint: str = "best") -> str:
    """The markdown row of one recipe over the three folds."""
    accs, aucs, errors = [], [], []
    for fold in FOLDS:
        result = fold_scores(cv / f"{recipe}_{fold}" / "face_vgg" / "version_0", checkpoint)
        scores, labels = result["scores"], result["labels"]
        predicted = scores >= 0.5
        acc, auc = float((predicted == labels.astype(bool)).mean()), float(roc_auc_score(labels, scores))
        own = result["metrics"]
        if checkpoint == "best" and (abs(acc - own["acc"]) > 0.002 or abs(auc - own["auc"]) > 0.002):
            sys.exit(f"{recipe} fold {fold}: acc {acc:.4f} / AUC {auc:.4f} here, {own['acc']:.4f} / {own['auc']:.4f} "
                     "in its metrics.json: the crops or the checkpoint changed since it ran")  # fmt: skip
        missed = int((~predicted & (labels == 1)).sum())
        false = int((predicted & (labels == 0)).sum())
        accs.append(acc), aucs.append(auc), errors.append(f"{missed} / {false}")
    per_fold = " / ".join
    return (f"| {recipe} ({checkpoint}.ckpt) | {per_fold(f'{a:.3f}' for a in accs)} "
            f"| {np.mean(accs):.3f} ± {np.std(accs, ddof=1):.3f} "
            f"| {per_fold(f'{a:.4f}' for a in aucs)} | {np.mean(aucs):.4f} ± {np.std(aucs, ddof=1):.4f} "
            f"| {' · '.join(errors)} |")  # fmt: skip


def main(cv: str, recipes: list[str], checkpoint: str = "best") -> None:
    """Print the table of ``recipes`` (run folders ``cv/RECIPE_FOLD``), each scored with its ``checkpoint``."""
    print("| recipe | acc per fold | acc mean ± sd | AUC per fold | AUC mean ± sd | missed / false faces per fold |")
    print("| --- | --- | --- | --- | --- | --- |")
    for recipe in recipes:
        print(recipe_row(Path(cv), recipe, checkpoint), flush=True)


if __name__ == "__main__":
    arguments = sys.argv[1:]
    which = "best"
    if "--checkpoint" in arguments:
        at = arguments.index("--checkpoint")
        which = arguments[at + 1] if at + 1 < len(arguments) else ""
        del arguments[at : at + 2]
    if len(arguments) < 2 or which not in ("best", "last"):
        sys.exit("usage: python docs/scripts/face_cv_table.py CV_FOLDER RECIPE [RECIPE ...] [--checkpoint best|last]")
    main(arguments[0], arguments[1:], which)
