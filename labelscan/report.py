"""``report.html``: a self-contained HTML report of a finished scan.

One file with inline SVG plots and no external resources (no CDN, no script), so it opens
offline, in a mail attachment or from an object store:

- ``#summary``: rows, classes, issues, configuration, time per stage;
- ``#noise-matrix``: heatmap of the estimated noise matrix ``P(given = i | true = j)``;
- ``#issue-rate``: share of each class's rows flagged as label issues;
- ``#quality-histograms``: histogram of ``label_quality`` per class, flagged rows stacked on
  the others (one ``#quality-histogram-<k>`` per class shown);
- ``#top-issues``: the worst-ranked issues;
- ``#health`` (dataset health from ``summary.json``) and, when ``OUT/evaluation.json`` exists,
  ``#evaluation`` (metrics against verified labels): :mod:`labelscan.report_quality`.

The histograms are computed from ``mask/`` reading one part at a time, so memory stays bounded
by one part (plus K x bins counters) for any number of rows. They group rows by their given
label, read from the scan's input (label column only, one row group at a time) when it is
still there unchanged (same files and sizes as the fingerprint in ``summary.json``); otherwise
by predicted label, and the report says so. With more than ``labelscan.report.max-classes``
classes (default 40), the plots show the classes with the most issues (of a scan of more than
256 classes, only their cells of the noise matrix are made dense).

``report.html`` is written next to the outputs after the scan and is not listed in the
``_SUCCESS`` manifest, so writing it does not change what :func:`labelscan.open_scan`
verifies; a new run of the scan to the same place removes it.
"""

from __future__ import annotations

import datetime
import html
import math

import numpy as np

from labelscan import config, report_multilabel, report_quality
from labelscan.progress import in_run_order
from labelscan.summary_statistics import read_statistic

REPORT_NAME = "report.html"


# ---------------------------------------------------------------------------------------------
# data


def choose_classes(summary: dict, max_classes: int) -> list:
    """The classes the plots show: all of them, or the ``max_classes`` with the most issues."""
    num_classes = int(summary["num_classes"])
    if num_classes <= max_classes:
        return list(range(num_classes))
    issues = np.asarray(summary.get("num_issues_per_class") or np.zeros(num_classes), dtype=np.int64)
    order = np.lexsort((np.arange(num_classes), -issues))[:max_classes]
    return sorted(int(k) for k in order)


def _mask_parts(fs, root):
    return sorted(fs.glob(f"{root.rstrip('/')}/mask/part-*.parquet"))


def _footer_range(statistics):
    """``(min, max)`` of a column chunk's footer statistics as floats, or None when absent or
    undecodable (pyarrow gives a float16 column's as 2 raw little-endian bytes each)."""
    if statistics is None or not statistics.has_min_max:
        return None
    low, high = statistics.min, statistics.max
    if isinstance(low, bytes) or isinstance(high, bytes):
        if statistics.logical_type.type != "FLOAT16" or len(low) != 2 or len(high) != 2:
            return None
        low, high = np.frombuffer(low + high, dtype="<f2")
    try:
        return float(low), float(high)
    except (TypeError, ValueError):
        return None


def _data_range(fs, path):
    """``(min, max)`` of the finite ``label_quality`` values of one mask part, read from its data,
    or None when it has none."""
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as handle:
        column = pq.read_table(handle, columns=["label_quality"]).column(0).drop_null()
    values = column.to_numpy().astype(np.float64)
    values = values[np.isfinite(values)]
    return (float(values.min()), float(values.max())) if len(values) else None


def _part_range(fs, path):
    """``(min, max)`` of ``label_quality`` in one mask part: from the footer statistics, or from
    the data when a row group's are missing or undecodable; None for a part without values."""
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as handle:
        metadata = pq.ParquetFile(handle).metadata
    index = metadata.schema.names.index("label_quality")
    ranges = [_footer_range(metadata.row_group(group).column(index).statistics)
              for group in range(metadata.num_row_groups)]
    if not ranges or None in ranges:
        return _data_range(fs, path)
    return min(low for low, _ in ranges), max(high for _, high in ranges)


