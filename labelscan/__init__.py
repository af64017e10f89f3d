"""labelscan: exact Confident Learning (cleanlab 2.9's answers) over partitioned parquet sets on Dask."""

__version__ = "0.1.0"

from labelscan.api import ScanResult, open_scan, scan  # noqa: E402
from labelscan.compat import estimate_statistics, find_label_issues, get_label_quality_scores  # noqa: E402
from labelscan import evaluate, health, multilabel  # noqa: E402,F401  (modules: labelscan.health.from_summary, ...)

__all__ = ["ScanResult", "estimate_statistics", "find_label_issues", "get_label_quality_scores",
           "open_scan", "scan", "__version__"]
