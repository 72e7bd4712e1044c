"""Classical baselines and their runs on the same splits a model gets.

``classical`` holds the methods (HOG + SVM, eigenfaces, LBP), ``runs`` fits and scores them.
"""

from facetorch.baselines.classical import (
    EigenfaceEmbedder,
    EigenfacesSvm,
    HogSvmClassifier,
    LbpNearestNeighbour,
    chi_square_distances,
)
from facetorch.baselines.runs import METHODS_BY_LAYOUT, VERIFICATION_METHODS, run_baseline, run_verification_baseline

__all__ = [
    "METHODS_BY_LAYOUT",
    "VERIFICATION_METHODS",
    "EigenfaceEmbedder",
    "EigenfacesSvm",
    "HogSvmClassifier",
    "LbpNearestNeighbour",
    "chi_square_distances",
    "run_baseline",
    "run_verification_baseline",
]
