"""labelscan: exact Confident Learning (cleanlab 2.9's answers) over partitioned parquet sets on Dask."""

from labelscan.compat import estimate_statistics, find_label_issues, get_label_quality_scores

__version__ = "0.1.0"

__all__ = ["estimate_statistics", "find_label_issues", "get_label_quality_scores", "__version__"]
