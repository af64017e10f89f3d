"""Generate the bad-input corpus: one small parquet prediction set per kind of bad input.

Nothing here is committed as binary: ``tests/test_bad_input.py`` builds each case in a
temporary directory, and ``python tests/data/bad/make_corpus.py OUT`` writes every case to
``OUT/<case>/`` (plus ``OUT/cases.json``, what each case must report) to try by hand::

    labelscan scan OUT/nan_prob OUT/nan_prob-scan        # exit 3, names the file/row group/row

Every set has three files ``part-0.parquet .. part-2.parquet`` of 60 rows in row groups of
20 rows, K=3, float32 ``pred_probs`` as a ``fixed_size_list`` (unless the case needs another
layout), integer labels and a unique int64 ``id``. Row-level damage goes into
``part-1.parquet``, row group 1, rows 7 and 12 (global rows 87 and 92), so the expected
error names ``part-1.parquet, row group 1, row 7 (global row 87); 2 rows affected``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

K = 3
FILES = 3
ROWS_PER_FILE = 60
ROW_GROUP_ROWS = 20
BAD_FILE = 1
BAD_ROW_GROUP = 1
BAD_ROWS = (7, 12)                                   # within the bad row group
BAD_FILE_ROWS = [BAD_ROW_GROUP * ROW_GROUP_ROWS + row for row in BAD_ROWS]   # within the file
FIRST_GLOBAL_ROW = BAD_FILE * ROWS_PER_FILE + BAD_FILE_ROWS[0]               # 87


@dataclass
class Case:
    """One kind of bad input and what the CLI must report for it.

    Attributes
    ----------
    name : str
    message : str
        A substring of the ``error:`` line.
    exit_code : int
        3 bad input, 2 usage.
    file : str or None
        File name the message must name.
    row_group, row, global_row, affected : int or None
        Location the message must give (``row group R, row r (global row g); n rows affected``).
    args : list of str
        Extra ``labelscan scan`` options.
    """

    name: str
    message: str
    exit_code: int = 3
    file: str | None = f"part-{BAD_FILE}.parquet"
    row_group: int | None = None
    row: int | None = None
    global_row: int | None = None
    affected: int | None = None
    args: list = field(default_factory=list)

    def located(self):
        """The location text the error message must hold, or None for file-level errors."""
        if self.row_group is None:
            return None
        text = f", row group {self.row_group}"
        if self.row is not None:
            text += f", row {self.row} (global row {self.global_row})"
        if self.affected is not None:
            text += f"; {self.affected} {'row' if self.affected == 1 else 'rows'} affected"
        return text


def good_arrays(seed=0):
    """Labels (N,), pred_probs (N, K) float32 and ids (N,) of a whole clean set."""
    rng = np.random.default_rng(seed)
    num_rows = FILES * ROWS_PER_FILE
    labels = rng.integers(0, K, num_rows)
    pred_probs = rng.dirichlet(np.ones(K), num_rows).astype(np.float32)
    ids = np.arange(1000, 1000 + num_rows, dtype=np.int64)
    return labels, pred_probs, ids


def fixed_list(pred_probs):
    return pa.FixedSizeListArray.from_arrays(pa.array(pred_probs.reshape(-1)), pred_probs.shape[1])


def file_columns(labels, pred_probs, ids, layout="fixed"):
    """Columns of one file: label, pred_probs (layout ``fixed``, ``list`` or ``columns``), id."""
    columns = {"label": pa.array(labels)}
    if layout == "fixed":
        columns["pred_probs"] = fixed_list(pred_probs)
    elif layout == "list":
        columns["pred_probs"] = pa.array(pred_probs.tolist(), pa.list_(pa.float32()))
    else:
        columns.update({f"p{k}": pa.array(pred_probs[:, k]) for k in range(pred_probs.shape[1])})
    columns["id"] = pa.array(ids)
    return columns


def write_set(folder: Path, change=None, layout="fixed", **write_options) -> Path:
    """Write the three files; ``change(columns, labels, pred_probs, ids)`` may edit the bad file's
    columns (a dict) in place or return a replacement: a table, or bytes for a damaged file."""
    folder.mkdir(parents=True, exist_ok=True)
    labels, pred_probs, ids = good_arrays()
    for index in range(FILES):
        rows = slice(index * ROWS_PER_FILE, (index + 1) * ROWS_PER_FILE)
        file_labels, file_probs, file_ids = labels[rows].copy(), pred_probs[rows].copy(), ids[rows].copy()
        columns = file_columns(file_labels, file_probs, file_ids, layout)
        path = folder / f"part-{index}.parquet"
        table = pa.table(columns)
        if index == BAD_FILE and change is not None:
            replaced = change(columns, file_labels, file_probs, file_ids)
            if isinstance(replaced, bytes):
                path.write_bytes(replaced)
                continue
            table = replaced if isinstance(replaced, pa.Table) else pa.table(columns)
        pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS, **write_options)
    return folder


def parquet_bytes(table, **options) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=ROW_GROUP_ROWS, **options)
    return sink.getvalue().to_pybytes()


# ---------------------------------------------------------------------------------------------
# the damage of each case (applied to part-1.parquet)


def set_probs(value):
    def change(columns, labels, pred_probs, ids):
        pred_probs[BAD_FILE_ROWS, 1] = value
        columns.update(pred_probs=fixed_list(pred_probs))
    return change


def set_labels(value):
    def change(columns, labels, pred_probs, ids):
        labels[BAD_FILE_ROWS] = value
        columns.update(label=pa.array(labels))
    return change


def scaled_rows(columns, labels, pred_probs, ids):
    pred_probs[BAD_FILE_ROWS] *= np.float32(0.9)       # rows summing to 0.9: cleanlab accepts them
    columns.update(pred_probs=fixed_list(pred_probs))


def null_labels(columns, labels, pred_probs, ids):
    columns.update(label=pa.array(labels, mask=np.isin(np.arange(len(labels)), BAD_FILE_ROWS)))


def list_rows(replace):
    def change(columns, labels, pred_probs, ids):
        rows = pred_probs.tolist()
        for row in BAD_FILE_ROWS:
            rows[row] = replace(rows[row])
        columns.update(pred_probs=pa.array(rows, pa.list_(pa.float32())))
    return change


def wider_row_group(columns, labels, pred_probs, ids):
    rows = pred_probs.tolist()
    group = range(BAD_ROW_GROUP * ROW_GROUP_ROWS, (BAD_ROW_GROUP + 1) * ROW_GROUP_ROWS)
    for row in group:                                   # this row group's rows hold K + 1 values
        rows[row] = [value * 0.5 for value in rows[row]] + [0.0]
    columns.update(pred_probs=pa.array(rows, pa.list_(pa.float32())))


def null_in_column(columns, labels, pred_probs, ids):
    columns.update(p1=pa.array(pred_probs[:, 1], mask=np.isin(np.arange(len(labels)), BAD_FILE_ROWS)))


def repeat_ids(sources):
    def change(columns, labels, pred_probs, ids):
        ids[BAD_FILE_ROWS] = sources
        columns.update(id=pa.array(ids))
    return change


def null_ids(columns, labels, pred_probs, ids):
    columns.update(id=pa.array(ids, mask=np.isin(np.arange(len(ids)), BAD_FILE_ROWS)))


def replace_column(name, array_of):
    def change(columns, labels, pred_probs, ids):
        columns[name] = array_of(labels, pred_probs, ids)
    return change


def drop_column(name):
    def change(columns, labels, pred_probs, ids):
        del columns[name]
    return change


def empty_file(columns, labels, pred_probs, ids):
    return pa.table(columns).slice(0, 0)


def damaged(how):
    def change(columns, labels, pred_probs, ids):
        data = parquet_bytes(pa.table(columns))
        if how == "zero bytes":
            return b""
        if how == "garbage":
            return bytes(range(256)) * 4
        return data[: len(data) * 2 // 3]               # truncated: footer gone
    return change


def corrupt_row_group(columns, labels, pred_probs, ids):
    """Flip bytes inside row group 1's pred_probs data page (written with page checksums)."""
    data = bytearray(parquet_bytes(pa.table(columns), write_page_checksum=True))
    chunk = pq.ParquetFile(pa.BufferReader(bytes(data))).metadata.row_group(BAD_ROW_GROUP).column(1)
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    end = start + chunk.total_compressed_size
    for position in range(end - 16, end - 8):          # inside the page's values
        data[position] ^= 0xFF
    return bytes(data)


