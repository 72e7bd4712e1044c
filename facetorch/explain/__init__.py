"""Explanations: Grad-CAM, Guided Backprop and Guided Grad-CAM, their pictures, and the detector's check.

``gradcam`` holds the methods, ``render`` writes them as PNG files, ``detector`` checks that
the detector looks at the face.

The core context managers work on any ``nn.Module``::

    from facetorch.explain import GradCAM, ClassTarget

    with GradCAM(model, "layer4") as cam:
        heat = cam(images, ClassTarget(1))  # (B, H, W) in [0, 1]
"""

from facetorch.explain.detector import peak_in_box, peak_in_box_report
from facetorch.explain.gradcam import (
    ClassTarget,
    DetectorTarget,
    DissimilarityTarget,
    GradCAM,
    GuidedBackprop,
    GuidedGradCAM,
    NextSampleSimilarity,
    PredictedClassTarget,
    SimilarityTarget,
    Target,
    normalize_guided,
    overlay_heatmap,
)
from facetorch.explain.render import explain_batch, load_images, render_explanations, write_explanations

__all__ = [
    "ClassTarget",
    "DetectorTarget",
    "DissimilarityTarget",
    "GradCAM",
    "GuidedBackprop",
    "GuidedGradCAM",
    "NextSampleSimilarity",
    "PredictedClassTarget",
    "SimilarityTarget",
    "Target",
    "explain_batch",
    "load_images",
    "normalize_guided",
    "overlay_heatmap",
    "peak_in_box",
    "peak_in_box_report",
    "render_explanations",
    "write_explanations",
]
