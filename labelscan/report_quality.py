"""Dataset-health and evaluation sections of ``report.html``.

- ``#health``: cleanlab's ``dataset`` view of the scan, from the ``health`` entry of
  ``summary.json`` (:func:`labelscan.health.summary_section`): the overall label health score,
  the classes ranked by label quality (worst first; ``#class-quality`` plots their scores,
  ``#class-quality-table`` lists them) and the most overlapping class pairs
  (``#overlapping-classes``).
- ``#evaluation``: when ``OUT/evaluation.json`` exists (written by ``labelscan evaluate``,
  :mod:`labelscan.evaluate`): precision, recall and F1 of the mask against the true errors
  (``#evaluation-mask``), and AUROC / AUPRC / lift of each label-quality score, with and without
  ``adjust_pred_probs`` (``#evaluation-scores`` table, ``#score-auc`` plot). An evaluation made
  for another scan (a different config hash or input) is shown with a warning.

Every text taken from the outputs is HTML-escaped; the plots are inline SVG.
"""

from __future__ import annotations

import html
import json

from labelscan.evaluate import EVALUATION_NAME

CLASS_COLUMNS = (("class_index", "class", "d"), ("class_name", "name", "s"),
                 ("label_issues", "label issues", "d"), ("inverse_label_issues", "inverse label issues", "d"),
                 ("label_noise", "label noise", "f"), ("inverse_label_noise", "inverse label noise", "f"),
                 ("label_quality_score", "label quality score", "f"))
"""Columns of the class table: key in the ``health`` records, header, format."""

PAIR_COLUMNS = (("class_index_a", "class A", "d"), ("class_name_a", "name A", "s"),
                ("class_index_b", "class B", "d"), ("class_name_b", "name B", "s"),
                ("num_overlapping_examples", "overlapping examples", "d"),
                ("joint_probability", "joint probability", "f"))

SERIES_COLORS = ("#1f78b4", "#d95f02", "#7570b3")


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _cell(value, kind: str) -> str:
    if value is None:
        return '<td>n/a</td>'
    if kind == "f":
        return f"<td>{float(value):.4f}</td>"
    if kind == "d":
        return f"<td>{int(value):,}</td>"
    return f'<td class="l">{_esc(value)}</td>'


def records_table(records: list, columns, element_id: str) -> str:
    """An HTML table of JSON records; only the columns present in the first record are shown."""
    if not records:
        return f'<table id="{_esc(element_id)}"><tr><td class="l">none</td></tr></table>'
    shown = [(key, title, kind) for key, title, kind in columns if key in records[0]]
    head = "".join(f'<th class="{"l" if kind == "s" else ""}">{_esc(title)}</th>' for _, title, kind in shown)
    body = "".join("<tr>" + "".join(_cell(record.get(key), kind) for key, _, kind in shown) + "</tr>"
                   for record in records)
    return f'<table id="{_esc(element_id)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def unit_bars_svg(names, series: dict, element_id: str, title: str, axis: str) -> str:
    """Horizontal bars of values in [0, 1]: one group per name, one bar per series.

    Parameters
    ----------
    names : list of str
        Group labels, shape (G,).
    series : dict[str, sequence of float or None]
        Series name -> values (G,); None values draw no bar.
    """
    row = 14
    group = row * len(series) + 6
    left, plot = 230, 380
    width, height = left + plot + 70, 24 + group * len(names) + 34
    parts = [f'<svg id="{_esc(element_id)}" class="plot metric-bars" xmlns="http://www.w3.org/2000/svg" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
             f"<title>{_esc(title)}</title>"]
    for index, name in enumerate(names):
        top = 16 + group * index
        parts.append(f'<text x="{left - 6}" y="{top + group / 2:.1f}" text-anchor="end" class="tick">'
                     f"{_esc(name)[:36]}</text>")
        for position, (label, values) in enumerate(series.items()):
            value = values[index]
            if value is None:
                continue
            y = top + row * position
            length = plot * min(max(float(value), 0.0), 1.0)
            color = SERIES_COLORS[position % len(SERIES_COLORS)]
            parts.append(f'<rect class="metric" x="{left}" y="{y + 1}" width="{length:.1f}" height="{row - 2}" '
                         f'fill="{color}"><title>{_esc(name)} {_esc(label)}: {float(value):.4f}</title></rect>')
            parts.append(f'<text x="{left + length + 4:.1f}" y="{y + row - 3}" class="value">{float(value):.3f}</text>')
    legend = " · ".join(f'<tspan style="fill:{SERIES_COLORS[i % len(SERIES_COLORS)]}">■</tspan> {_esc(label)}'
                        for i, label in enumerate(series))
    parts.append(f'<text x="{left}" y="{height - 8}" class="axis">{_esc(axis)}{" · " if len(series) > 1 else ""}'
                 f'{legend if len(series) > 1 else ""}</text>')
    parts.append("</svg>")
    return "".join(parts)