def class_names(names):
    def change(columns, labels, pred_probs, ids):
        return pa.table(columns).replace_schema_metadata(
            {b"labelscan.class_names": json.dumps(names).encode()})
    return change


ROW = dict(row_group=BAD_ROW_GROUP, row=BAD_ROWS[0], global_row=FIRST_GLOBAL_ROW, affected=len(BAD_ROWS))
ID = ["--id-column", "id"]

CASES = {case.name: case for case in [
    # values inside rows
    Case("nan_prob", "pred_probs values are NaN or infinite", **ROW),
    Case("inf_prob", "pred_probs values are NaN or infinite", **ROW),
    Case("negative_prob", "pred_probs values outside [0, 1]", **ROW),
    Case("prob_above_one", "pred_probs values outside [0, 1]", **ROW),
    Case("row_sum_off", "pred_probs rows do not sum to 1", args=["--row-sum-tolerance", "0.01"], **ROW),
    Case("label_out_of_range", f"label values outside [0, {K})", **ROW),
    Case("negative_label", f"label values outside [0, {K})", **ROW),
    Case("null_label", "null labels", **ROW),
    Case("null_pred_probs_row", "null pred_probs rows", **ROW),
    Case("null_in_list", "null values inside pred_probs rows", **ROW),
    Case("null_in_k_columns", "null values in pred_probs column 'p1'", args=["--pred-probs-column", "p"], **ROW),
    Case("k_differs_between_rows", f"pred_probs row holds {K + 1} values, expected {K}", **ROW),
    Case("k_differs_between_row_groups", f"pred_probs row holds {K + 1} values, expected {K}",
         row_group=BAD_ROW_GROUP, row=0, global_row=BAD_FILE * ROWS_PER_FILE + BAD_ROW_GROUP * ROW_GROUP_ROWS,
         affected=ROW_GROUP_ROWS),
    Case("duplicate_ids_in_partition", "duplicate id 1085 (first at global row 85)", args=ID, **ROW),
    Case("duplicate_ids_across_files", "duplicate id 1005 (first at global row 5)", args=ID, **ROW),
    Case("null_ids", "null ids", args=ID, **ROW),
    Case("corrupt_row_group", f"cannot decode row group {BAD_ROW_GROUP} (", row_group=BAD_ROW_GROUP),
    # whole files: types, columns, shapes
    Case("float_labels", "label column 'label' has type double; expected an integer type"),
    Case("string_labels", "label column 'label' has type string; expected an integer type"),
    Case("int_pred_probs", "holds int64; expected float16, float32 or float64"),
    Case("pred_probs_not_a_list", "pred_probs column 'pred_probs' has type string; expected a list"),
    Case("missing_label_column", "missing label column 'label'"),
    Case("missing_pred_probs_column", "missing pred_probs column"),
    Case("missing_id_column", "missing id column 'id'", args=ID),
    Case("id_type_differs", "id column 'id' has type string, but the first file's has type int64", args=ID),
    Case("nested_ids", "id column 'id' has type list<", args=ID),
    Case("k_differs_between_files", f"pred_probs has K={K + 1} classes, but the first file has K={K}"),
    Case("dtype_differs", "pred_probs dtype float64 differs from the first file's float32"),
    Case("class_names_mismatch", "class names in the metadata differ"),
    Case("empty_file", "empty file (0 rows)"),
    Case("zero_byte_file", "not a readable parquet file"),
    Case("garbage_file", "not a readable parquet file"),
    Case("truncated_file", "not a readable parquet file"),
    Case("no_parquet_files", "no parquet files", file=None),
    # usage errors: exit 2
    Case("negative_row_sum_tolerance", "Invalid value for '--row-sum-tolerance'", exit_code=2, file=None,
         args=["--row-sum-tolerance", "-0.5"]),
]}

