"""The report: the competition score and what it needs beside it to mean something.

:func:`build_report` turns :class:`~local_eval.training.signals.EvalSignals` into plain numbers:

- the final score ``F * (RA_U / RA_R) * (TA_U / TA_R)`` and F
  (``local_eval.scoring.metric``), with a
  95% bootstrap interval for F over the forget examples (it shows how much F moves with the
  choice of examples; the models are held fixed);
- the **ceiling**: F of a second, independent set of N retrained models against the first.
  Even a perfect unlearner does not reach F = 1 (see ``shared/spec/metric.md``), so F is also
  given as a fraction of this ceiling;
- the **floor**: F of N models trained like the original (retain + forget, other seeds)
  against the references: what models that never unlearned score when they differ by seed
  as much as the references do. (Doing nothing at all, the one original submitted N times,
  scores exactly 0: every example's unlearned column is constant, which the score caps.)
  A method below the floor leaves the forget set more visible than no unlearning would;
- accuracies (retain / test / forget, mean and std) of every group, the utility ratios,
  seconds per unlearning run and their ratio to one retraining;
- the starting kit's loss-attack sanity check (``local_eval.scoring.sanity``), labelled as such;
- the per-example diagnosis (``local_eval.reporting.diagnosis``): how far the runs' mean
  confidence lies off the references' on each forget example, how their spread compares, and
  what shares of the originals' memorisation and of the runs' original's own deviation they
  keep; the ceiling's figures beside them.

:func:`write_report` writes ``report.json``, ``per_example.csv`` (from
``metric.example_details``), ``signals.npz`` (everything needed to re-score without
retraining), ``unlearned.npz`` / ``retrained.npz`` (inputs of ``python -m local_eval score``),
``summary.txt`` and the plots.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from local_eval.reporting.diagnosis import diagnose
from local_eval.scoring import metric
from local_eval.scoring.sanity import loss_attack_accuracy
from local_eval.training.signals import GROUPS, EvalSignals, GroupSignals, example_losses
from local_eval.training.train import CUTOFF

__all__ = [
    "bootstrap_interval",
    "build_report",
    "ceiling_example_scores",
    "format_summary",
    "paired_bootstrap",
    "write_report",
]

N_BOOTSTRAP = 2000
HARDEST_SHOWN = 6  # examples in the confidence plot

GROUP_LABELS = {
    "unlearned": "unlearned (the submission)",
    "retrained": "retrained (references)",
    "ceiling": "ceiling: 2nd retrained set",
    "floor": "floor: seeded originals, as-is",
}


def confidences(signals: EvalSignals) -> dict[str, np.ndarray]:
    """Logit-scaled confidences ``(N, E)`` of every group."""
    return {
        g: metric.logit_scaled_confidence(getattr(signals, g).forget_logits, signals.targets)
        for g in GROUPS
    }


def build_report(
    signals: EvalSignals,
    *,
    context: dict | None = None,
    seed: int = 0,
    original_in_floor: bool = False,
) -> tuple[dict, metric.ExampleDetails]:
    """All figures of the report (a JSON-able dict) and the per-example details.
    ``original_in_floor``: the floor's model 0 is the runs' original (no original was given;
    ``local_eval.runs.pipeline.original_is_floor_model``), so the diagnosis can split off its
    own deviation."""
    conf = confidences(signals)
    details = metric.example_details(conf["unlearned"], conf["retrained"])
    quality = float(np.mean(details.points))  # = metric.forget_quality(U, R), one pass fewer
    bounds = {g: metric.forget_quality(conf[g], conf["retrained"]) for g in ("ceiling", "floor")}
    n_models, n_examples = conf["unlearned"].shape
    ref = signals.retrained
    scores = {
        g: _score(f, getattr(signals, g), ref) for g, f in (("unlearned", quality), *bounds.items())
    }
    low, high = bootstrap_interval(details.points, seed=seed)
    run_s = signals.unlearned.seconds
    report = {
        "score": scores["unlearned"],
        "forget_quality": quality,
        "forget_quality_ci95": [low, high],
        "ceiling": {"forget_quality": bounds["ceiling"], "score": scores["ceiling"]},
        "floor": {"forget_quality": bounds["floor"], "score": scores["floor"]},
        "fraction_of_ceiling": _ratio(quality, bounds["ceiling"]),
        "utility": {
            "retain_ratio": _ratio(
                _mean(signals.unlearned.retain_accuracy), _mean(ref.retain_accuracy)
            ),
            "test_ratio": _ratio(_mean(signals.unlearned.test_accuracy), _mean(ref.test_accuracy)),
        },
        "accuracy": {g: _accuracies(getattr(signals, g)) for g in GROUPS},
        "time": _time_figures(run_s, signals, original_in_floor=original_in_floor),
        "epsilon": {
            "mean": float(np.mean(details.epsilon)),
            "median": float(np.median(details.epsilon)),
            "capped": int(np.sum(details.epsilon >= metric.EPSILON_CAP)),
            "beyond_last_bucket": int(np.sum(details.bucket < 0)),
            "last_bucket_end": metric.max_epsilon(n_models),
        },
        "sanity_check": _sanity(signals),
        "diagnosis": diagnosis(conf, original_in_floor=original_in_floor),
        "n_models": n_models,
        "n_forget_examples": n_examples,
        **(context or {}),
    }
    return report, details


def diagnosis(conf: dict[str, np.ndarray], *, original_in_floor: bool) -> dict:
    """:func:`~local_eval.reporting.diagnosis.diagnose` of the runs and of the ceiling, both
    against the references. The runs' original is split off only when it is the floor's model
    0 and other originals remain to compare it with."""
    floor = conf["floor"]
    split = original_in_floor and len(floor) >= 2
    originals, original = (floor[1:], floor[0]) if split else (floor, None)
    return {
        "original_split": split,
        **{
            g: diagnose(conf[g], conf["retrained"], originals, original=original)
            for g in ("unlearned", "ceiling")
        },
    }


def _time_figures(run_s: np.ndarray, signals: EvalSignals, *, original_in_floor: bool) -> dict:
    """Seconds per unlearning run against one retraining, and the organisers' 20% cut-off.

    "One retraining" is the original's own training (the floor group's model 0), the
    measurement the ``auto`` budget takes its 20% of: one model trained alone, in the process
    and at the threads the unlearning runs use. The references' mean is reported beside it
    but is not the yardstick: they are trained in parallel worker processes that share the
    cores (slower per model), or in batched groups whose seconds are amortised (faster).
    """
    retrain_s = float(signals.floor.seconds[0])
    figures = {
        "unlearning_s_mean": float(np.mean(run_s)),
        "unlearning_s_max": float(np.max(run_s)),
        "retraining_s": retrain_s,
        "retraining_s_what": "the original's own training (the auto budget's base; with "
        "the retime budget, the median of three timings of that training done again at the "
        "evaluation's start)"
        if original_in_floor
        else "the recipe's original, trained here as the floor's model 0 (the given "
        "original's own training time is not known)",
        "retraining_s_of": "original" if original_in_floor else "recipe",
        "references_s_mean": float(np.mean(signals.retrained.seconds)),
    }
    if not np.isfinite(run_s).all():  # scored checkpoints without a manifest: no seconds
        return {
            **figures,
            "unlearning_s_mean": None,
            "unlearning_s_max": None,
            "ratio_to_retraining": None,
            "slow_runs": None,
            "slow_run_threshold_s": None,
        }
    return {
        **figures,
        "ratio_to_retraining": _ratio(float(np.mean(run_s)), retrain_s),
        "slow_runs": int(np.sum(run_s > CUTOFF * retrain_s)),
        "slow_run_threshold_s": CUTOFF * retrain_s,
    }


def _time_line(t: dict) -> str:
    if t["unlearning_s_mean"] is None:
        return (
            f"time: unknown per unlearning run (checkpoints without a manifest recording their "
            f"seconds); one retraining ({_yardstick(t)}) {t['retraining_s']:.2f} s"
        )
    head = (
        f"time: {t['unlearning_s_mean']:.2f} s per unlearning run (max {t['unlearning_s_max']:.2f})"
    )
    return (
        f"{head} = {t['ratio_to_retraining']:.2f} x one retraining "
        f"({_yardstick(t)}, {t['retraining_s']:.2f} s); {t['slow_runs']} run(s) over "
        "the organisers' 20% cut-off"
    )


def _yardstick(t: dict) -> str:
    """What "one retraining" was timed on (reports written before the field: the original)."""
    if t.get("retraining_s_of", "original") == "original":
        return "the original's training"
    return "the recipe's original, trained here"


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x))


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def _score(quality: float, group: GroupSignals, ref: GroupSignals) -> float:
    return metric.final_score(
        quality,
        retain_acc_unlearned=_mean(group.retain_accuracy),
        retain_acc_retrained=_mean(ref.retain_accuracy),
        test_acc_unlearned=_mean(group.test_accuracy),
        test_acc_retrained=_mean(ref.test_accuracy),
    )


def _accuracies(group: GroupSignals) -> dict:
    return {
        split: {"mean": _mean(values), "std": float(np.std(values))}
        for split, values in (
            ("retain", group.retain_accuracy),
            ("test", group.test_accuracy),
            ("forget", group.forget_accuracy),
        )
    }


def bootstrap_interval(points: np.ndarray, *, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of per-example values (F from its points, a score
    from its per-example shares) when the forget examples are resampled."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(points), size=(N_BOOTSTRAP, len(points)))
    means = points[draws].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of ``mean(a) - mean(b)`` when the examples are resampled jointly.

    ``a`` and ``b`` hold two methods' per-example values on the same forget examples (same
    order). Resampling the pairs, not each array alone, keeps what the examples share (an easy
    example is easy for both): the interval of the difference is then much narrower than two
    separate intervals suggest, and it is the right one for "is A ahead of B on these examples".
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(
            f"paired_bootstrap needs two equal-length 1-D arrays of per-example values (the same "
            f"forget examples); got shapes {a.shape} and {b.shape}"
        )
    return bootstrap_interval(a - b, seed=seed)


def ceiling_example_scores(signals: EvalSignals) -> np.ndarray:
    """Each forget example's share of the ceiling's score: its F points (the 2nd retrained set
    attacked against the references) times the ceiling's utility ratios; the mean is the
    report's ``ceiling["score"]``. What a perfect unlearner's per-example scores look like on
    these examples, for paired comparisons with a method's (the leaderboard's resolution)."""
    conf = confidences(signals)
    points = metric.example_details(conf["ceiling"], conf["retrained"]).points
    return np.asarray(points, dtype=np.float64) * _score(1.0, signals.ceiling, signals.retrained)


def _sanity(signals: EvalSignals) -> dict:
    def group_mean(group: GroupSignals) -> float:
        values = [
            loss_attack_accuracy(example_losses(z, signals.targets), test_losses)
            for z, test_losses in zip(group.forget_logits, group.test_losses, strict=True)
        ]
        return float(np.mean(values))

    return {
        "what": (
            "NOT the competition metric: the starting kit's logistic regression on "
            "per-example losses, forget vs test, 10-fold CV accuracy, mean over the models "
            "of a group; 0.5 = forget set looks unseen"
        ),
        **{g: group_mean(getattr(signals, g)) for g in ("unlearned", "retrained", "floor")},
    }


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------
def write_report(
    report: dict,
    details: metric.ExampleDetails,
    signals: EvalSignals,
    out_dir: Path,
    *,
    plots: bool = True,
) -> list[Path]:
    """Write every output file into ``out_dir`` (which must exist); returns their paths."""
    from local_eval.reporting.plots import plot_accuracies, plot_epsilons, plot_hardest

    out_dir = Path(out_dir)
    written = []

    def path(name: str) -> Path:
        written.append(out_dir / name)
        return written[-1]

    path("report.json").write_text(json.dumps(jsonable(report), indent=2) + "\n")
    path("per_example.csv").write_text(per_example_csv(details, signals))
    signals.save(path("signals.npz"))
    conf = confidences(signals)
    for group in ("unlearned", "retrained"):
        np.savez_compressed(
            path(f"{group}.npz"),
            confidences=conf[group],
            logits=getattr(signals, group).forget_logits,
            targets=signals.targets,
        )
    path("summary.txt").write_text(format_summary(report) + "\n")
    if plots:
        plot_epsilons(details, report, path("epsilons.png"))
        plot_hardest(details, conf, path("hardest.png"), count=HARDEST_SHOWN)
        plot_accuracies(signals, path("accuracies.png"))
    return written


def per_example_csv(details: metric.ExampleDetails, signals: EvalSignals) -> str:
    columns = details.as_columns()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["index", "example_id", "label", *columns])
    for i in range(len(signals.targets)):
        row = [i, signals.example_ids[i], int(signals.targets[i])]
        row += [_cell(columns[name][i]) for name in columns]
        writer.writerow(row)
    return buffer.getvalue()


def _cell(value) -> str | int | float:
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return "" if math.isnan(value) else repr(float(value))
    return str(value)


def jsonable(value):
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN
    return value


def format_summary(report: dict) -> str:
    """The screen summary of a report."""
    acc = report["accuracy"]
    t = report["time"]
    sanity = report["sanity_check"]
    lo, hi = report["forget_quality_ci95"]
    head = report.get("title", "Local evaluation")
    lines = [
        head,
        "",
        f"{'':32}{'score':>7}{'F':>7}   {'retain acc':>13}{'test acc':>15}{'forget acc':>15}",
    ]
    rows = {
        "unlearned": (report["score"], report["forget_quality"]),
        "retrained": (None, None),
        "ceiling": (report["ceiling"]["score"], report["ceiling"]["forget_quality"]),
        "floor": (report["floor"]["score"], report["floor"]["forget_quality"]),
    }
    for group, (score, quality) in rows.items():
        cells = "".join(
            f"{acc[group][s]['mean']:>8.3f}±{acc[group][s]['std']:.3f}"
            for s in ("retain", "test", "forget")
        )
        lines.append(f"{GROUP_LABELS[group]:32}{_num(score):>7}{_num(quality):>7}   {cells}")
    lines += [
        "",
        f"score {report['score']:.4f}   F {report['forget_quality']:.4f} "
        f"(95% CI {lo:.3f}-{hi:.3f} over forget examples) = "
        f"{_pct(report['fraction_of_ceiling'])} of the ceiling "
        f"{report['ceiling']['forget_quality']:.4f}; floor {report['floor']['forget_quality']:.4f} "
        "(N originals of other seeds; the one original submitted N times scores 0)",
        f"utility ratios: retain {report['utility']['retain_ratio']:.3f}, "
        f"test {report['utility']['test_ratio']:.3f}",
        _time_line(t),
        *_budget_line(report.get("method", {})),
        *_diagnosis_lines(report.get("diagnosis")),
        f"sanity check, NOT the competition metric (loss attack, forget vs test, 0.5 = unseen): "
        f"unlearned {sanity['unlearned']:.3f}, retrained {sanity['retrained']:.3f}, "
        f"original {sanity['floor']:.3f}",
    ]
    return "\n".join(lines)


def _diagnosis_lines(diag: dict | None) -> list[str]:
    if diag is None:  # a report from before the diagnosis
        return []
    runs, ceiling = diag["unlearned"], diag["ceiling"]
    spread = "-" if runs["spread_ratio"] is None else f"{runs['spread_ratio']:.2f}x"
    kept = f"keep {_pct(runs['kept_memorisation'])} of the originals' memorisation"
    if runs["kept_own"] is not None:
        kept += f" and {_pct(runs['kept_own'])} of their original's own deviation"
    return [
        f"per forget example (logit-scaled confidence, against the references): the runs' mean "
        f"is off by {runs['mean_error']:.2f} (shift {runs['shift']:+.2f}), their spread "
        f"{spread} the references'; they {kept} (unexplained {runs['unexplained']:.2f}); "
        f"the ceiling's mean is off by {ceiling['mean_error']:.2f} and keeps "
        f"{_pct(ceiling['kept_memorisation'])} of the memorisation (sampling alone)"
    ]


def _budget_line(method: dict) -> list[str]:
    if method.get("budget_s") is None:
        return []
    return [
        f"budget: {method['budget_s']:.3g} s per run; {method['runs_over_budget']} run(s) over it"
    ]


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _pct(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.0f}%"