def health_section(health: dict | None, max_classes: int, top_pairs: int) -> str:
    """``#health``: overall score, classes by label quality (worst ``max_classes``), top class pairs."""
    if not health:
        return ('<h2>Dataset health</h2><section id="health"><p class="muted">This scan\'s summary.json has no '
                "health entry.</p></section>")
    classes = list(health.get("classes_by_label_quality") or [])
    pairs = list(health.get("overlapping_classes") or [])
    shown = classes[:max_classes]
    names = [record.get("class_name", record["class_index"]) for record in shown]
    plot = unit_bars_svg([f"{record['class_index']}: {name}" if "class_name" in record else str(name)
                          for record, name in zip(shown, names)],
                         {"label quality score": [record["label_quality_score"] for record in shown]},
                         "class-quality", "label quality score per class",
                         "label quality score (1 - label noise share); worst classes first")
    more = (f'<p class="muted">The {len(shown)} worst of {len(classes)} classes.</p>'
            if len(shown) < len(classes) else "")
    total_pairs = int(health.get("num_overlapping_pairs", len(pairs)))
    return f"""<h2>Dataset health</h2>
<section id="health">
<p class="muted">cleanlab's <code>dataset.health_summary</code> from the scan's statistics (no pass over the data).</p>
<div class="tiles">
<div class="tile">overall label health score<b id="health-score">{float(health["overall_label_health_score"]):.4f}</b></div>
<div class="tile">label issues (off-diagonal)<b>{int(health.get("num_label_issues", 0)):,}</b></div>
<div class="tile">overlapping class pairs<b>{total_pairs:,}</b></div>
</div>
<h3>Classes by label quality</h3>{more}
{plot}
{records_table(shown, CLASS_COLUMNS, "class-quality-table")}
<h3>Overlapping classes</h3>
<p class="muted">The {min(top_pairs, len(pairs)):,} class pairs (of {total_pairs:,} with a non-zero joint probability)
most often confused in the labels: candidates to merge or to relabel.</p>
{records_table(pairs[:top_pairs], PAIR_COLUMNS, "overlapping-classes")}
</section>
"""


def read_evaluation(out, storage_options=None) -> dict | None:
    """``OUT/evaluation.json`` parsed, or None when there is none."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(out, **(storage_options or {}))
    path = f"{root.rstrip('/')}/{EVALUATION_NAME}"
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as handle:
        return json.loads(handle.read())


def _fmt(value) -> str:
    return "n/a" if value is None else f"{float(value):.4f}"


def evaluation_section(evaluation: dict | None, summary: dict) -> str:
    """``#evaluation``: mask metrics and score metrics of ``evaluation.json`` (empty without one)."""
    if evaluation is None:
        return ""
    scan = evaluation.get("scan") or {}
    stale = ""
    if scan.get("config_hash") not in (None, summary.get("config_hash")) or \
            scan.get("input_sha256") not in (None, summary["input"]["fingerprint"].get("sha256")):
        stale = ('<p class="warning" id="evaluation-stale">This evaluation.json was made for another scan '
                 "(different configuration or input): its figures do not describe these outputs.</p>")
    truth = evaluation.get("true_labels") or {}
    source = (f"column {truth['column']}" if "column" in truth else f"file {truth['path']}" if "path" in truth
              else "an array")
    rate = evaluation.get("true_error_rate")
    mask = evaluation.get("mask")
    mask_html = ""
    if mask:
        mask_html = f"""<div class="tiles" id="evaluation-mask">
<div class="tile">flagged<b>{int(mask["num_flagged"]):,}</b></div>
<div class="tile">true positives<b>{int(mask["true_positives"]):,}</b></div>
<div class="tile">precision<b id="evaluation-precision">{_fmt(mask["precision"])}</b></div>
<div class="tile">recall<b id="evaluation-recall">{_fmt(mask["recall"])}</b></div>
<div class="tile">F1<b id="evaluation-f1">{_fmt(mask["f1"])}</b></div>
</div>"""
    scores = list(evaluation.get("scores") or [])
    rows = "".join(
        f'<tr><td class="l">{_esc(entry["method"])}</td><td class="l">{"yes" if entry["adjust_pred_probs"] else "no"}'
        f'</td><td>{_fmt(entry["auroc"])}</td><td>{_fmt(entry["auprc"])}</td><td>{_fmt(entry["lift_at_num_errors"])}'
        f'</td><td class="l">{_esc(entry.get("error") or "")}</td></tr>' for entry in scores)
    table = ('<table id="evaluation-scores"><thead><tr><th class="l">score</th><th class="l">adjust_pred_probs</th>'
             '<th>AUROC</th><th>AUPRC</th><th>lift at k</th><th class="l">note</th></tr></thead>'
             f"<tbody>{rows}</tbody></table>")
    labels = [f'{entry["method"]}{" (adjusted)" if entry["adjust_pred_probs"] else ""}' for entry in scores]
    plot = unit_bars_svg(labels, {"AUROC": [entry["auroc"] for entry in scores],
                                  "AUPRC": [entry["auprc"] for entry in scores]},
                         "score-auc", "AUROC and AUPRC per label-quality score",
                         "error score 1 - label_quality against the true errors") if scores else ""
    return f"""<h2>Evaluation against verified labels</h2>
<section id="evaluation">{stale}
<p class="muted">From {EVALUATION_NAME} (<code>labelscan evaluate</code>): true labels from {_esc(source)};
{int(evaluation["num_true_errors"]):,} of {int(evaluation["num_rows"]):,} rows are true errors
({"n/a" if rate is None else f"{rate:.2%}"}). Lift at k = number of true errors.</p>
{mask_html}
{table}
{plot}
</section>
"""