def quality_range(fs, parts) -> tuple:
    """Smallest and largest ``label_quality`` of the mask parts.

    From the parts' footer statistics (no data read; float16 ones decoded), else from a part's
    data. ``(0, 1)`` when there is no finite value; a single value ``v`` gives ``(v, v + 1)``.
    """
    low, high = math.inf, -math.inf
    for path in parts:
        found = _part_range(fs, path)
        if found is not None:
            low, high = min(low, found[0]), max(high, found[1])
    if not math.isfinite(low) or not math.isfinite(high):
        return 0.0, 1.0
    if high <= low:
        high = low + 1.0
    return low, high


class _LabelStream:
    """The given labels of the scan's input in global row order, one row group at a time."""

    def __init__(self, summary, storage_options):
        import fsspec

        source = summary["input"]["path"]
        first = source if isinstance(source, str) else source[0]
        self.fs, _ = fsspec.core.url_to_fs(first, **(storage_options or {}))
        self.files = summary["input"]["fingerprint"]["files"]
        self.column = summary["config"]["label_column"]
        for entry in self.files:   # unchanged input only
            if int(self.fs.info(entry["path"])["size"]) != int(entry["size"]):
                raise ValueError(f"{entry['path']} changed since the scan")
        self._batches = self._iterate()
        self._buffer = np.zeros(0, dtype=np.int64)

    def _iterate(self):
        import pyarrow.parquet as pq

        for entry in self.files:
            with self.fs.open(entry["path"], "rb") as handle:
                reader = pq.ParquetFile(handle)
                for group in range(reader.num_row_groups):
                    column = reader.read_row_group(group, columns=[self.column]).column(0)
                    yield column.fill_null(0).to_numpy()   # null: a row skipped as bad input, not shown

    def take(self, count: int) -> np.ndarray:
        pieces, have = [self._buffer], len(self._buffer)
        while have < count:
            batch = next(self._batches)
            pieces.append(np.asarray(batch, dtype=np.int64))
            have += len(batch)
        joined = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        self._buffer = joined[count:]
        return joined[:count]


def quality_histograms(out, summary, storage_options=None, bins=20, input_storage_options=None):
    """Per-class histograms of ``label_quality``, flagged and not flagged, over every row.

    Reads ``mask/`` one part at a time (bounded memory).

    Returns
    -------
    dict
        ``edges`` (bins + 1,), ``flagged`` and ``clean`` (K, bins) int64 counts, ``by``
        (``"given label"`` or ``"predicted label"``), ``note`` (why predicted, or None).
    """
    import fsspec

    num_classes = int(summary["num_classes"])
    fs, root = fsspec.core.url_to_fs(out, **(storage_options or {}))
    parts = _mask_parts(fs, root)
    low, high = quality_range(fs, parts)
    edges = np.linspace(low, high, bins + 1)
    flagged = np.zeros((num_classes, bins), dtype=np.int64)
    clean = np.zeros((num_classes, bins), dtype=np.int64)
    note = None
    try:
        labels = _LabelStream(summary, input_storage_options if input_storage_options is not None
                              else storage_options)
    except Exception as error:  # noqa: BLE001 - the input may be gone, moved or unreadable here
        labels, note = None, f"the scan's input could not be read here ({type(error).__name__}: {error})"
    for path in parts:
        scanned, quality, issue, predicted = _read_mask_part(fs, path)
        classes = None
        if labels is not None:
            try:
                classes = labels.take(len(scanned))[scanned]
            except Exception as error:  # noqa: BLE001
                labels, note = None, f"the scan's input could not be read here ({type(error).__name__}: {error})"
        if classes is None:
            classes = predicted
        _add_counts(flagged, clean, _cells(quality, classes, low, high, bins), issue)
        del scanned, quality, issue, predicted, classes
    if note is not None:   # a partial stream must not mix given and predicted labels
        return _histograms_by_prediction(fs, parts, num_classes, edges, note)
    return {"edges": edges, "flagged": flagged, "clean": clean, "by": "given label", "note": None}


