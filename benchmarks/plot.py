"""Scaling plot: rows against seconds for each way of running a scan, from the benchmarks' JSON.

Reads the tidy records written by :mod:`benchmarks.scale`, :mod:`benchmarks.gpu` and
:mod:`benchmarks.cpu` and draws one series per ``benchmark`` name that has a ``seconds``
metric (``labelscan_1gpu``, ``labelscan_2gpu``, ``labelscan`` on CPU, ``cleanlab``, the read
floors, ...), plus the CPU memory run (``memory``/``wall_seconds``), on log-log axes, as a
self-contained SVG (no plotting library needed). Each series is labelled with the device the
records name.

Run: ``python -m benchmarks.plot benchmarks/results/scale-1b.json benchmarks/results/cpu.json
--out docs/scaling.svg``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

WIDTH, HEIGHT = 760, 460
MARGIN = {"left": 70, "right": 230, "top": 40, "bottom": 55}
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f",
          "#17becf", "#bcbd22"]


def load_records(paths) -> list[dict]:
    """Every record of every JSON file (each a list of records)."""
    records = []
    for path in paths:
        records.extend(json.loads(Path(path).read_text()))
    return records


def device_name(record: dict) -> str:
    """Short name of the machine a record was measured on."""
    device = (record.get("versions") or {}).get("device")
    if device and "gpu" in record["benchmark"]:
        gpus = record["benchmark"].split("_")[-1].removesuffix("gpu")
        return f"{gpus} x {device}" if gpus.isdigit() and gpus != "1" else device
    return f"{(record.get('machine') or {}).get('cpus', '?')}-core CPU"


def series(records: list[dict]) -> dict:
    """``{label: [(rows, seconds), ...]}`` sorted by rows, one per benchmark and device."""
    points: dict = {}
    for record in records:
        if record.get("rows") is None:
            continue
        if record["metric"] == "seconds":
            name = record["benchmark"]
        elif record["benchmark"] == "memory" and record["metric"] == "wall_seconds":
            name = "labelscan CPU, bounded memory"
        else:
            continue
        label = f"{name} ({device_name(record)})"
        points.setdefault(label, {})[record["rows"]] = record["value"]
    return {label: sorted(by_rows.items()) for label, by_rows in sorted(points.items())}


def _log_scale(low: float, high: float, size: float, flip: bool):
    low, high = math.floor(math.log10(low)), math.ceil(math.log10(high))
    high = max(high, low + 1)

    def position(value: float) -> float:
        fraction = (math.log10(value) - low) / (high - low)
        return size * (1 - fraction) if flip else size * fraction

    return position, range(low, high + 1)


def render_svg(data: dict, title: str) -> str:
    """The log-log chart of ``data`` (see :func:`series`) as SVG text."""
    rows = [r for points in data.values() for r, _ in points]
    seconds = [s for points in data.values() for _, s in points if s > 0]
    plot_w = WIDTH - MARGIN["left"] - MARGIN["right"]
    plot_h = HEIGHT - MARGIN["top"] - MARGIN["bottom"]
    x_of, x_decades = _log_scale(min(rows), max(rows), plot_w, flip=False)
    y_of, y_decades = _log_scale(min(seconds), max(seconds), plot_h, flip=True)
    left, top = MARGIN["left"], MARGIN["top"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'font-family="sans-serif" font-size="12">',
             f'<text x="{left}" y="22" font-size="15">{_escape(title)}</text>']
    for decade in x_decades:
        x = left + x_of(10 ** decade)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#ddd"/>')
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 18}" text-anchor="middle">1e{decade}</text>')
    for decade in y_decades:
        y = top + y_of(10 ** decade)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{10 ** decade:g} s</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{HEIGHT - 12}" text-anchor="middle">rows</text>')
    for index, (label, points) in enumerate(data.items()):
        color = COLORS[index % len(COLORS)]
        coordinates = [(left + x_of(r), top + y_of(s)) for r, s in points if s > 0]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coordinates)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}"/>' for x, y in coordinates]
        legend_y = top + 14 + 18 * index
        parts.append(f'<rect x="{left + plot_w + 14}" y="{legend_y - 9}" width="12" height="3" fill="{color}"/>')
        parts.append(f'<text x="{left + plot_w + 32}" y="{legend_y}">{_escape(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="JSON files of benchmarks.scale / gpu / cpu")
    parser.add_argument("--out", default="docs/scaling.svg")
    parser.add_argument("--title", default="labelscan: rows vs seconds (end to end, parquet in, outputs written)")
    args = parser.parse_args(argv)
    data = series(load_records(args.inputs))
    if not data:
        raise SystemExit("no 'seconds' records with rows in the inputs")
    Path(args.out).write_text(render_svg(data, args.title))
    print(f"wrote {args.out}: {len(data)} series")


if __name__ == "__main__":
    main()
