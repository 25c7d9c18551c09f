"""The report's figures (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from local_eval.scoring import metric
from local_eval.training.signals import GROUPS, EvalSignals

__all__ = ["plot_accuracies", "plot_epsilons", "plot_hardest"]

COLOURS = {
    "unlearned": "tab:red",
    "retrained": "tab:blue",
    "ceiling": "tab:green",
    "floor": "tab:grey",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_epsilons(details: metric.ExampleDetails, report: dict, path: Path) -> None:
    """Histogram of the per-example epsilons, with the points each bucket earns."""
    plt = _pyplot()
    eps = np.asarray(details.epsilon)
    last = report["epsilon"]["last_bucket_end"]
    fig, ax = plt.subplots(figsize=(7, 4))
    edges = np.arange(0.0, last + metric.BUCKET_WIDTH, metric.BUCKET_WIDTH)
    shown = np.minimum(eps, last + metric.BUCKET_WIDTH / 2)  # beyond the buckets: one bar
    ax.hist(
        shown,
        bins=[*edges, last + metric.BUCKET_WIDTH],
        color=COLOURS["unlearned"],
        edgecolor="white",
    )
    for k, left in enumerate(edges[:-1]):
        ax.text(
            left + metric.BUCKET_WIDTH / 2,
            0,
            f"{0.5**k:g}",
            ha="center",
            va="bottom",
            fontsize=7,
            color="black",
        )
    ax.axvline(last, color="black", lw=1, ls="--")
    ax.set_xlabel(
        f"per-example epsilon (bars past the dashed line at {last:g} earn 0 points;"
        " numbers: points per bucket)"
    )
    ax.set_ylabel("forget examples")
    ax.set_title(
        f"F = {report['forget_quality']:.3f} (ceiling "
        f"{report['ceiling']['forget_quality']:.3f}, floor "
        f"{report['floor']['forget_quality']:.3f})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_hardest(
    details: metric.ExampleDetails, conf: dict[str, np.ndarray], path: Path, *, count: int = 6
) -> None:
    """Confidence distributions of unlearned vs retrained models on the examples with the
    highest epsilon (the ones the attack separates best)."""
    plt = _pyplot()
    gap = np.abs(details.median_unlearned - details.median_retrained)
    order = np.lexsort((-gap, -details.epsilon))[:count]  # epsilon first, then median gap
    cols = min(3, len(order))
    rows = -(-len(order) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, i in zip(axes.flat, order, strict=False):
        both = np.concatenate([conf["unlearned"][:, i], conf["retrained"][:, i]])
        bins = np.histogram_bin_edges(both, bins=24)  # shared, so the bars compare
        for group in ("unlearned", "retrained"):
            ax.hist(conf[group][:, i], bins=bins, alpha=0.6, color=COLOURS[group], label=group)
        ax.set_title(f"example {i}: epsilon {details.epsilon[i]:.2f}", fontsize=9)
        ax.set_xlabel("logit-scaled confidence", fontsize=8)
    for ax in list(axes.flat)[len(order) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_accuracies(signals: EvalSignals, path: Path) -> None:
    """Retain / test / forget accuracy of every model, per group."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5), sharey=False)
    rng = np.random.default_rng(0)
    for ax, split in zip(axes, ("retain", "test", "forget"), strict=True):
        for x, group in enumerate(GROUPS):
            values = getattr(getattr(signals, group), f"{split}_accuracy")
            jitter = rng.uniform(-0.15, 0.15, len(values))
            ax.scatter(x + jitter, values, s=10, color=COLOURS[group], alpha=0.7)
            ax.hlines(np.mean(values), x - 0.3, x + 0.3, color="black", lw=1)
        ax.set_xticks(range(len(GROUPS)), GROUPS, fontsize=8)
        ax.set_title(f"{split} accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
