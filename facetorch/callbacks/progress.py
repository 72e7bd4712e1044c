"""StderrProgressBar: Lightning's tqdm progress bars on stderr, where progress belongs, not on stdout.

Lightning's ``TQDMProgressBar`` writes to stdout, so a piped ``train.py | tail`` or
``evaluate.py > m.txt`` collects lines of carriage returns between the results. facetorch's
command lines use this bar instead when stderr is a terminal, and no bar at all otherwise.
"""

from __future__ import annotations

import sys
from contextlib import redirect_stdout
from typing import Any

from pytorch_lightning.callbacks import TQDMProgressBar

__all__ = ["StderrProgressBar"]


class StderrProgressBar(TQDMProgressBar):
    """``TQDMProgressBar`` whose bars are drawn on stderr.

    Each bar is made while stdout points at stderr: Lightning's bars take ``file=sys.stdout`` when
    they are made, and keep that file.
    """

    def init_sanity_tqdm(self) -> Any:  # noqa: D102
        with redirect_stdout(sys.stderr):
            return super().init_sanity_tqdm()

    def init_train_tqdm(self) -> Any:  # noqa: D102
        with redirect_stdout(sys.stderr):
            return super().init_train_tqdm()

    def init_validation_tqdm(self) -> Any:  # noqa: D102
        with redirect_stdout(sys.stderr):
            return super().init_validation_tqdm()

    def init_test_tqdm(self) -> Any:  # noqa: D102
        with redirect_stdout(sys.stderr):
            return super().init_test_tqdm()

    def init_predict_tqdm(self) -> Any:  # noqa: D102
        with redirect_stdout(sys.stderr):
            return super().init_predict_tqdm()
