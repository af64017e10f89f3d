"""An output table before it becomes Arrow: the columns as a scan holds them.

A mask part's row numbers are a range and its class indices are int8/int16 on the host, while
the output contract stores both as int64. Making the int64 arrays (8 bytes a row each, 13M rows a
part) and reading them back to encode them was most of the host memory traffic of a GPU scan's
flag stage. A :class:`ColumnSet` keeps the columns as they are, names their Arrow types, and
becomes a ``pyarrow.Table`` only when a writer needs one
(:func:`labelscan.io.atomic.table_pieces`: the NumPy writer encodes it as it is).
"""

import numpy as np
import pyarrow as pa


class Consecutive:
    """The int64 values ``first, first + 1, ..., first + count - 1``, held as their ends.

    Parameters
    ----------
    first : int
    count : int
        At least 0.
    """

    dtype = np.dtype(np.int64)

    def __init__(self, first: int, count: int):
        if count < 0:
            raise ValueError(f"a range of {count} values")
        self.first, self.count = int(first), int(count)

    def __len__(self) -> int:
        return self.count

    def __array__(self, dtype=None, copy=None):
        return np.arange(self.first, self.first + self.count, dtype=dtype or self.dtype)

    def __eq__(self, other) -> bool:
        return isinstance(other, Consecutive) and (self.first, self.count) == (other.first, other.count)

    def __repr__(self) -> str:
        return f"Consecutive(first={self.first}, count={self.count})"

    def take(self, positions) -> np.ndarray:
        """The values at ``positions`` (shape (m,), in ``[0, count)``), as ``numpy.ndarray.take``."""
        return self.first + np.asarray(positions, dtype=np.int64)


class ColumnSet:
    """Named columns of one table, with the Arrow type each is stored as.

    Parameters
    ----------
    columns : dict[str, numpy.ndarray or Consecutive]
        Equal lengths, in table order.
    types : dict[str, pyarrow.DataType], optional
        Stored types of integer columns held narrower (an int16 array stored as int64); the
        others get the type ``pyarrow.table`` gives their arrays.

    Raises
    ------
    ValueError
        Columns of different lengths.
    TypeError
        A declared type whose NumPy dtype cannot hold the column's values safely.
    """

    def __init__(self, columns: dict, types: dict | None = None):
        lengths = {len(values) for values in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        self.columns, self.types = dict(columns), dict(types or {})
        for name, stored in self.types.items():
            held = self.columns[name].dtype
            if not np.can_cast(held, stored.to_pandas_dtype(), "safe"):
                raise TypeError(f"column {name!r}: {held} values cannot be stored as {stored}")

    @property
    def column_names(self) -> list:
        return list(self.columns)

    @property
    def num_rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def to_arrow(self) -> pa.Table:
        """The table (ranges made into arrays, narrow columns cast to their stored types)."""
        table = pa.table({name: np.asarray(values) for name, values in self.columns.items()})
        for name, stored in self.types.items():
            index = table.schema.get_field_index(name)
            table = table.set_column(index, name, table.column(name).cast(stored))
        return table

    def schema(self) -> pa.Schema:
        """The schema :meth:`to_arrow` gives, without making the table.

        Raises
        ------
        pyarrow.ArrowNotImplementedError, pyarrow.ArrowTypeError
            A column whose NumPy dtype has no Arrow type of its own (object arrays).
        """
        return pa.schema([pa.field(name, self.types.get(name) or pa.from_numpy_dtype(values.dtype))
                          for name, values in self.columns.items()])
