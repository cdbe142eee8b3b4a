"""Learning curves of modular runs by kind of query, from their metrics.jsonl, as one figure and a markdown table.

    python scripts/modular_curves.py OUT.png LABEL=RUN_FOLDER [LABEL=RUN_FOLDER ...]

For each run: the training loss, accuracy on ID tasks × trained pairs, and the last-shot-region accuracy on OOD
tasks × held-out pairs by kind of query (copyable, ratio-matchable, regression-only; the keys ``interp.train``
logs), against the step. Prints a table of every other evaluation. Works on unfinished runs (a sweep cell whose
resume state is still there) as well as finished ones. A run that started from another's weights
(``train.init_from``) is drawn after it: its steps are offset by the steps that run (and its own start) took.
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from interp.cards import markdown_table  # noqa: E402
from interp.checkpoint import init_chain, read_config, read_metrics  # noqa: E402

PANELS = [("train_loss", "training loss"), ("id_train_acc", "ID × trained pairs, all"),
          ("ood_test_acc_copyable_last", "OOD × held-out, copyable"),
          ("ood_test_acc_ratio_last", "OOD × held-out, ratio-matchable"),
          ("ood_test_acc_regression_last", "OOD × held-out, regression-only")]


def main(out: str, runs: list[str]) -> None:
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.4))
    for spec in runs:
        label, folder = spec.split("=", 1)
        offset = sum(read_config(run)["train"]["steps_done"] for run in init_chain(folder)[:-1])  # the runs it continues
        metrics = [m | {"step": m["step"] + offset} for m in read_metrics(Path(folder) / "metrics.jsonl")]
        for ax, (key, title) in zip(axes, PANELS):
            points = [(m["step"], m[key]) for m in metrics if key in m]
            ax.plot([s for s, _ in points], [v for _, v in points], label=label)
        rows = [{"step": m["step"], **{key: m.get(key, float("nan")) for key, _ in PANELS}} for m in metrics[1::2]]
        print(f"\n{label} ({folder})", *markdown_table(rows), sep="\n")
    for ax, (_, title) in zip(axes, PANELS):  # once per panel, not once per run
        ax.set(title=title, xlabel="step")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k" if x else "0"))  # no run-together ticks
    axes[0].legend(fontsize=7)
    fig.suptitle("accuracy panels: last quarter of the shots, averaged per task; chance 1/p", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
