"""Exceptions raised by labelscan and the process exit codes they map to.

Every error is picklable: it may be raised inside a task on a Dask worker and
re-raised on the client, where the CLI turns ``exit_code`` into the process
exit status.
"""

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_INFRASTRUCTURE = 4


class LabelscanError(Exception):
    """Base class of labelscan's errors; a failure of the infrastructure unless a subclass says otherwise."""

    exit_code = EXIT_INFRASTRUCTURE

    def __reduce__(self):
        return type(self), self.args


class UsageError(LabelscanError):
    """Bad options or arguments."""

    exit_code = EXIT_USAGE


class DestinationError(LabelscanError):
    """The output destination cannot take this scan (for example it holds another scan's outputs)."""

    exit_code = EXIT_USAGE


class OccupiedDestinationError(DestinationError):
    """The destination holds another scan's outputs.

    Parameters
    ----------
    occupied : str
        Which destination and whose outputs, e.g. ``"out/ holds the outputs of another scan (...)"``.
    how_to_overwrite : str
        How the caller replaces them, in the caller's terms (the Python argument by default; the
        command line names its option).
    """

    def __init__(self, occupied, how_to_overwrite="pass overwrite=True"):
        super().__init__(occupied, how_to_overwrite)   # the args LabelscanError.__reduce__ pickles
        self.occupied, self.how_to_overwrite = occupied, how_to_overwrite

    def __str__(self):
        return f"{self.occupied}; choose another destination or {self.how_to_overwrite} to replace its outputs"


class InputError(LabelscanError):
    """Bad input data, located as precisely as is known.

    Parameters
    ----------
    message : str
        What is wrong, e.g. ``"pred_probs values outside [0, 1]"``.
    path : str, optional
        File holding the bad data.
    row_group : int, optional
        Row group of ``path`` holding the first offending row.
    row : int, optional
        First offending row, counted from the start of ``row_group``.
    global_row : int, optional
        The same row counted in the global row order of the dataset.
    num_rows_affected : int, optional
        How many rows (of the partition checked) share the problem.

    Examples
    --------
    >>> str(InputError("pred_probs values outside [0, 1]", path="data/part-3.parquet",
    ...                row_group=2, row=1234, global_row=51234, num_rows_affected=17))
    'pred_probs values outside [0, 1] in data/part-3.parquet, row group 2, row 1234 (global row 51234); 17 rows affected'
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message, *, path=None, row_group=None, row=None, global_row=None,
                 num_rows_affected=None):
        self.message = message
        self.path = path
        self.row_group = row_group
        self.row = row
        self.global_row = global_row
        self.num_rows_affected = num_rows_affected
        super().__init__(self._describe())

    def _location(self):
        return {"path": self.path, "row_group": self.row_group, "row": self.row,
                "global_row": self.global_row, "num_rows_affected": self.num_rows_affected}

    def _describe(self):
        text = self.message
        if self.path is not None:
            text += f" in {self.path}"
        if self.row_group is not None:
            text += f", row group {self.row_group}"
        if self.row is not None:
            text += f", row {self.row}"
        if self.global_row is not None:
            text += f" (global row {self.global_row})"
        if self.num_rows_affected is not None:
            noun = "row" if self.num_rows_affected == 1 else "rows"
            text += f"; {self.num_rows_affected} {noun} affected"
        return text

    def __reduce__(self):
        return _rebuild_input_error, (type(self), self.message, self._location())


def _rebuild_input_error(cls, message, location):
    return cls(message, **location)