DAMAGE = {
    "nan_prob": set_probs(np.nan),
    "inf_prob": set_probs(np.inf),
    "negative_prob": set_probs(-0.01),
    "prob_above_one": set_probs(1.01),
    "row_sum_off": scaled_rows,
    "label_out_of_range": set_labels(K),
    "negative_label": set_labels(-1),
    "null_label": null_labels,
    "null_pred_probs_row": list_rows(lambda row: None),
    "null_in_list": list_rows(lambda row: [row[0], None, row[2]]),
    "null_in_k_columns": null_in_column,
    "k_differs_between_rows": list_rows(lambda row: [value * 0.5 for value in row] + [0.0]),
    "k_differs_between_row_groups": wider_row_group,
    "duplicate_ids_in_partition": repeat_ids([1085, 1090]),   # rows 7, 12 repeat rows 5, 10 of the group
    "duplicate_ids_across_files": repeat_ids([1005, 1009]),         # ids of part-0.parquet
    "null_ids": null_ids,
    "corrupt_row_group": corrupt_row_group,
    "float_labels": replace_column("label", lambda labels, probs, ids: pa.array(labels + 0.5)),
    "string_labels": replace_column("label", lambda labels, probs, ids: pa.array(labels.astype(str))),
    "int_pred_probs": replace_column("pred_probs", lambda labels, probs, ids: fixed_list(
        (probs * 100).astype(np.int64))),
    "pred_probs_not_a_list": replace_column("pred_probs", lambda labels, probs, ids: pa.array(
        [json.dumps(row) for row in probs.tolist()])),
    "missing_label_column": drop_column("label"),
    "missing_pred_probs_column": drop_column("pred_probs"),
    "missing_id_column": drop_column("id"),
    "id_type_differs": replace_column("id", lambda labels, probs, ids: pa.array(ids.astype(str))),
    "nested_ids": replace_column("id", lambda labels, probs, ids: pa.array([[int(i)] for i in ids])),
    "k_differs_between_files": replace_column("pred_probs", lambda labels, probs, ids: fixed_list(
        np.hstack([probs * 0.5, probs[:, :1] * 0.5]))),
    "dtype_differs": replace_column("pred_probs", lambda labels, probs, ids: fixed_list(probs.astype(np.float64))),
    "class_names_mismatch": class_names(["cat", "dog", "fox"]),
    "empty_file": empty_file,
    "zero_byte_file": damaged("zero bytes"),
    "garbage_file": damaged("garbage"),
    "truncated_file": damaged("truncated"),
}

