"""Detection quality on the real label-error sets in ../shared/data (the tables of docs/quality.md).

1. ``dcai_benchmarks/`` (3 sets, 50,000 rows, K=10, float64): for each label-quality score
   (self_confidence, normalized_margin with and without adjust_pred_probs,
   confidence_weighted_entropy) the AUROC, AUPRC and lift at the number of true errors of
   ``labelscan.evaluate`` (7 partitions), next to the largest difference from scikit-learn /
   cleanlab computed in memory on the same arrays; and precision/recall/F1 of the default filter.
2. ``cl_cifar10/`` (13 noise settings, 50,000 rows, K=10, float16): precision and recall of every
   ``filter_by`` of ``labelscan.find_label_issues`` against the true labels, and the Jaccard
   agreement of five of them with the masks cleanlab 0.1.0 produced for the Confident Learning
   paper.

Run ``python -m benchmarks.quality [--data DIR] [--out benchmarks/results/quality.json]``; prints the
markdown tables (``--report FILE`` prints the tables of a saved result).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given",
           "low_normalized_margin", "low_self_confidence")
PAPER_METHODS = {"prune_by_noise_rate": "cl_pbnr", "prune_by_class": "cl_pbc", "both": "cl_both",
                 "confident_learning": "conf_joint_only", "predicted_neq_given": "argmax"}
DCAI = ("cifar10n_aggregate", "cifar10n_worst", "cifar10s_noise0.2_sparsity0.4")
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _reference_lift(errors, values, k):
    order = np.argsort(-values, kind="stable")
    cut = values[order[k - 1]]
    above, tied = values > cut, values == cut
    return ((errors[above].sum() + (k - above.sum()) * errors[tied].mean()) / k) / errors.mean(), int(tied.sum())


def dcai(data: Path) -> list:
    import cleanlab.rank
    from sklearn.metrics import average_precision_score, roc_auc_score

    import labelscan
    from labelscan.evaluate import evaluate

    records = []
    for name in DCAI:
        folder = data / "dcai_benchmarks" / name
        pred_probs = np.load(folder / "pred_probs.npy")
        labels = np.load(folder / "noisy_labels.npy").astype(np.int64)
        truth = np.load(folder / "true_labels.npy")
        errors = labels != truth
        mask = labelscan.find_label_issues(labels, pred_probs)
        started = time.perf_counter()
        result = evaluate(mask, truth, labels=labels, pred_probs=pred_probs, num_partitions=7)
        seconds = time.perf_counter() - started
        for entry in result["scores"]:
            values = 1 - cleanlab.rank.get_label_quality_scores(labels, pred_probs, method=entry["method"],
                                                                 adjust_pred_probs=entry["adjust_pred_probs"])
            lift, tied = _reference_lift(errors, values, int(errors.sum()))
            reference = {"auroc": roc_auc_score(errors, values), "auprc": average_precision_score(errors, values),
                         "lift_at_num_errors": lift}
            records.append({
                "set": name, "rows": result["num_rows"], "true_errors": result["num_true_errors"],
                "method": entry["method"], "adjust_pred_probs": entry["adjust_pred_probs"],
                **{key: entry[key] for key in reference},
                "max_abs_diff_vs_sklearn": max(abs(entry[key] - reference[key]) for key in reference),
                "rows_tied_at_lift_cut": tied, "mask": result["mask"], "seconds": seconds,
            })
    return records


def cifar(data: Path) -> list:
    import labelscan
    from labelscan.evaluate import mask_metrics

    records = []
    for folder in sorted((data / "cl_cifar10").iterdir()):
        pred_probs = np.load(folder / "pred_probs.npy")
        labels = np.load(folder / "noisy_labels.npy").astype(np.int64)
        truth = np.load(folder / "true_labels.npy")
        errors = labels != truth
        for filter_by in FILTERS:
            mask = labelscan.find_label_issues(labels, pred_probs, filter_by=filter_by)
            record = {"setting": folder.name, "filter_by": filter_by, "true_errors": int(errors.sum()),
                      **mask_metrics(mask.sum(), (mask & errors).sum(), errors.sum())}
            if filter_by in PAPER_METHODS:
                paper = np.load(folder / f"issues_cleanlab010_{PAPER_METHODS[filter_by]}.npy")
                union = np.count_nonzero(paper | mask)
                record["jaccard_vs_cleanlab010"] = np.count_nonzero(paper & mask) / union if union else 1.0
            records.append(record)
    return records


def _fmt(value, digits=4):
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(result: dict) -> str:
    lines = ["### dcai_benchmarks: label-quality scores (labelscan.evaluate, 7 partitions)", "",
             "| set | true errors | score | adjust | AUROC | AUPRC | lift@errors | max \\|Δ\\| vs sklearn |",
             "|---|---:|---|:---:|---:|---:|---:|---:|"]
    for r in result["dcai"]:
        adjust = "yes" if r["adjust_pred_probs"] else "no"
        lines.append(f"| {r['set']} | {r['true_errors']:,} | {r['method']} | {adjust}"
                     f" | {_fmt(r['auroc'], 6)} | {_fmt(r['auprc'], 6)} | {_fmt(r['lift_at_num_errors'], 6)}"
                     f" | {r['max_abs_diff_vs_sklearn']:.1e} |")
    lines += ["", "Default filter (prune_by_noise_rate) against the true errors:", "",
              "| set | flagged | precision | recall | F1 |", "|---|---:|---:|---:|---:|"]
    seen = set()
    for r in result["dcai"]:
        if r["set"] in seen:
            continue
        seen.add(r["set"])
        m = r["mask"]
        lines.append(f"| {r['set']} | {m['num_flagged']:,} | {_fmt(m['precision'])} | {_fmt(m['recall'])}"
                     f" | {_fmt(m['f1'])} |")
    lines += ["", "### cl_cifar10: precision / recall of each filter_by (labelscan.find_label_issues)", "",
              "| setting | errors | " + " | ".join(FILTERS) + " |",
              "|---|---:|" + "---:|" * len(FILTERS)]
    by_setting: dict = {}
    for r in result["cifar"]:
        by_setting.setdefault(r["setting"], {})[r["filter_by"]] = r
    for setting, rows in by_setting.items():
        cells = [f"{_fmt(rows[f]['precision'], 3)} / {_fmt(rows[f]['recall'], 3)}" for f in FILTERS]
        lines.append(f"| {setting} | {rows[FILTERS[0]]['true_errors']:,} | " + " | ".join(cells) + " |")
    lines += ["", "Agreement (Jaccard) with the masks of cleanlab 0.1.0 in the Confident Learning paper:", "",
              "| setting | " + " | ".join(f"{f} ({PAPER_METHODS[f]})" for f in PAPER_METHODS) + " |",
              "|---|" + "---:|" * len(PAPER_METHODS)]
    for setting, rows in by_setting.items():
        lines.append(f"| {setting} | " + " | ".join(_fmt(rows[f]["jaccard_vs_cleanlab010"], 3)
                                                   for f in PAPER_METHODS) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quality.json"))
    parser.add_argument("--report", type=Path, help="Print the tables of a saved result and exit.")
    args = parser.parse_args(argv)
    if args.report:
        print(markdown(json.loads(args.report.read_text())))
        return
    result = {"dcai": dcai(args.data), "cifar": cifar(args.data)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(markdown(result))


if __name__ == "__main__":
    main()