def _read_mask_part(fs, path):
    """One mask part: which of its rows were scanned (rows skipped as bad input have no
    ``label_quality``), shape (n,) bool, and the scanned rows' ``label_quality``,
    ``is_label_issue`` and ``predicted_label``, each shape (m,)."""
    import pyarrow.parquet as pq

    with fs.open(path, "rb") as handle:
        table = pq.read_table(handle, columns=["label_quality", "predicted_label", "is_label_issue"])
    scanned = table.column("label_quality").is_valid().to_numpy(zero_copy_only=False)
    return (scanned, table.column("label_quality").to_numpy()[scanned],
            table.column("is_label_issue").to_numpy(zero_copy_only=False)[scanned],
            table.column("predicted_label").to_numpy()[scanned])


def _add_counts(flagged, clean, cell, issue) -> None:
    """Add rows with histogram cells ``cell`` (m,) to ``flagged`` / ``clean`` (K, bins) by ``issue`` (m,)."""
    flagged += np.bincount(cell[issue], minlength=flagged.size).reshape(flagged.shape)
    clean += np.bincount(cell[~issue], minlength=clean.size).reshape(clean.shape)


def _cells(quality, classes, low, high, bins) -> np.ndarray:
    """Histogram cell ``class * bins + bin`` of each row, shape (n,), int64, from its quality and
    class, shapes (n,) (the bin computed in float64 whatever the quality's float type)."""
    position = (np.asarray(quality, dtype=np.float64) - low) / (high - low) * bins
    return classes.astype(np.int64) * bins + np.clip(position.astype(np.int64), 0, bins - 1)


def _histograms_by_prediction(fs, parts, num_classes, edges, note):
    bins = len(edges) - 1
    low, high = edges[0], edges[-1]
    flagged = np.zeros((num_classes, bins), dtype=np.int64)
    clean = np.zeros((num_classes, bins), dtype=np.int64)
    for path in parts:
        _, quality, issue, predicted = _read_mask_part(fs, path)
        _add_counts(flagged, clean, _cells(quality, predicted, low, high, bins), issue)
    return {"edges": edges, "flagged": flagged, "clean": clean, "by": "predicted label", "note": note}


# ---------------------------------------------------------------------------------------------
# SVG


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _blue(value: float) -> str:
    """White (0) to dark blue (1)."""
    value = min(max(float(value), 0.0), 1.0)
    start, stop = (247, 251, 255), (8, 48, 107)
    red, green, blue = (round(a + (b - a) * value) for a, b in zip(start, stop))
    return f"rgb({red},{green},{blue})"


