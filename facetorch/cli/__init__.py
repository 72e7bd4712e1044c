"""Every command line of facetorch. ``tools/*.py`` are one-line shims onto these modules.

- ``facetorch fit|validate|test|predict`` and ``tools/train.py`` / ``tools/evaluate.py``:
  :mod:`facetorch.cli.lightning` (``LightningCLI``);
- ``tools/explain.py``: :mod:`facetorch.cli.explain`; ``tools/gallery.py``: :mod:`facetorch.cli.gallery`;
  ``tools/detect.py``: :mod:`facetorch.cli.detect`; ``tools/baselines.py``: :mod:`facetorch.cli.baselines`;
  ``tools/benchmark.py``: :mod:`facetorch.cli.benchmark`; ``tools/prepare_crops.py``:
  :mod:`facetorch.cli.prepare_crops`; ``tools/export.py``: :mod:`facetorch.cli.export`.

Every tool takes ``--ckpt_path`` (where it reads a checkpoint), ``--output`` and ``--overwrite``
(a plain flag: without it an existing, non-empty output is refused before any work starts),
and flags spelled with underscores. Input errors end the tool with one line on stderr and exit
code 2 (``FACETORCH_DEBUG=1`` shows the traceback).
"""

from facetorch.cli.lightning import EvaluateCLI, FaceCLI, TrainCLI, evaluate, main, train

__all__ = ["EvaluateCLI", "FaceCLI", "TrainCLI", "evaluate", "main", "train"]
