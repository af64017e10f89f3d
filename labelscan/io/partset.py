"""Write a partitioned parquet prediction set: ``part-00000.parquet``, ``part-00001.parquet``, ...

The files follow labelscan's input contract: ``label`` (int64), ``pred_probs``
(``fixed_size_list<float, K>``, dtype kept), optional more columns, and class
names in the key-value metadata ``labelscan.class_names``. Each file is written
whole in one put (:mod:`labelscan.io.atomic`).
"""

import json

import fsspec
import numpy as np
import pyarrow as pa

from labelscan.errors import DestinationError
from labelscan.io.atomic import parquet_bytes, put_bytes
from labelscan.io.dataset import CLASS_NAMES_KEY

PART_NAME = "part-{:05d}.parquet"


def prediction_table(labels, pred_probs, *, columns=None, class_names=None):
    """Build a table in the input layout labelscan reads.

    Parameters
    ----------
    labels : numpy.ndarray
        (n,) integer given labels; stored as int64.
    pred_probs : numpy.ndarray
        (n, K) float16, float32 or float64; stored as ``fixed_size_list<dtype, K>``.
    columns : dict of str to array-like, optional
        More (n,) columns, e.g. ``{"id": ids}``.
    class_names : sequence of str, optional
        K names, stored as JSON in the schema metadata ``labelscan.class_names``.

    Returns
    -------
    pyarrow.Table
        Columns ``label``, ``pred_probs``, then ``columns`` in order.
    """
    pred_probs = np.ascontiguousarray(pred_probs)
    arrays = {
        "label": pa.array(np.asarray(labels, dtype=np.int64)),
        "pred_probs": pa.FixedSizeListArray.from_arrays(pa.array(pred_probs.reshape(-1)),
                                                        pred_probs.shape[1]),
        **{name: pa.array(values) for name, values in (columns or {}).items()},
    }
    metadata = None if class_names is None else {CLASS_NAMES_KEY: json.dumps(list(class_names))}
    return pa.table(arrays, metadata=metadata)


class PartSetWriter:
    """Writes numbered parquet parts under a directory.

    Parameters
    ----------
    urlpath : str
        Output directory, local path or fsspec URL.
    storage_options : dict, optional
    overwrite : bool
        Remove existing ``part-*.parquet`` files there first; without it, their
        presence raises :class:`DestinationError` (a shorter new set would
        otherwise mix with the old one).

    Attributes
    ----------
    urls : list of str
        The parts written so far, as URLs under ``urlpath``.
    """

    def __init__(self, urlpath, *, storage_options=None, overwrite=False):
        self.urlpath = urlpath.rstrip("/")
        self.fs, root = fsspec.core.url_to_fs(urlpath, **(storage_options or {}))
        self.root = root.rstrip("/")
        self.urls = []
        existing = self.fs.glob(f"{self.root}/part-*.parquet")
        if existing and not overwrite:
            raise DestinationError(f"{urlpath} already holds {len(existing)} parquet parts; "
                                   f"remove them or overwrite")
        for path in existing:
            self.fs.rm(path)

    def write(self, tables, row_group_rows=None):
        """Write the next part.

        Parameters
        ----------
        tables : iterable of pyarrow.Table
            The part's rows in order, all with one schema; consumed one at a time.
        row_group_rows : int, optional
            Most rows per row group.

        Returns
        -------
        str
            The part's URL.
        """
        name = PART_NAME.format(len(self.urls))
        put_bytes(self.fs, f"{self.root}/{name}", parquet_bytes(tables, row_group_rows))
        self.urls.append(f"{self.urlpath}/{name}")
        return self.urls[-1]

    def remove_written(self):
        """Delete the parts written so far (after a failure, so no partial set remains)."""
        for index in range(len(self.urls)):
            self.fs.rm(f"{self.root}/{PART_NAME.format(index)}")
        self.urls = []
