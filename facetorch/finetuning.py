"""Deprecated location of :class:`~facetorch.callbacks.FreezeUnfreeze`; use ``facetorch.callbacks``.

Kept so that configs and saved ``config.yaml`` files naming ``facetorch.finetuning.FreezeUnfreeze``
still run.
"""

import warnings

from facetorch.callbacks.freeze_unfreeze import FreezeUnfreeze

__all__ = ["FreezeUnfreeze"]

warnings.warn(
    "facetorch.finetuning is deprecated: use facetorch.callbacks.FreezeUnfreeze "
    "(class_path: facetorch.callbacks.FreezeUnfreeze in configs)",
    DeprecationWarning,
    stacklevel=2,
)
