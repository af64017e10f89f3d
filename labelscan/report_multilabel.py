"""``report.html`` of a multi-label scan (:mod:`labelscan.multilabel_scan`).

Sections: ``#summary`` (rows, classes, issues, configuration), ``#issue-rate`` (share of the
rows that each class's one-vs-rest problem flags, classes with the most issues first when
there are many), ``#audioset`` (micro-F1 of the AudioSet threshold rule per candidate
threshold) and ``#top-issues`` (given labels and the classes whose problem flagged the row).
"""

from __future__ import annotations

import html

import numpy as np


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _names(summary) -> list:
    names = summary.get("class_names")
    return [str(name) for name in names] if names else [str(k) for k in range(int(summary["num_classes"]))]


def _label_list(values, names) -> str:
    return ", ".join(names[int(k)] if 0 <= int(k) < len(names) else str(k) for k in values)


def issues_table(frame, names) -> str:
    """The top issues: rank, row, [id], given labels, flagged classes, label quality."""
    if frame is None or not len(frame):
        return '<table id="top-issues"><tr><td class="l">no issues</td></tr></table>'
    columns = [c for c in ("rank", "row_id", "id", "given_labels", "issue_classes", "label_quality") if c in frame]
    head = "".join(f'<th class="{"l" if c in ("id", "given_labels", "issue_classes") else ""}">{_esc(c)}</th>'
                   for c in columns)
    rows = []
    for record in frame[columns].itertuples(index=False):
        cells = []
        for column, value in zip(columns, record):
            if column in ("given_labels", "issue_classes"):
                cells.append(f'<td class="l">{_esc(_label_list(value, names))}</td>')
            elif column == "label_quality":
                cells.append(f"<td>{value:.4g}</td>")
            else:
                cells.append(f'<td class="{"l" if column == "id" else ""}">{_esc(value)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table id="top-issues"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def body(result, top: int, max_classes: int) -> str:
    """The multi-label sections of the page (between the header and the end of ``<body>``)."""
    from labelscan.report import bars_svg, choose_classes

    summary = result.summary
    names = _names(summary)
    rows, issues = int(summary["num_rows"]), int(summary["num_issues"])
    config = summary.get("config", {})
    per_class = summary.get("num_issues_per_class")
    plot = ""
    if per_class is not None:
        shown = choose_classes(summary, max_classes)
        rates = np.asarray(per_class, dtype=np.float64) / max(rows, 1)
        plot = (f'<h2>Issues per class</h2><p class="muted">Share of all rows flagged by each class\'s one-vs-rest '
                f"problem ({len(shown)} of {len(names)} classes).</p>"
                + bars_svg(rates[shown], [names[k] for k in shown], "issue-rate", "issues per class",
                           np.asarray(per_class)[shown].tolist()))
    audioset = summary["statistics"].get("audioset") or {}
    audioset_rows = "".join(f"<tr><td>{t:.2f}</td><td>{f:.4f}</td></tr>"
                            for t, f in zip(audioset.get("thresholds", []), audioset.get("micro_f1", [])))
    frame = result.issues(top) if top else None
    return f"""<section id="summary"><div class="tiles">
<div class="tile">rows<b>{rows:,}</b></div>
<div class="tile">classes (K)<b>{len(names):,}</b></div>
<div class="tile">rows with label issues<b id="num-issues">{issues:,}</b></div>
<div class="tile">share flagged<b>{(issues / rows if rows else 0):.2%}</b></div>
<div class="tile">filter_by<b style="font-size:14px">{_esc(config.get("filter_by"))}</b></div>
<div class="tile">rank_by<b style="font-size:14px">{_esc(config.get("rank_by"))}</b></div>
</div><p class="muted">Multi-label scan: K one-vs-rest problems, a row is flagged when any of them flags it.</p>
</section>
{plot}
<h2>AudioSet threshold rule</h2>
<p class="muted">Micro-F1 of <code>P &gt; t</code> against the given labels; best threshold
{_esc(audioset.get("threshold"))}.</p>
<table id="audioset"><thead><tr><th>t</th><th>micro-F1</th></tr></thead><tbody>{audioset_rows}</tbody></table>
<h2>Top issues</h2>
<p class="muted">The {min(top, issues):,} worst-ranked of {issues:,} rows.</p>
{issues_table(frame, names)}
"""
