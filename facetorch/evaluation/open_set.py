"""Open-set identification against a gallery: each probe has its best match and score; FPIR thresholds, DIR."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from facetorch.evaluation._arrays import _to_numpy, _vector


def _id_list(ids: Any, name: str) -> list[Any]:
    """Identities as a plain list (ints, strings or None), from a list, array or tensor."""
    if hasattr(ids, "detach"):
        return _to_numpy(ids, name).tolist()
    return list(ids)


def _open_set_inputs(
    probe_best_scores: Any, probe_pred_ids: Any, probe_true_ids: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (scores, correctly identified, unknown) arrays for the probes."""
    s = _vector(probe_best_scores, "probe_best_scores")
    pred = _id_list(probe_pred_ids, "probe_pred_ids")
    true = _id_list(probe_true_ids, "probe_true_ids")
    if not len(s) == len(pred) == len(true):
        raise ValueError(
            "expected one score, predicted id and true id per probe, "
            f"got {len(s)} scores, {len(pred)} predicted ids, {len(true)} true ids"
        )
    # Unknown: None or -1 (a string id "-1" is a name, not the marker).
    unknown = np.array(
        [t is None or (not isinstance(t, str) and t == -1) for t in true], dtype=bool
    )
    correct = np.array(
        [not u and p == t for p, t, u in zip(pred, true, unknown, strict=True)], dtype=bool
    )
    return s, correct, unknown


def fpir_threshold(unknown_scores: Any, fpir: float) -> float:
    """The lowest threshold at which at most ``fpir`` of the unknown probes are accepted.

    The rule is ``score >= threshold`` accepts.
    """
    u = np.sort(_vector(unknown_scores, "unknown_scores"))[::-1]
    if len(u) == 0:
        raise ValueError("unknown_scores: expected at least one unknown probe, got none")
    allowed = math.floor(fpir * len(u) + 1e-9)  # false accepts allowed
    if allowed >= len(u):
        return float(u[-1])
    # Just above the (allowed+1)-th highest unknown score; ties there are rejected as well.
    return float(np.nextafter(u[allowed], np.inf))


def open_set_metrics(
    probe_best_scores: Any, probe_pred_ids: Any, probe_true_ids: Any, threshold: float
) -> dict[str, float]:
    """Open-set identification at a fixed acceptance threshold (``score >= threshold`` accepts).

    Args:
        probe_best_scores: (N,) similarity of each probe to its best gallery identity.
        probe_pred_ids: (N,) that best identity.
        probe_true_ids: (N,) the true identity; None or -1 for a person not in the gallery.
        threshold: acceptance threshold.

    Returns:
        ``identification_rate`` (known probes accepted with the right identity),
        ``unknown_rejection_rate`` (unknown probes rejected), ``false_positive_identification_rate``
        (unknown probes accepted), ``num_known``, ``num_unknown``, ``num_samples``. Rates over an
        empty group are NaN.
    """
    s, correct, unknown = _open_set_inputs(probe_best_scores, probe_pred_ids, probe_true_ids)
    accepted = s >= threshold
    known = ~unknown
    return {
        "identification_rate": _share(correct & accepted, known),
        "unknown_rejection_rate": _share(~accepted, unknown),
        "false_positive_identification_rate": _share(accepted, unknown),
        "num_known": int(known.sum()),
        "num_unknown": int(unknown.sum()),
        "num_samples": len(s),
    }


def _share(hits: np.ndarray, among: np.ndarray) -> float:
    """Share of True in ``hits`` over the samples where ``among`` is True; NaN if none."""
    return float(np.mean(hits[among])) if among.any() else float("nan")


def dir_at_fpir(
    probe_best_scores: Any, probe_pred_ids: Any, probe_true_ids: Any, fpir: float
) -> float:
    """Detection and identification rate at a false positive identification rate.

    The threshold is :func:`fpir_threshold` of the unknown probes' scores; DIR is the share of
    known probes accepted at it with the right identity.
    """
    s, correct, unknown = _open_set_inputs(probe_best_scores, probe_pred_ids, probe_true_ids)
    if unknown.all():
        raise ValueError("probe_true_ids: expected at least one known probe, got only unknown ones")
    threshold = fpir_threshold(s[unknown], fpir)
    known = ~unknown
    return float(np.mean(correct[known] & (s[known] >= threshold)))
