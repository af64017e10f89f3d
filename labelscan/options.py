"""The algorithm options of a scan (cleanlab's ``find_label_issues`` arguments), validated."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from labelscan.errors import UsageError

FILTERS = (
    "prune_by_noise_rate",
    "prune_by_class",
    "both",
    "confident_learning",
    "predicted_neq_given",
    "low_normalized_margin",
    "low_self_confidence",
)
PRUNING_FILTERS = ("prune_by_noise_rate", "prune_by_class", "both")
LOW_SCORE_FILTERS = ("low_self_confidence", "low_normalized_margin")
NOISE_RATE_FILTERS = ("prune_by_noise_rate", "both")
RANK_METHODS = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")


@dataclass(frozen=True)
class ScanOptions:
    """Options of the Confident Learning filter and of the ranking.

    Attributes
    ----------
    filter_by : str
        One of :data:`FILTERS` (default ``'prune_by_noise_rate'``).
    frac_noise : float
        Fraction of the estimated issues to return (pruning filters).
    num_to_remove_per_class : tuple of int or None, length K
        Rows to remove per class (pruning filters).
    min_examples_per_class : int
        Rows to keep in every class (pruning filters).
    rank_by : str
        Label-quality score that ranks the issues (:data:`RANK_METHODS`).
    adjust_pred_probs : bool
        Subtract the confident thresholds before scoring.
    confident_joint : tuple or None
        A user-supplied (K, K) confident joint for the pruning filters, used as is.
    tie_break : {"stable", "numpy"}
        Order of equal remainders when the calibrated confident joint is rounded (K-length
        rounding on the driver). ``"stable"`` (default) is the canonical, machine-independent
        rule; ``"numpy"`` uses numpy's default sort like stock cleanlab, which then gives stock
        cleanlab's answer on the same machine. Row-level ties always go to the lower row.
    """

    filter_by: str = "prune_by_noise_rate"
    frac_noise: float = 1.0
    num_to_remove_per_class: tuple | None = None
    min_examples_per_class: int = 1
    rank_by: str = "self_confidence"
    adjust_pred_probs: bool = False
    confident_joint: tuple | None = None
    tie_break: str = "stable"

    def __post_init__(self):
        if self.tie_break not in ("stable", "numpy"):
            raise UsageError(f"tie_break must be 'stable' or 'numpy'; got {self.tie_break!r}")
        if self.filter_by not in FILTERS:
            raise UsageError(f"filter_by must be one of {', '.join(FILTERS)}; got {self.filter_by!r}")
        if self.rank_by not in RANK_METHODS:
            raise UsageError(f"rank_by must be one of {', '.join(RANK_METHODS)}; got {self.rank_by!r}")
        if self.adjust_pred_probs and self.rank_by == "confidence_weighted_entropy":
            raise UsageError("adjust_pred_probs is not supported for rank_by='confidence_weighted_entropy'")
        if not 0.0 <= float(self.frac_noise) <= 1.0:
            raise UsageError(f"frac_noise must be within [0, 1]; got {self.frac_noise}")
        if int(self.min_examples_per_class) < 0:
            raise UsageError("min_examples_per_class must be >= 0")
        if self.filter_by not in PRUNING_FILTERS:
            if self.num_to_remove_per_class is not None:
                raise UsageError(
                    f"num_to_remove_per_class is only supported by {', '.join(PRUNING_FILTERS)}")
            if self.frac_noise != 1.0:
                warnings.warn("frac_noise is only supported for filter_by "
                              f"{', '.join(PRUNING_FILTERS)}; it is ignored", stacklevel=3)

    def check_classes(self, num_classes: int) -> None:
        """Validate the per-class options against K."""
        if self.num_to_remove_per_class is not None and len(self.num_to_remove_per_class) != num_classes:
            raise UsageError(
                f"num_to_remove_per_class has {len(self.num_to_remove_per_class)} entries, expected K={num_classes}")
        if self.confident_joint is not None and np.shape(self.confident_joint) != (num_classes, num_classes):
            raise UsageError(f"confident_joint must have shape ({num_classes}, {num_classes})")
