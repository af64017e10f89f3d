"""Reading prediction sets, writing scan outputs atomically, and converting arrays to parquet."""

from labelscan.io.commit import OutputCommit, read_manifest
from labelscan.io.convert import convert_arrays
from labelscan.io.dataset import (DatasetPlan, FilePiece, PartitionData, PartitionSpec, plan_dataset,
                                  read_labels, read_partition)
from labelscan.io.partset import PartSetWriter, prediction_table
from labelscan.io.validate import locate_row, validate_partition

__all__ = [
    "DatasetPlan",
    "FilePiece",
    "OutputCommit",
    "PartSetWriter",
    "PartitionData",
    "PartitionSpec",
    "convert_arrays",
    "locate_row",
    "plan_dataset",
    "prediction_table",
    "read_labels",
    "read_manifest",
    "read_partition",
    "validate_partition",
]