SKIP_REASONS = {
    "nan_prob": "non_finite", "inf_prob": "non_finite", "negative_prob": "out_of_bounds",
    "prob_above_one": "out_of_bounds", "row_sum_off": "row_sum", "label_out_of_range": "label_out_of_range",
    "negative_label": "label_out_of_range", "null_label": "null_label", "null_pred_probs_row": "null_pred_probs",
    "null_in_list": "null_in_pred_probs", "null_in_k_columns": "null_in_pred_probs",
    "k_differs_between_rows": "pred_probs_length", "k_differs_between_row_groups": "pred_probs_length",
    "null_ids": "null_id",
}
"""Row-level cases: what ``--on-bad-rows skip`` gives as the ``reason`` of the rows it leaves out
(:func:`skipped_rows`); every other case stops a skipping scan too."""


def skipped_rows(name: str) -> list:
    """Global rows a skipping scan leaves out for row-level case ``name``."""
    if name == "k_differs_between_row_groups":
        start = BAD_FILE * ROWS_PER_FILE + BAD_ROW_GROUP * ROW_GROUP_ROWS
        return list(range(start, start + ROW_GROUP_ROWS))
    return [BAD_FILE * ROWS_PER_FILE + row for row in BAD_FILE_ROWS]


LAYOUTS = {"null_pred_probs_row": "list", "null_in_list": "list", "k_differs_between_rows": "list",
           "k_differs_between_row_groups": "list", "null_in_k_columns": "columns"}


def build(name: str, folder: Path) -> Path:
    """Write case ``name``'s input set into ``folder`` (created); returns ``folder``."""
    folder = Path(folder)
    if name == "no_parquet_files":
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "README.txt").write_text("no parquet here\n")
        return folder
    if name == "class_names_mismatch":   # the first file names the classes differently
        write_set(folder, DAMAGE[name])
        first = pq.read_table(folder / "part-0.parquet")
        pq.write_table(first.replace_schema_metadata({b"labelscan.class_names": b'["a", "b", "c"]'}),
                       folder / "part-0.parquet", row_group_size=ROW_GROUP_ROWS)
        return folder
    return write_set(folder, DAMAGE.get(name), LAYOUTS.get(name, "fixed"))


def build_good(folder: Path) -> Path:
    """A clean set of the same shape (scans fine, with or without ``--id-column id``)."""
    return write_set(Path(folder))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python tests/data/bad/make_corpus.py OUT", file=sys.stderr)
        return 2
    out = Path(argv[0])
    for name in CASES:
        build(name, out / name)
    build_good(out / "good")
    (out / "cases.json").write_text(json.dumps({name: asdict(case) for name, case in CASES.items()}, indent=2))
    print(f"wrote {len(CASES)} cases and good/ to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