def heatmap_svg(matrix, names, element_id="noise-matrix", title="") -> str:
    """A K x K heatmap (rows: given label i, columns: true label j); square-root color scale."""
    matrix = np.asarray(matrix, dtype=np.float64)
    size = len(names)
    cell = max(10, min(44, 560 // max(size, 1)))
    left, top = 110, 60
    width, height = max(left + cell * size + 20, 520), top + cell * size + 40
    parts = [f'<svg id="{_esc(element_id)}" class="plot heatmap" xmlns="http://www.w3.org/2000/svg" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
             f"<title>{_esc(title)}</title>"]
    for i in range(size):
        parts.append(f'<text x="{left - 6}" y="{top + cell * i + cell / 2 + 4:.1f}" text-anchor="end" '
                     f'class="tick">{_esc(names[i])[:14]}</text>')
        parts.append(f'<text transform="translate({left + cell * i + cell / 2 + 4:.1f},{top - 6}) rotate(-60)" '
                     f'class="tick">{_esc(names[i])[:14]}</text>')
        for j in range(size):
            value = matrix[i, j]
            color = _blue(math.sqrt(max(value, 0.0)))
            parts.append(f'<rect class="cell" x="{left + cell * j}" y="{top + cell * i}" width="{cell}" '
                         f'height="{cell}" fill="{color}"><title>given {_esc(names[i])}, true '
                         f'{_esc(names[j])}: {value:.4f}</title></rect>')
            if cell >= 30:
                ink = "#fff" if value > 0.3 else "#222"
                parts.append(f'<text x="{left + cell * j + cell / 2:.1f}" y="{top + cell * i + cell / 2 + 4:.1f}" '
                             f'text-anchor="middle" class="value" style="fill:{ink}">{value:.2f}</text>')
    parts.append(f'<text x="10" y="{height - 12}" class="axis">'
                 f'columns: true label j · rows: given label i · color: √P(given = i | true = j)</text>')
    parts.append("</svg>")
    return "".join(parts)


def bars_svg(values, names, element_id="issue-rate", title="", counts=None) -> str:
    """Horizontal bars of fractions in [0, 1], one per class."""
    values = np.asarray(values, dtype=np.float64)
    row, left, plot = 18, 120, 420
    width, height = left + plot + 120, 30 + row * len(names) + 30
    top_value = max(float(values.max()) if len(values) else 0.0, 1e-9)
    parts = [f'<svg id="{_esc(element_id)}" class="plot bars" xmlns="http://www.w3.org/2000/svg" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
             f"<title>{_esc(title)}</title>"]
    for index, (name, value) in enumerate(zip(names, values)):
        y = 20 + row * index
        length = plot * value / top_value
        extra = f" ({counts[index]:,} rows)" if counts is not None else ""
        parts.append(f'<text x="{left - 6}" y="{y + row * 0.7:.1f}" text-anchor="end" class="tick">'
                     f"{_esc(name)[:16]}</text>")
        parts.append(f'<rect class="bar" x="{left}" y="{y + 2}" width="{length:.1f}" height="{row - 4}" '
                     f'fill="#d95f02"><title>{_esc(name)}: {value:.2%} flagged{extra}</title></rect>')
        parts.append(f'<text x="{left + length + 4:.1f}" y="{y + row * 0.7:.1f}" class="value">{value:.1%}</text>')
    parts.append(f'<text x="{left + plot / 2}" y="{height - 8}" text-anchor="middle" class="axis">'
                 f"share of the class's rows flagged (by given label)</text>")
    parts.append("</svg>")
    return "".join(parts)


def histogram_svg(clean, flagged, edges, name, element_id) -> str:
    """Stacked histogram of one class: rows not flagged (blue) and flagged (orange)."""
    clean, flagged = np.asarray(clean), np.asarray(flagged)
    width, height, pad = 220, 130, 24
    plot_w, plot_h = width - 2 * pad + 10, height - 2 * pad
    totals = clean + flagged
    peak = max(int(totals.max()) if len(totals) else 0, 1)
    bar = plot_w / len(clean)
    parts = [f'<svg id="{_esc(element_id)}" class="plot histogram" xmlns="http://www.w3.org/2000/svg" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
             f'<text x="{pad}" y="14" class="label">{_esc(name)[:24]} · {int(totals.sum()):,} rows, '
             f'{int(flagged.sum()):,} flagged</text>']
    for index in range(len(clean)):
        x = pad + bar * index
        clean_h = plot_h * clean[index] / peak
        flag_h = plot_h * flagged[index] / peak
        base = pad + plot_h
        span = f"[{edges[index]:.3g}, {edges[index + 1]:.3g})"
        if clean[index]:
            parts.append(f'<rect class="clean" x="{x:.1f}" y="{base - clean_h:.1f}" width="{max(bar - 1, 1):.1f}" '
                         f'height="{clean_h:.1f}" fill="#1f78b4"><title>{span}: {int(clean[index]):,} not flagged'
                         f"</title></rect>")
        if flagged[index]:
            parts.append(f'<rect class="flagged" x="{x:.1f}" y="{base - clean_h - flag_h:.1f}" '
                         f'width="{max(bar - 1, 1):.1f}" height="{flag_h:.1f}" fill="#d95f02"><title>{span}: '
                         f"{int(flagged[index]):,} flagged</title></rect>")
    parts.append(f'<line x1="{pad}" y1="{pad + plot_h}" x2="{pad + plot_w}" y2="{pad + plot_h}" stroke="#888"/>')
    parts.append(f'<text x="{pad}" y="{height - 6}" class="tick">{edges[0]:.3g}</text>')
    parts.append(f'<text x="{pad + plot_w}" y="{height - 6}" text-anchor="end" class="tick">{edges[-1]:.3g}</text>')
    parts.append("</svg>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# the page


STYLE = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;
color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:30px;border-bottom:1px solid #ddd;padding-bottom:4px}
.muted{color:#666;font-size:13px}.tiles{display:flex;flex-wrap:wrap;gap:12px;margin:14px 0}
.tile{background:#f4f6f8;border-radius:6px;padding:10px 14px;min-width:120px}.tile b{display:block;font-size:20px}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
th{background:#f4f6f8}td.l,th.l{text-align:left}
svg .tick{font-size:10px;fill:#444}svg .value{font-size:10px;fill:#333}svg .axis{font-size:11px;fill:#555}
svg .label{font-size:11px;fill:#222}.grid{display:flex;flex-wrap:wrap;gap:4px}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}
h3{font-size:15px;margin-top:20px}.warning{background:#fff3cd;border:1px solid #e0c36c;padding:6px 10px}
"""


def _class_names(summary):
    names = summary.get("class_names")
    return [str(name) for name in names] if names else [str(k) for k in range(int(summary["num_classes"]))]


def _issues_table(frame, names) -> str:
    if frame is None or not len(frame):
        return '<table id="top-issues"><tr><td class="l">no issues</td></tr></table>'
    columns = [column for column in ("rank", "row_id", "id", "given_label", "predicted_label", "label_quality")
               if column in frame]
    head = "".join(f'<th class="{"l" if c == "id" else ""}">{_esc(c)}</th>' for c in columns)
    head += '<th class="l">given class</th><th class="l">predicted class</th>'
    rows = []
    for record in frame[columns].itertuples(index=False):
        values = dict(zip(columns, record))
        cells = []
        for column in columns:
            value = values[column]
            text = f"{value:.4g}" if column == "label_quality" else str(value)
            cells.append(f'<td class="{"l" if column == "id" else ""}">{_esc(text)}</td>')
        for column in ("given_label", "predicted_label"):
            k = int(values[column])
            cells.append(f'<td class="l">{_esc(names[k] if 0 <= k < len(names) else k)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table id="top-issues"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def render_report(result, *, top=None, max_classes=None, bins=None, input_storage_options=None,
                  top_pairs=None) -> str:
    """The HTML of ``report.html`` for a finished scan.

    Parameters
    ----------
    result : labelscan.ScanResult
        From :func:`labelscan.open_scan` (verified) or :func:`labelscan.scan`.
    top, max_classes, bins, top_pairs : int, optional
        Issues in the table, classes in the plots, histogram bins, overlapping class pairs in
        the health section; default from ``labelscan.report.*`` (:mod:`labelscan.config`).
    input_storage_options : dict, optional
        fsspec options to read the input's labels (default: the result's).
    """
    top = int(config.get("report.top-issues", top))
    max_classes = int(config.get("report.max-classes", max_classes))
    bins = int(config.get("report.histogram-bins", bins))
    top_pairs = int(config.get("report.top-pairs", top_pairs))
    summary = result.summary
    if summary.get("multi_label"):
        return _page(result, report_multilabel.body(result, top, max_classes))
    stats = summary["statistics"]
    names = _class_names(summary)
    shown = choose_classes(summary, max_classes)
    shown_names = [names[k] for k in shown]
    rows, issues = int(summary["num_rows"]), int(summary["num_issues"])
    label_counts = np.asarray(stats.get("label_counts") or np.zeros(len(names)), dtype=np.int64)
    per_class = np.asarray(summary.get("num_issues_per_class") or np.zeros(len(names)), dtype=np.int64)
    rates = np.divide(per_class, label_counts, out=np.zeros(len(names)), where=label_counts > 0)
    noise = read_statistic(result.out, summary, "noise_matrix", result.storage_options, rows=shown, columns=shown)
    histograms = quality_histograms(result.out, summary, result.storage_options, bins, input_storage_options)
    frame = result.issues(top) if top else None
    config_used = summary.get("config", {})
    subset = ("" if len(shown) == len(names) else
              f'<p class="muted">Showing the {len(shown)} of {len(names)} classes with the most issues.</p>')
    timings = summary.get("timings", {})
    timing_rows = "".join(f'<tr><td class="l">{_esc(stage)}</td><td>{float(timings[stage]):.2f} s</td></tr>'
                          for stage in in_run_order(timings))
    histogram_svgs = "".join(
        histogram_svg(histograms["clean"][k], histograms["flagged"][k], histograms["edges"], names[k],
                      f"quality-histogram-{k}") for k in shown)
    histogram_note = (f'<p class="muted">Grouped by {histograms["by"]}'
                      + (f" because {_esc(histograms['note'])}" if histograms["note"] else "") + ".</p>")
    return _page(result, f"""<section id="summary">
<div class="tiles">
<div class="tile">rows<b>{rows:,}</b></div>
<div class="tile">classes (K)<b>{len(names):,}</b></div>
<div class="tile">label issues<b id="num-issues">{issues:,}</b></div>
<div class="tile">share flagged<b>{(issues / rows if rows else 0):.2%}</b></div>
<div class="tile">filter_by<b style="font-size:14px">{_esc(config_used.get("filter_by"))}</b></div>
<div class="tile">rank_by<b style="font-size:14px">{_esc(config_used.get("rank_by"))}</b></div>
</div>
<details><summary class="muted">time per stage</summary><table id="timings">{timing_rows}</table></details>
</section>
<h2>Noise matrix</h2>
<p class="muted">Estimated P(given label = i | true label = j): the diagonal is the share of each true class
whose label is right; bright off-diagonal cells are the confusions in the labels.</p>{subset}
{heatmap_svg(noise, shown_names, "noise-matrix", "noise matrix")}
<h2>Issue rate per class</h2>{subset}
{bars_svg(rates[shown], shown_names, "issue-rate", "issue rate per class", label_counts[shown].tolist())}
<h2>Label quality per class</h2>
<p class="muted legend">label_quality ({_esc(config_used.get("rank_by"))}; low = likely wrong) of every row:
<span style="background:#1f78b4"></span>not flagged<span style="background:#d95f02"></span>flagged</p>
{histogram_note}{subset}
<div id="quality-histograms" class="grid">{histogram_svgs}</div>
{report_quality.health_section(summary.get("health"), max_classes, top_pairs)}
{report_quality.evaluation_section(report_quality.read_evaluation(result.out, result.storage_options), summary)}
<h2>Top issues</h2>
<p class="muted">The {min(top, issues):,} worst-ranked of {issues:,} issues (issues/part-00000.parquet first rows).</p>
{_issues_table(frame, names)}
""")


def _page(result, content: str) -> str:
    """The whole HTML document: header, ``content``, end."""
    from labelscan.io.redact import redact_url

    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out_shown = redact_url(result.out) if isinstance(result.out, str) else result.out
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>labelscan report: {_esc(out_shown)}</title><style>{STYLE}</style></head>
<body>
<h1>labelscan report</h1>
<p class="muted">{_esc(out_shown)} · generated {generated} · labelscan {_esc(result.summary.get("labelscan_version", ""))}</p>
{content}
</body></html>
"""


def write_report(result, path=None, storage_options=None, **kwargs) -> str:
    """Render and store ``report.html`` (default ``OUT/report.html``) in one put; returns the path.

    ``storage_options`` applies to ``path`` (default: the result's).
    """
    import fsspec

    from labelscan.io.atomic import put_bytes

    data = render_report(result, **kwargs).encode("utf-8")
    if path is None:
        path = f"{str(result.out).rstrip('/')}/{REPORT_NAME}"
        storage_options = result.storage_options if storage_options is None else storage_options
    fs, target = fsspec.core.url_to_fs(path, **(storage_options or {}))
    put_bytes(fs, target, data)
    return path
