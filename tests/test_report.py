"""``report.html``: contents, bounded-memory histograms, the manifest, the CLI, and a real browser.

The browser test (marked ``browser``) renders the report in headless Chromium from Debian
(``/usr/bin/chromium``), asserts on the rendered DOM and saves a screenshot under the test's
temporary directory; it skips when Chromium is absent.
"""

from __future__ import annotations

import html.parser
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import labelscan
from labelscan.cli import cli
from labelscan.demo_data import make_noisy_dataset
from labelscan import report_quality
from labelscan.report import choose_classes, quality_histograms, quality_range, render_report, write_report

NAMES = ["ant", "bee", "cat", "dog", "eel"]
ROWS = 3000
CHROMIUM = os.environ.get("LABELSCAN_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def finished_scan(tmp_path_factory):
    """A finished scan of a 3-file set with class names; returns (out, labels, data folder)."""
    from distributed import Client, LocalCluster

    root = tmp_path_factory.mktemp("report")
    data = make_noisy_dataset(ROWS, len(NAMES), noise_rate=0.25, seed=3)
    labels, pred_probs = data["labels"].astype(np.int64), data["pred_probs"]
    true_labels = data["true_labels"]
    folder = root / "data"
    folder.mkdir()
    for index, (start, stop) in enumerate([(0, 1000), (1000, 2200), (2200, ROWS)]):
        block = pred_probs[start:stop]
        pq.write_table(pa.table({"label": labels[start:stop], "pred_probs": pa.FixedSizeListArray.from_arrays(
            pa.array(block.reshape(-1)), len(NAMES)), "true_label": true_labels[start:stop]}),
            folder / f"part-{index}.parquet", row_group_size=400)
    out = root / "scan"
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        labelscan.scan(str(folder), str(out), client=client, class_names=NAMES, rows_per_partition=500)
    return out, labels, folder


def ids_in(text):
    return set(re.findall(r'\bid="([^"]+)"', text))


class _Tags(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_report_has_every_plot_and_no_external_resource(finished_scan):
    out, labels, _ = finished_scan
    result = labelscan.open_scan(str(out))
    text = render_report(result, top=7)
    ids = ids_in(text)
    assert {"summary", "noise-matrix", "issue-rate", "quality-histograms", "top-issues"} <= ids
    assert {f"quality-histogram-{k}" for k in range(len(NAMES))} <= ids
    parser = _Tags()
    parser.feed(text)
    tags = [tag for tag, _ in parser.tags]
    assert "script" not in tags and "link" not in tags and "img" not in tags and "iframe" not in tags
    for _, attrs in parser.tags:   # nothing to fetch: no src/href, only the SVG namespace URL
        assert not {"src", "href"} & set(attrs), attrs
    assert not re.findall(r"https?://(?!www\.w3\.org/2000/svg)", text)
    assert text.count('class="cell"') == len(NAMES) ** 2
    assert text.count('class="bar"') == len(NAMES)
    table = text[text.index('id="top-issues"'):]
    assert table[:table.index("</table>")].count("<tr><td") == 7   # top issues
    assert "cat" in text and "Grouped by given label" in text


def test_histograms_count_every_row_by_given_label(finished_scan):
    out, labels, _ = finished_scan
    result = labelscan.open_scan(str(out))
    histograms = quality_histograms(result.out, result.summary, bins=10)
    assert histograms["by"] == "given label"
    totals = histograms["clean"].sum(axis=1) + histograms["flagged"].sum(axis=1)
    np.testing.assert_array_equal(totals, np.bincount(labels, minlength=len(NAMES)))
    np.testing.assert_array_equal(histograms["flagged"].sum(axis=1), result.summary["num_issues_per_class"])
    mask = result.mask(columns=["label_quality"])["label_quality"].to_numpy()
    assert histograms["edges"][0] == pytest.approx(mask.min()) and histograms["edges"][-1] == pytest.approx(mask.max())


def test_histograms_fall_back_to_predicted_labels_without_the_input(finished_scan, tmp_path):
    out, labels, folder = finished_scan
    moved = tmp_path / "scan"
    shutil.copytree(out, moved)
    result = labelscan.open_scan(str(moved))
    summary = {**result.summary, "input": {**result.summary["input"], "path": str(tmp_path / "gone")}}
    summary["input"]["fingerprint"] = {**summary["input"]["fingerprint"],
                                       "files": [{**entry, "path": str(tmp_path / "gone" / "x.parquet")}
                                                 for entry in summary["input"]["fingerprint"]["files"]]}
    histograms = quality_histograms(result.out, summary, bins=10)
    assert histograms["by"] == "predicted label" and "could not be read" in histograms["note"]
    assert int(histograms["clean"].sum() + histograms["flagged"].sum()) == ROWS


def test_report_outside_the_manifest_keeps_the_scan_verifiable(finished_scan, tmp_path):
    out, _, _ = finished_scan
    copy = tmp_path / "scan"
    shutil.copytree(out, copy)
    result = labelscan.open_scan(str(copy))
    written = write_report(result)
    assert Path(written) == copy / "report.html" and (copy / "report.html").stat().st_size > 1000
    labelscan.open_scan(str(copy))   # verifies every manifest file; report.html is not one
    assert "report.html" not in (copy / "_SUCCESS").read_text()


def test_report_of_a_float16_scan(tmp_path):
    """float16 ``label_quality``: pyarrow gives its footer statistics as raw bytes, decoded here."""
    from distributed import Client, LocalCluster

    data = make_noisy_dataset(900, 4, noise_rate=0.25, seed=5)
    folder = tmp_path / "data"
    folder.mkdir()
    pq.write_table(pa.table({"label": data["labels"].astype(np.int64), "pred_probs": pa.FixedSizeListArray.from_arrays(
        pa.array(data["pred_probs"].astype(np.float16).reshape(-1)), 4)}), folder / "a.parquet", row_group_size=300)
    out = tmp_path / "scan"
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        labelscan.scan(str(folder), str(out), client=client, rows_per_partition=300)
    result = labelscan.open_scan(str(out))
    assert result.summary["pred_probs_dtype"] == "float16"
    quality = result.mask(columns=["label_quality"])["label_quality"].to_numpy()
    assert quality.dtype == np.float16
    histograms = quality_histograms(result.out, result.summary, bins=10)
    assert (histograms["edges"][0], histograms["edges"][-1]) == (float(quality.min()), float(quality.max()))
    assert int(histograms["clean"].sum() + histograms["flagged"].sum()) == len(quality)
    cli_result = CliRunner().invoke(cli, ["report", str(out)], catch_exceptions=False)
    assert cli_result.exit_code == 0, cli_result.output
    assert {"noise-matrix", "quality-histograms"} <= ids_in((out / "report.html").read_text())


def test_quality_range_without_footer_statistics(tmp_path):
    values = pa.array([0.5, None, 0.25, 0.75], type=pa.float16())
    pq.write_table(pa.table({"label_quality": values}), tmp_path / "a.parquet", write_statistics=False)
    pq.write_table(pa.table({"label_quality": pa.array([None], type=pa.float16())}), tmp_path / "b.parquet")
    fs = fsspec.filesystem("file")
    assert quality_range(fs, [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]) == (0.25, 0.75)


def test_many_classes_show_those_with_most_issues():
    summary = {"num_classes": 6, "num_issues_per_class": [5, 0, 9, 9, 1, 7]}
    assert choose_classes(summary, 10) == [0, 1, 2, 3, 4, 5]
    assert choose_classes(summary, 3) == [2, 3, 5]


def test_cli_report_writes_html(finished_scan, tmp_path):
    out, _, _ = finished_scan
    copy = tmp_path / "scan"
    shutil.copytree(out, copy)
    runner = CliRunner()
    result = runner.invoke(cli, ["report", str(copy), "--top", "2"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "verified" in result.stdout and (copy / "report.html").exists()
    assert f"report: {copy}/report.html" in result.stderr
    elsewhere = tmp_path / "elsewhere" / "r.html"
    result = runner.invoke(cli, ["report", str(copy), "--json", "--html", str(elsewhere)], catch_exceptions=False)
    assert result.exit_code == 0 and elsewhere.exists()
    assert __import__("json").loads(result.stdout)["class_names"] == NAMES
    (copy / "report.html").unlink()
    result = runner.invoke(cli, ["report", str(copy), "--no-html"], catch_exceptions=False)
    assert result.exit_code == 0 and not (copy / "report.html").exists()


def _table_rows(text, element_id):
    table = text[text.index(f'id="{element_id}"'):]
    return table[:table.index("</table>")].count("<tr><td")


def test_report_shows_dataset_health(finished_scan):
    out, _, _ = finished_scan
    result = labelscan.open_scan(str(out))
    text = render_report(result, top=3, top_pairs=4)
    ids = ids_in(text)
    assert {"health", "health-score", "class-quality", "class-quality-table", "overlapping-classes"} <= ids
    assert "evaluation" not in ids   # no evaluation.json yet
    health = result.summary["health"]
    assert f'{health["overall_label_health_score"]:.4f}' in text
    assert _table_rows(text, "class-quality-table") == len(NAMES)
    assert _table_rows(text, "overlapping-classes") == min(4, len(health["overlapping_classes"]))
    worst = health["classes_by_label_quality"][0]
    rows = text[text.index('id="class-quality-table"'):]
    assert rows.index(f'<td class="l">{worst["class_name"]}</td>') < rows.index("</tr>", rows.index("<tbody>"))
    svg = text[text.index('id="class-quality"'):]
    assert svg[:svg.index("</svg>")].count('class="metric"') == len(NAMES)


def test_health_section_escapes_text():
    record = {"class_index": 0, "class_name": "<script>x</script>", "label_issues": 1, "inverse_label_issues": 1,
              "label_noise": 0.1, "inverse_label_noise": 0.1, "label_quality_score": 0.9}
    pair = {"class_index_a": 0, "class_name_a": "a&b", "class_index_b": 1, "class_name_b": '"q"',
            "num_overlapping_examples": 3, "joint_probability": 0.01}
    text = report_quality.health_section({"overall_label_health_score": 0.9, "num_label_issues": 1,
                                          "classes_by_label_quality": [record], "overlapping_classes": [pair],
                                          "num_overlapping_pairs": 1}, 10, 10)
    assert "<script>" not in text and "&lt;script&gt;x&lt;/script&gt;" in text
    assert "a&amp;b" in text and "&quot;q&quot;" in text


def test_report_shows_the_evaluation(finished_scan, tmp_path):
    from distributed import Client, LocalCluster

    from labelscan.evaluate import SCORE_VARIANTS, evaluate

    out, _, _ = finished_scan
    copy = tmp_path / "scan"
    shutil.copytree(out, copy)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        evaluation = evaluate(str(copy), "true_label", client=client)
    result = labelscan.open_scan(str(copy))
    text = render_report(result, top=3)
    ids = ids_in(text)
    assert {"evaluation", "evaluation-mask", "evaluation-precision", "evaluation-recall", "evaluation-f1",
            "evaluation-scores", "score-auc"} <= ids
    assert "evaluation-stale" not in ids
    mask = evaluation["mask"]
    for key in ("precision", "recall", "f1"):
        assert f'id="evaluation-{key}">{mask[key]:.4f}</b>' in text
    assert _table_rows(text, "evaluation-scores") == len(SCORE_VARIANTS)
    scores = text[text.index('id="evaluation-scores"'):]
    for entry in evaluation["scores"]:
        assert f'{entry["auroc"]:.4f}' in scores and f'{entry["lift_at_num_errors"]:.4f}' in scores
    svg = text[text.index('id="score-auc"'):]
    assert svg[:svg.index("</svg>")].count('class="metric"') == 2 * len(SCORE_VARIANTS)
    assert not re.findall(r"https?://(?!www\.w3\.org/2000/svg)", text)

    stored = json.loads((copy / "evaluation.json").read_text())   # an evaluation of another scan
    (copy / "evaluation.json").write_text(json.dumps({**stored, "scan": {**stored["scan"], "config_hash": "x"}}))
    assert "evaluation-stale" in ids_in(render_report(result, top=3))

    runner = CliRunner()
    cli_result = runner.invoke(cli, ["report", str(copy), "--top", "2"], catch_exceptions=False)
    assert cli_result.exit_code == 0, cli_result.output
    assert {"health", "evaluation", "score-auc"} <= ids_in((copy / "report.html").read_text())


def _chromium(*args, user_data_dir, timeout=60):
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", f"--user-data-dir={user_data_dir}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.browser
def test_report_renders_in_headless_chromium(finished_scan, tmp_path):
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"Chromium not found at {CHROMIUM} (Debian: apt-get install chromium; .ci/run does)")
    out, _, _ = finished_scan
    copy = tmp_path / "scan"
    shutil.copytree(out, copy)
    page = Path(write_report(labelscan.open_scan(str(copy)))).resolve()
    url = page.as_uri()

    dumped = _chromium("--dump-dom", url, user_data_dir=tmp_path / "profile-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = dumped.stdout
    parser = _Tags()
    parser.feed(dom)
    by_id = {attrs["id"]: tag for tag, attrs in parser.tags if "id" in attrs}
    for plot in ("noise-matrix", "issue-rate", *(f"quality-histogram-{k}" for k in range(len(NAMES)))):
        assert by_id.get(plot) == "svg", f"{plot} is not a rendered <svg> element"
    assert by_id.get("top-issues") == "table" and by_id.get("quality-histograms") == "div"
    rects = [attrs for tag, attrs in parser.tags if tag == "rect"]
    assert sum(attrs.get("class") == "cell" for attrs in rects) == len(NAMES) ** 2
    assert sum(attrs.get("class") == "bar" for attrs in rects) == len(NAMES)
    assert any(attrs.get("class") == "flagged" for attrs in rects)

    screenshot = tmp_path / "report.png"
    shot = _chromium(f"--screenshot={screenshot}", "--window-size=1280,2200", "--hide-scrollbars", url,
                     user_data_dir=tmp_path / "profile-shot")
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000   # a page with plots, not a blank one
    print(f"screenshot: {screenshot}")
