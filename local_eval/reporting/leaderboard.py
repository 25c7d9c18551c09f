"""The leaderboard: every chosen method, one setup, one budget, one table
(``python -m local_eval leaderboard``, in :mod:`local_eval.cli.leaderboard`).

Each method is evaluated by :func:`local_eval.runs.pipeline.run_evaluation` under the same
:class:`~local_eval.runs.pipeline.EvalConfig` (data, forget set, N, per-run ``budget_s``) and the
same model cache, so the original, the 2N references (scoring group + ceiling) and the N
floor models are trained once, by the first method, and read back for every other one.

The result is a ranked table (Markdown and JSON) and a plot of score against seconds per
run. A method that raises, or returns a model giving NaN logits or a NaN score, is listed as
failed with its one-line error; the board goes on.

Confidence intervals: the report's 95% bootstrap interval of F over the forget examples
(the models held fixed), carried to the final score through the utility ratios. With a
small N they are wide; the ``vs leader`` column says whether the leader's lead over the
runner-up holds beyond them (non-overlapping intervals) and which other methods' intervals
overlap the leader's. That test is strict: two methods face the same forget examples, and
an example that is hard for one is mostly hard for the other, so separate intervals
overstate how uncertain their difference is. The ``leader ahead by`` column gives the
paired interval too: the leader's score minus the row's, with the forget examples
resampled jointly (:func:`local_eval.reporting.report.paired_bootstrap`). Both are printed; the
verdict says which of them the lead clears.

Resolution (:func:`resolution`): the same paired interval for the ceiling (a 2nd retrained
set, what a perfect unlearner matches) against the runner-up. When it includes 0, even a
perfect unlearner would not be told apart from the runner-up on these forget examples, so no
leader can clear the paired interval over it at this N: the verdict says so, rather than
leaving "not told apart" to read as a tie between the two methods.

The default (:func:`default_vs_entries`): the kit's default method against each competition
entry, by the same paired interval, whoever leads the board (a kit method that scores the
same computation can head it by a hair), and whether its lead clears 0 over all of them.

Repeats (``--repeats R``): the budget is wall-clock time, so the steps a method fits, and its
score, differ between two evaluations of the same method on the same references and run
seeds. With R > 1 every method is evaluated R times, board after board (a slow stretch of the
machine then falls on every method of one repeat, not on every repeat of one method), each
repeat in its own rotation of the methods (:func:`repeat_order`) and, under ``retime``, with
its own budget from one retraining timed at its start; a row holds the means over its repeats
(:func:`combine_repeats`), its intervals are over the forget examples of the per-example
means, and the board says who led each repeat and in how many the leader's paired lead held
(:func:`repeat_summary`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from operator import itemgetter
from pathlib import Path

import numpy as np

from local_eval.common.errors import RunTimeout, UsageError
from local_eval.common.files import atomic_write_bytes
from local_eval.common.journal import Journal, is_key
from local_eval.reporting.outputs import score_result
from local_eval.reporting.report import (
    bootstrap_interval,
    ceiling_example_scores,
    jsonable,
    paired_bootstrap,
)
from local_eval.runs.loading import load_unlearning, parse_hyperparameters, with_time_limit
from local_eval.runs.pipeline import SubmissionError, resolve_budget, run_evaluation

__all__ = [
    "PRIVATE_LEADERBOARD",
    "Row",
    "board_identity",
    "choose_methods",
    "combine_repeats",
    "competition_agreement",
    "evaluate_methods",
    "format_markdown",
    "lead_holds",
    "lead_holds_paired",
    "leader_ahead",
    "machine",
    "method_entry",
    "rank",
    "repeat_order",
    "repeat_summary",
    "resolution",
    "row_from_record",
    "row_record",
    "versus_leader",
    "write_board",
]

FILES = ("leaderboard.md", "leaderboard.json", "leaderboard.png")
# a row's figures from the report's diagnosis of its runs (local_eval.reporting.diagnosis)
DIAGNOSIS_FIELDS = ("mean_error", "spread_ratio", "kept_memorisation", "kept_own")
# The competition's entries the kit re-implements, in their Kaggle private-leaderboard order
# (ranks 2 to 9; rank 1 is not re-implemented): ../shared/spec/methods.md.
PRIVATE_LEADERBOARD = (
    "forget_contrast",
    "masked_small_gradients",
    "noisy_weights",
    "prune_reinit",
    "conv_transpose",
    "reset_distill",
    "noise_injection",
    "forget_free",
)


@dataclass(frozen=True)
class Row:
    """One method's line of the board; the numbers are ``None`` when it failed."""

    method: str
    score: float | None = None
    score_ci95: tuple[float, float] | None = None
    forget_quality: float | None = None
    fraction_of_ceiling: float | None = None
    retain_ratio: float | None = None
    test_ratio: float | None = None
    seconds_per_run: float | None = None
    ratio_to_retraining: float | None = None
    runs_over_budget: int | None = None
    default: bool = False  # submission.DEFAULT_METHOD, what submission.unlearning runs
    error: str | None = None  # one line; set when the method failed
    notes: tuple[str, ...] = ()  # the method's warnings (what it skipped to fit the budget)
    # Each forget example's share of the score (its F points times the utility ratios; their
    # mean is ``score``), for the paired intervals; not written to the JSON.
    example_scores: np.ndarray | None = field(default=None, repr=False, compare=False)
    repeat_scores: tuple[float, ...] = ()  # each repeat's score, with --repeats R > 1
    # the report's per-example diagnosis of the runs (local_eval.reporting.diagnosis): how far
    # their mean lies off the references', their spread over the references', the shares of
    # the originals' memorisation and of their original's own deviation kept (None: not split)
    mean_error: float | None = None
    spread_ratio: float | None = None
    kept_memorisation: float | None = None
    kept_own: float | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


# --------------------------------------------------------------------------------------
# Ranking (pure)
# --------------------------------------------------------------------------------------
def rank(rows: Sequence[Row]) -> list[Row]:
    """Scored rows by score (highest first; ties by F, then name), failed rows last by name."""
    scored = [r for r in rows if not r.failed]
    failed = [r for r in rows if r.failed]
    scored.sort(key=lambda r: (-r.score, -(r.forget_quality or 0.0), r.method))
    return scored + sorted(failed, key=lambda r: r.method)


def versus_leader(ranked: Sequence[Row]) -> list[str]:
    """The ``vs leader`` column of ranked rows (see :func:`rank`).

    The leader: "lead holds" when its score interval lies entirely above the runner-up's,
    else "within CIs"; every other scored row: "overlaps leader" or "below leader"; failed
    rows and a lone scored row: "".
    """
    scored = [r for r in ranked if not r.failed]
    if len(scored) < 2:
        return [""] * len(ranked)
    leader_low = scored[0].score_ci95[0]
    column = []
    for i, row in enumerate(ranked):
        if row.failed:
            column.append("")
        elif i == 0:
            column.append("lead holds" if lead_holds(ranked) else "within CIs")
        else:
            column.append("overlaps leader" if row.score_ci95[1] >= leader_low else "below leader")
    return column


def leader_ahead(ranked: Sequence[Row], *, seed: int = 0) -> list[tuple[float, float] | None]:
    """Per ranked row, the paired 95% interval of (leader's score - row's score).

    ``None`` for the leader, failed rows, and rows (or a leader) without ``example_scores``.
    """
    scored = [r for r in ranked if not r.failed]
    leader = scored[0] if scored else None
    if leader is None or leader.example_scores is None:
        return [None] * len(ranked)
    return [
        None
        if row is leader or row.failed or row.example_scores is None
        else paired_bootstrap(leader.example_scores, row.example_scores, seed=seed)
        for row in ranked
    ]


def lead_holds_paired(ranked: Sequence[Row]) -> bool | None:
    """Whether the paired interval of the leader's lead over the runner-up lies above 0
    (``None``: fewer than two scored rows, or no per-example scores)."""
    scored = [r for r in ranked if not r.failed]
    if len(scored) < 2:
        return None
    interval = leader_ahead(scored[:2])[1]
    return None if interval is None else bool(interval[0] > 0.0)


def resolution(
    ranked: Sequence[Row], ceiling_scores: np.ndarray | None, *, seed: int = 0
) -> dict | None:
    """Whether a perfect unlearner would lead the runner-up beyond the paired 95% interval.

    ``ceiling_scores``: the ceiling's per-example scores
    (:func:`local_eval.reporting.report.ceiling_example_scores`, on the same forget examples
    as the rows'). Returns the runner-up's name, the ceiling's lead over it with its paired
    interval, and ``resolvable`` (that interval lies above 0); ``None`` with fewer than two
    scored rows or without per-example scores.
    """
    scored = [r for r in ranked if not r.failed]
    if len(scored) < 2 or ceiling_scores is None or scored[1].example_scores is None:
        return None
    second = scored[1]
    low, high = paired_bootstrap(ceiling_scores, second.example_scores, seed=seed)
    return {
        "against": second.method,
        "ceiling_ahead": float(np.mean(ceiling_scores) - second.score),
        "ceiling_ahead_ci95": [low, high],
        "resolvable": bool(low > 0.0),
    }


def lead_holds(ranked: Sequence[Row]) -> bool | None:
    """Whether the leader's score interval lies above the runner-up's (``None``: < 2 scored)."""
    scored = [r for r in ranked if not r.failed]
    if len(scored) < 2:
        return None
    return bool(scored[0].score_ci95[0] > scored[1].score_ci95[1])


def combine_repeats(rows: Sequence[Row]) -> Row:
    """One method's row from its ``R`` repeats (the same method, references and forget
    examples): the means of their figures, the interval over the forget examples of the
    per-example means (rows without per-example scores: the envelope of the repeats'
    intervals), the runs over budget summed, every repeat's score kept. A repeat that
    failed fails the row (a method that fails one time in R is not ranked on the others)."""
    if not rows:
        raise ValueError("combine_repeats needs at least one row")
    if len({r.method for r in rows}) != 1:
        names = [r.method for r in rows]
        raise ValueError(f"combine_repeats takes one method's repeats, got rows of {names}")
    if len(rows) == 1:
        return rows[0]
    first = rows[0]
    kinds: dict[str, str] = {}  # each kind of note once, as the first repeat that had it said it
    for note in (n for r in rows for n in r.notes):
        kinds.setdefault(_note_kind(note), note)
    notes = tuple(kinds.values())
    failed = next((i for i, r in enumerate(rows) if r.failed), None)
    if failed is not None:
        error = f"repeat {failed + 1} of {len(rows)}: {rows[failed].error}"
        return Row(first.method, default=first.default, error=error, notes=notes)

    def mean(name: str) -> float | None:
        values = [getattr(r, name) for r in rows]
        return None if any(v is None for v in values) else float(np.mean(values))

    scores = tuple(r.score for r in rows)
    examples = None
    interval = (min(r.score_ci95[0] for r in rows), max(r.score_ci95[1] for r in rows))
    if all(r.example_scores is not None for r in rows):
        examples = np.mean([r.example_scores for r in rows], axis=0)
        interval = bootstrap_interval(examples)
    over = [r.runs_over_budget for r in rows]
    return Row(
        first.method,
        score=float(np.mean(scores)),
        score_ci95=interval,
        forget_quality=mean("forget_quality"),
        fraction_of_ceiling=mean("fraction_of_ceiling"),
        retain_ratio=mean("retain_ratio"),
        test_ratio=mean("test_ratio"),
        seconds_per_run=mean("seconds_per_run"),
        ratio_to_retraining=mean("ratio_to_retraining"),
        runs_over_budget=None if None in over else int(sum(over)),
        default=first.default,
        notes=notes,
        example_scores=examples,
        repeat_scores=scores,
        **{name: mean(name) for name in DIAGNOSIS_FIELDS},
    )


def repeat_summary(boards: Sequence[Sequence[Row]]) -> dict:
    """Who led each repeat's board (its rows ranked alone) and whether the leader's paired
    lead over the runner-up held there."""
    ranked = [rank(rows) for rows in boards]
    leaders = [next((r.method for r in b if not r.failed), None) for b in ranked]
    return {
        "repeats": len(boards),
        "leaders": leaders,
        "lead_holds_paired": [lead_holds_paired(b) for b in ranked],
    }


def row_from_report(
    method: str, report: dict, *, default: bool = False, points: np.ndarray | None = None
) -> Row:
    """A board row from a ``local_eval.reporting.report.build_report`` dict; a NaN score -> failed.

    ``points``: the report's per-example F points (``ExampleDetails.points``), kept as the
    row's ``example_scores`` for the paired intervals.
    """
    from local_eval.scoring.metric import final_score

    score = report["score"]
    if not math.isfinite(score):
        return Row(method, default=default, error="the score is NaN")
    acc = report["accuracy"]

    def score_at(quality: float) -> float:  # the utility ratios held fixed, as in the report
        return final_score(
            quality,
            retain_acc_unlearned=acc["unlearned"]["retain"]["mean"],
            retain_acc_retrained=acc["retrained"]["retain"]["mean"],
            test_acc_unlearned=acc["unlearned"]["test"]["mean"],
            test_acc_retrained=acc["retrained"]["test"]["mean"],
        )

    low, high = report["forget_quality_ci95"]
    t = report["time"]
    diagnosis = report.get("diagnosis", {}).get("unlearned", {})
    return Row(
        method,
        score=score,
        score_ci95=(score_at(low), score_at(high)),
        forget_quality=report["forget_quality"],
        fraction_of_ceiling=report["fraction_of_ceiling"],
        retain_ratio=report["utility"]["retain_ratio"],
        test_ratio=report["utility"]["test_ratio"],
        seconds_per_run=t["unlearning_s_mean"],
        ratio_to_retraining=t["ratio_to_retraining"],
        runs_over_budget=report.get("method", {}).get("runs_over_budget"),
        default=default,
        # The score is linear in F (F times the utility ratios), so each example's share is
        # its points times the score of F = 1.
        example_scores=None if points is None else np.asarray(points) * score_at(1.0),
        **{name: diagnosis.get(name) for name in DIAGNOSIS_FIELDS},
    )


def competition_agreement(ranked: Sequence[Row]) -> dict | None:
    """How this board orders the competition's entries against their private-leaderboard
    order: Spearman's rho and Kendall's tau (scipy's, tau-b) between the two rankings of the
    entries that scored here; ``None`` with fewer than 3 of them scored (no order to judge)."""
    from scipy.stats import kendalltau, spearmanr

    entries = [r.method for r in ranked if not r.failed and r.method in PRIVATE_LEADERBOARD]
    if len(entries) < 3:
        return None
    private = [PRIVATE_LEADERBOARD.index(m) + 2 for m in entries]  # ranks 2..9
    local = list(range(1, len(entries) + 1))
    return {
        "entries": entries,  # in this board's order
        "private_ranks": private,
        "missing": [m for m in PRIVATE_LEADERBOARD if m not in entries],
        "spearman_rho": float(spearmanr(local, private).statistic),
        "kendall_tau": float(kendalltau(local, private).statistic),
    }


def default_vs_entries(ranked: Sequence[Row], *, seed: int = 0) -> dict | None:
    """The kit's default against the competition's entries: its paired 95% interval of
    (default's score - entry's score) over each scored entry, the best entry's first, and
    whether the lead clears 0 over all of them (the issue's test of a default, which a board
    led by another kit method does not show in its leader column). ``None`` without a scored
    default, a scored entry, or per-example scores."""
    default = next((r for r in ranked if r.default and not r.failed), None)
    entries = [r for r in ranked if not r.failed and r.method in PRIVATE_LEADERBOARD]
    if default is None or not entries:
        return None
    if any(r.example_scores is None for r in (default, *entries)):
        return None
    leads = [
        {
            "entry": r.method,
            "lead": default.score - r.score,
            "ci95": paired_bootstrap(default.example_scores, r.example_scores, seed=seed),
        }
        for r in entries  # ranked: the best-scoring entry first
    ]
    return {
        "default": default.method,
        "leads": leads,
        "holds_over_every_entry": all(lead["ci95"][0] > 0.0 for lead in leads),
    }


def _agreement_line(ranked: Sequence[Row]) -> str | None:
    agreement = competition_agreement(ranked)
    if agreement is None:
        return None
    entries, missing = agreement["entries"], agreement["missing"]
    left = f" ({', '.join(f'`{m}`' for m in missing)} not scored)" if missing else ""
    return (
        f"Against the competition: this board orders {len(entries)} of the "
        f"{len(PRIVATE_LEADERBOARD)} re-implemented entries{left} with Spearman's rho "
        f"{agreement['spearman_rho']:.2f} and Kendall's tau {agreement['kendall_tau']:.2f} to "
        "their private-leaderboard ranks (1: the same order; 0: unrelated; -1: reversed)."
    )


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------
def format_markdown(ranked: Sequence[Row], meta: dict) -> str:
    """The board as Markdown: how it was made, the table, the shared reference figures."""
    setup = meta.get("setup", {})
    budget = meta.get("budget_s")
    lines = [
        f"## {meta.get('title', 'Leaderboard')}",
        "",
        f"- command: `{meta.get('command', '?')}`",
        f"- machine: {meta.get('machine', '?')}",
        f"- N = {meta.get('n_models')} models per group; budget "
        + ("none (each method's full recipe)" if budget is None else f"{budget:.3g} s per run")
        + (" (the repeats' mean)" if _retimed_each(meta) else "")
        + f"; {meta.get('date', '?')}; kit commit {meta.get('kit_commit') or '?'}",
    ]
    resumed = meta.get("resumed")
    if resumed:
        done, total = resumed["read_back"], resumed["evaluations"]
        lines.append(
            f"- resumed: {'all' if done == total else done} of its {total} evaluations read back "
            "from an earlier start of the same command"
            + ("" if done == total else ", the others run in this one")
        )
    if setup:
        lines.append(
            f"- data: {setup.get('dataset')}, forget {setup.get('forget')} "
            f"({setup.get('forget_examples')} examples), {setup.get('arch')} / "
            f"{setup.get('recipe')}, seed {setup.get('seed')}"
            + (f", references by the {setup['trainer']} trainer" if "trainer" in setup else "")
        )
    refs = meta.get("references")
    if refs:
        lines.append(
            f"- shared by every method: one retraining (the original's training, the budget's "
            f"and the x retraining column's base) {refs['retraining_s']:.2f} s"
            + (" (the repeats' mean)" if _retimed_each(meta) else "")
            + f"{_references_s(refs)}; ceiling (a 2nd retrained set) F {refs['ceiling_f']:.3f}, "
            f"score {refs['ceiling_score']:.3f}; "
            f"floor (no unlearning) F {refs['floor_f']:.3f}, score {refs['floor_score']:.3f}"
        )
    lines += ["", *_table(ranked), "", _verdict(ranked, meta.get("resolution"))]
    if meta.get("repeat_summary"):
        lines.append(_repeats_line(meta["repeat_summary"]))
    agreement = _agreement_line(ranked)
    if agreement is not None:
        lines.append(agreement)
    default = next((r for r in ranked if r.default), None)
    if default is not None:
        lines.append(_default_line(ranked, default))
    lines += _diagnosis_table(ranked)
    notes = [(r.method, n) for r in ranked for n in r.notes]
    if notes:
        lines += ["", "What the methods said (their warnings, once per kind of message):", ""]
        lines += [f"- `{m}`: {_escape(n)}" for m, n in notes]
    if meta.get("plot"):
        lines += ["", f"![score against seconds per run]({meta['plot']})"]
    return "\n".join(lines) + "\n"


def _diagnosis_table(ranked: Sequence[Row]) -> list[str]:
    """Each scored row's per-example diagnosis, in the board's order; nothing when no row has
    one (rows read back from a board of an older kit)."""
    rows = [r for r in ranked if not r.failed and r.mean_error is not None]
    if not rows:
        return []

    def cell(x: float | None, suffix: str = "") -> str:
        return "-" if x is None else f"{x:.2f}{suffix}"

    lines = [
        "",
        "Where the runs differ from the references, per forget example (the report's diagnosis, "
        "`local_eval.reporting.diagnosis`): how far their mean logit-scaled confidence lies off "
        "the references' on average, their spread over the references' (the median over the "
        "examples), and the shares they keep of the originals' memorisation and of their own "
        'original\'s seed quirks (1 = all of it; "-" = not split off).',
        "",
        "| method | mean off | spread | memorisation kept | own kept |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        name = f"`{r.method}`" + (" (default)" if r.default else "")
        lines.append(
            f"| {name} | {cell(r.mean_error)} | {cell(r.spread_ratio, 'x')} | "
            f"{_pct(r.kept_memorisation)} | "
            f"{'-' if r.kept_own is None else _pct(r.kept_own)} |"
        )
    return lines


def _table(ranked: Sequence[Row]) -> list[str]:
    repeated = any(r.repeat_scores for r in ranked)
    head = (
        "| # | method | score [95% CI] | "
        + ("per repeat | " if repeated else "")
        + "F | F / ceiling | retain ratio | test ratio "
        "| s / run | x retraining | vs leader | leader ahead by [paired 95% CI] |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    column = versus_leader(ranked)
    place = 0
    for row, versus, ahead in zip(ranked, column, leader_ahead(ranked), strict=True):
        name = f"`{row.method}`" + (" (default)" if row.default else "")
        if row.failed:
            empty = " |" * (head.count("|") - 4)
            lines.append(f"| - | {name} | **failed**: {_escape(row.error)} |{empty}")
            continue
        place += 1
        low, high = row.score_ci95
        over = f" ({row.runs_over_budget} over budget)" if row.runs_over_budget else ""
        lines.append(
            f"| {place} | {name} | {row.score:.3f} [{low:.3f}, {high:.3f}] "
            + (f"| {' / '.join(f'{x:.3f}' for x in row.repeat_scores)} " if repeated else "")
            + f"| {row.forget_quality:.3f} | {_pct(row.fraction_of_ceiling)} "
            f"| {row.retain_ratio:.3f} | {row.test_ratio:.3f} "
            f"| {row.seconds_per_run:.2f}{over} | {_two(row.ratio_to_retraining)} | {versus} "
            f"| {_ahead(ranked[0].score - row.score, ahead) if place > 1 else ''} |"
        )
    return lines


def _two(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _ahead(gap: float, interval: tuple[float, float] | None) -> str:
    if interval is None:
        return f"{gap:+.3f} [n/a]"
    return f"{gap:+.3f} [{interval[0]:+.3f}, {interval[1]:+.3f}]"


def _verdict(ranked: Sequence[Row], resolved: dict | None = None) -> str:
    holds = lead_holds(ranked)
    failed = sum(r.failed for r in ranked)
    tail = f" {failed} method(s) failed." if failed else ""
    if holds is None:
        return "Fewer than two methods scored: no ranking to judge." + tail
    first, second = [r for r in ranked if not r.failed][:2]
    overlapping = sum(v == "overlaps leader" for v in versus_leader(ranked))
    paired = lead_holds_paired(ranked)
    paired_text = {
        True: " Paired over the same forget examples, the lead's 95% interval lies above 0.",
        False: " Paired over the same forget examples, the lead's 95% interval includes 0: "
        "the two are not told apart on these examples.",
        None: "",
    }[paired] + _resolution_text(resolved)
    if holds:
        return (
            f"`{first.method}` leads `{second.method}` beyond the 95% CIs "
            f"(non-overlapping intervals).{paired_text}{tail}"
        )
    return (
        f"`{first.method}` ranks first, but its lead over `{second.method}` does not hold beyond "
        f"the separate 95% CIs: {overlapping} method(s) overlap the leader's interval."
        f"{paired_text}{tail}"
    )


def _repeats_line(summary: dict) -> str:
    n, leaders, held = summary["repeats"], summary["leaders"], summary["lead_holds_paired"]
    counts = {m: leaders.count(m) for m in dict.fromkeys(m for m in leaders if m is not None)}
    firsts = ", ".join(f"`{m}` {c}" for m, c in counts.items())
    return (
        f"Repeats: {n} evaluations of every method on the same references and run seeds (the "
        "budget is wall-clock time, so the steps that fit differ between them); the rows are "
        "their means, the intervals over the forget examples of the per-example means. "
        f"First in a repeat's own ranking: {firsts} (of {n}); the leader's paired lead over "
        f"its runner-up held in {sum(h is True for h in held)} of {n}. Each repeat takes the "
        "methods in its own rotation of the list." + _yardsticks_text(summary)
    )


def _retimed_each(meta: dict) -> bool:
    """Whether one retraining was timed again before every repeat (``--budget-s retime``)."""
    timed = meta.get("repeat_summary", {}).get("retraining_s") or []
    return bool(timed) and all(t is not None for t in timed)


def _yardsticks_text(summary: dict) -> str:
    """The per-repeat budgets, when the yardstick was timed again before each repeat."""
    if not _retimed_each({"repeat_summary": summary}):
        return ""
    budgets = summary["budget_s"]
    return (
        " One retraining, timed again at each repeat's start: "
        + " / ".join(f"{t:.2f}" for t in summary["retraining_s"])
        + " s, so the budgets per run were "
        + " / ".join(f"{b:.3g}" for b in budgets)
        + " s."
    )


def _resolution_text(resolved: dict | None) -> str:
    if resolved is None:
        return ""
    low, high = resolved["ceiling_ahead_ci95"]
    lead = (
        f"the ceiling (a 2nd retrained set) leads `{resolved['against']}` by "
        f"{resolved['ceiling_ahead']:+.3f} [{low:+.3f}, {high:+.3f}]"
    )
    if resolved["resolvable"]:
        return f" Resolution: {lead}, so a lead over it can clear the paired interval here."
    return (
        f" Resolution: {lead}: even a perfect unlearner would not be told apart from it on "
        "these forget examples, so no lead over it can clear the paired interval at this N "
        "(more models or more forget examples would)."
    )


def _default_line(ranked: Sequence[Row], default: Row) -> str:
    if default.failed:
        return f"The kit's default method `{default.method}` failed here."
    place = [r.method for r in ranked if not r.failed].index(default.method) + 1
    line = f"The kit's default method `{default.method}` ranks {place}."
    against = default_vs_entries(ranked)
    if against is None:
        return line
    best, n = against["leads"][0], len(against["leads"])
    low, high = best["ci95"]
    holds = against["holds_over_every_entry"]
    if n == 1:
        which = "the one entry scored"
    else:
        which = f"all {n} entries scored" if holds else f"every one of the {n} entries scored"
    verdict = f"its paired lead {'clears' if holds else 'does not clear'} 0 over {which}"
    return (
        f"{line} Against the best-scoring competition entry, `{best['entry']}`: "
        f"{best['lead']:+.3f} [{low:+.3f}, {high:+.3f}] (the default's score minus the "
        f"entry's, paired 95% interval); {verdict}."
    )


def _escape(text: str | None) -> str:
    return (text or "").replace("|", "\\|")


def _pct(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.0f}%"


def to_json(ranked: Sequence[Row], meta: dict) -> dict:
    column = versus_leader(ranked)
    ahead = leader_ahead(ranked)
    rows = []
    for i, (r, v, a) in enumerate(zip(ranked, column, ahead, strict=True)):
        fields = {k: val for k, val in asdict(r).items() if k != "example_scores"}
        rows.append(
            {
                "rank": None if r.failed else i + 1,
                **fields,
                "vs_leader": v or None,
                "leader_ahead_ci95": a,
            }
        )
    return {
        **meta,
        "lead_holds_beyond_ci": lead_holds(ranked),
        "lead_holds_paired": lead_holds_paired(ranked),
        "competition_agreement": competition_agreement(ranked),
        "default_vs_entries": default_vs_entries(ranked),
        "rows": rows,
    }


def plot(ranked: Sequence[Row], meta: dict, path: Path) -> None:
    """Score (with its 95% CI) against seconds per run, one labelled point per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in ranked if not r.failed]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for r in scored:
        colour = "tab:red" if r.default else "tab:blue"
        low, high = r.score_ci95
        ax.errorbar(
            r.seconds_per_run,
            r.score,
            yerr=[[r.score - low], [high - r.score]],
            fmt="o",
            color=colour,
            capsize=3,
        )
        label = r.method + (" (default)" if r.default else "")
        ax.annotate(
            label,
            (r.seconds_per_run, r.score),
            xytext=(4, 3),
            textcoords="offset points",
            fontsize=7,
        )
    refs = meta.get("references")
    if refs:
        ax.axhline(refs["ceiling_score"], color="tab:green", ls="--", lw=1, label="ceiling")
        ax.axhline(refs["floor_score"], color="tab:grey", ls="--", lw=1, label="floor")
        ax.axvline(
            0.2 * refs["retraining_s"],
            color="tab:orange",
            ls=":",
            lw=1,
            label="20% of one retraining",
        )
    if meta.get("budget_s") is not None:
        ax.axvline(meta["budget_s"], color="black", ls=":", lw=1, label="budget")
    failed = [r.method for r in ranked if r.failed]
    title = meta.get("title", "Leaderboard")
    if failed:
        title += f"\nfailed (not shown): {', '.join(failed)}"
    ax.set(xlabel="seconds per unlearning run (mean)", ylabel="final score", title=title)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def write_board(ranked: Sequence[Row], meta: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in FILES]
    markdown = format_markdown(ranked, {**meta, "plot": FILES[2]})
    atomic_write_bytes(paths[0], markdown.encode())
    board = json.dumps(jsonable(to_json(ranked, meta)), indent=2) + "\n"
    atomic_write_bytes(paths[1], board.encode())
    plot(ranked, meta, paths[2])
    return paths


# --------------------------------------------------------------------------------------
# Running it
# --------------------------------------------------------------------------------------
def evaluate_methods(
    config,
    names: Sequence[str],
    *,
    cache,
    default: str | None = None,
    run_timeout_s: float | None = None,
    repeats: int = 1,
    progress: bool = True,
    log: Callable[[str], None] = lambda line: None,
    journal: Journal | None = None,
) -> tuple[list[Row], dict]:
    """``repeats`` ``run_evaluation`` per method, board after board; returns one row per method
    (in ``names``' order, :func:`combine_repeats`) and the figures every method shares: the
    budget and yardstick, and once a method scored, the setup and reference figures with the
    board's :func:`resolution` (with ``repeats`` > 1 the :func:`repeat_summary` too).

    A budget rule in ``config`` (``"auto"``, ``"retime"``) is resolved at the start of every
    repeat (:func:`~local_eval.runs.pipeline.resolve_budget`): with ``"retime"`` one
    retraining is timed again before each repeat (the median of three timings), and that
    repeat's runs get 20% of it, so a machine that drifts over a long board is measured
    minutes, not the whole board, before the runs it budgets. Each repeat takes the methods
    in its own rotation of ``names`` (:func:`repeat_order`), so no method always runs last,
    in the hottest stretch of the repeat.

    A method's failure (``SubmissionError``, a run still going after ``run_timeout_s``, a
    report that cannot be built, a NaN score) becomes a failed row. Any other error (bad
    data, bad device) ends the board.

    ``journal``: where each finished evaluation (a repeat's budget, a method's row, the shared
    figures) is kept as it finishes, and read back instead of being done again: a board
    interrupted and started again with the same journal resumes, its repeats keeping the
    budgets they were resolved to (the caller makes sure the journal is this board's:
    :func:`board_identity`).
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")
    boards, budgets, yardsticks, orders = [], [], [], []
    shared, ceiling = {}, None
    for index in range(repeats):
        prefix = f"repeat {index + 1}/{repeats}: " if repeats > 1 else ""
        resolved = _repeat_budget(config, index, cache=cache, progress=progress, journal=journal)
        if resolved.retraining_s is not None:
            log(f"{prefix}one retraining timed again: {resolved.retraining_s:.2f} s, "
                f"budget {resolved.budget_s:.3g} s per run")  # fmt: skip
        order = repeat_order(len(names), index, repeats)
        orders.append([names[i] for i in order])
        rows, found = _one_board(
            resolved, orders[-1], cache=cache, default=default, run_timeout_s=run_timeout_s,
            progress=progress, prefix=prefix, log=log, journal=journal, repeat=index,
        )  # fmt: skip
        boards.append([row for _, row in sorted(zip(order, rows, strict=True), key=itemgetter(0))])
        budgets.append(resolved.budget_s)
        yardsticks.append(resolved.retraining_s)
        if not shared and found is not None:
            shared, ceiling = found
    rows = [combine_repeats(list(per_method)) for per_method in zip(*boards, strict=True)]
    if shared:
        shared["resolution"] = resolution(rank(rows), ceiling)
        if yardsticks[0] is not None:  # retimed: the board's yardstick is the repeats' mean
            shared["references"]["retraining_s"] = float(np.mean(yardsticks))
    shared["budget_s"] = None if budgets[0] is None else float(np.mean(budgets))
    if repeats > 1:
        shared["repeat_summary"] = {
            **repeat_summary(boards),
            "budget_s": budgets,
            "retraining_s": yardsticks,  # None: not timed again (the cached or given figure)
            "orders": orders,
        }
    return rows, shared


def repeat_order(count: int, index: int, repeats: int) -> list[int]:
    """The positions of ``count`` methods in repeat ``index`` of ``repeats``: the list rotated
    by ``index * count // repeats``, so over the repeats each method starts in a different
    part of the board (one repeat: the list as given)."""
    shift = index * count // repeats
    return [(shift + i) % count for i in range(count)]


def _repeat_budget(config, index, *, cache, progress, journal):
    """``config`` with repeat ``index``'s budget resolved (:func:`resolve_budget`), or read
    back from ``journal`` if that repeat was started before (a resumed repeat keeps the
    budget its first methods ran under)."""
    key = f"budget-{index}"
    kept = None if journal is None else journal.get(key)
    if kept is not None:
        return replace(config, budget_s=kept["budget_s"], retraining_s=kept["retraining_s"])
    resolved = resolve_budget(config, cache=cache, progress=progress)
    if journal is not None:
        journal.put(key, {"budget_s": resolved.budget_s, "retraining_s": resolved.retraining_s})
    return resolved


def _one_board(
    config, names, *, cache, default, run_timeout_s, progress, prefix, log, journal=None, repeat=0
):
    """Every method once: its rows, and (shared figures, ceiling scores) from the first
    method that scored (``None`` if none did). With a ``journal``, a method evaluated before
    in this repeat is read back, and each new evaluation is kept as it finishes."""
    rows, found = [], None
    for i, name in enumerate(names, start=1):
        key = _row_key(repeat, name)
        kept = None if journal is None else journal.get(key)
        if kept is not None:
            rows.append(row_from_record(kept))
            if found is None and not rows[-1].failed:
                found = _found_from_record(journal.get("shared"))
            log(f"{prefix}[{i}/{len(names)}] {name}: {_said(rows[-1])} (read back)")
            continue
        start = time.perf_counter()
        method_name, hyperparameters = method_entry(name)
        loaded = load_unlearning(method=method_name, hyperparameters=hyperparameters)
        method = with_time_limit(loaded, run_timeout_s)
        failed = partial(Row, name, default=name == default)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = run_evaluation(config, method, cache=cache, progress=progress)
            except (SubmissionError, RunTimeout) as exc:
                rows.append(failed(error=one_line(exc)))
            else:
                try:
                    report, details = score_result(result, context=_report_context(result))
                    row = row_from_report(
                        name, report, default=name == default, points=details.points
                    )
                except Exception as exc:
                    row = failed(error=f"report: {one_line(exc)}")
                else:
                    if found is None:
                        found = (_shared(result, report), ceiling_example_scores(result.signals))
                        if journal is not None and journal.get("shared") is None:
                            journal.put("shared", _found_record(found))  # before any scored row
                rows.append(row)
        notes = distinct_notes([one_line(w.message) for w in caught if _from_method(w)])
        rows[-1] = replace(rows[-1], notes=notes)
        if journal is not None:
            journal.put(key, row_record(rows[-1]))
        log(f"{prefix}[{i}/{len(names)}] {name}: {_said(rows[-1])} "
            f"({time.perf_counter() - start:.1f} s)")  # fmt: skip
    return rows, found


def _said(row: Row) -> str:
    return f"failed: {row.error}" if row.failed else f"score {row.score:.3f}"


# --------------------------------------------------------------------------------------
# Resuming (what a board keeps of its finished evaluations: local_eval.common.journal)
# --------------------------------------------------------------------------------------
def board_identity(config, names: Sequence[str], *, repeats: int, run_timeout_s) -> dict:
    """What must match for a journal's evaluations to be reused by a board: the evaluation's
    settings, as given (an ``auto`` or ``retime`` budget before it is resolved), the methods
    in their order (it sets each repeat's rotation), the repeats, the runs' time limit and
    the kit's commit (other code would be other evaluations)."""
    from local_eval.common.provenance import versions

    return jsonable(
        {
            **asdict(config),  # one key per setting, so a refusal names the one that differs
            "methods": list(names),
            "repeats": repeats,
            "run_timeout_s": run_timeout_s,
            "kit_commit": versions()["kit_commit"],
        }
    )


def row_record(row: Row) -> dict:
    """``row`` as JSON, whole (its per-example scores too), for :func:`row_from_record`."""
    record = asdict(row)
    if row.example_scores is not None:
        record["example_scores"] = np.asarray(row.example_scores, dtype=float).tolist()
    return jsonable(record)


def row_from_record(record: dict) -> Row:
    """The :class:`Row` that :func:`row_record` wrote, equal to it to the last bit."""
    values = dict(record)
    if values["score_ci95"] is not None:
        values["score_ci95"] = tuple(values["score_ci95"])
    values["notes"] = tuple(values["notes"])
    values["repeat_scores"] = tuple(values["repeat_scores"])
    if values["example_scores"] is not None:
        values["example_scores"] = np.asarray(values["example_scores"], dtype=float)
    return Row(**values)


def _found_record(found: tuple[dict, np.ndarray]) -> dict:
    shared, ceiling = found
    return jsonable({"shared": shared, "ceiling": np.asarray(ceiling, dtype=float).tolist()})


def _found_from_record(record: dict | None) -> tuple[dict, np.ndarray] | None:
    if record is None:
        return None
    return record["shared"], np.asarray(record["ceiling"], dtype=float)


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def _note_kind(message: str) -> str:
    """A message with its numbers blanked: messages of one kind differ only in their numbers
    (steps that fit, layers projected: one per run)."""
    return _NUMBER.sub("#", message)


def distinct_notes(messages: Sequence[str]) -> tuple[str, ...]:
    """One line per kind of message: messages that differ only in their numbers (steps that
    fit, layers projected: one per run) are one kind, shown by its first message and a count."""
    kinds: dict[str, list[str]] = {}
    for message in messages:
        kinds.setdefault(_note_kind(message), []).append(message)
    return tuple(
        group[0]
        if len(set(group)) == 1
        else f"{group[0]} ({len(group)} such messages, "
        f"{len(set(group))} distinct: their numbers vary from run to run)"
        for group in kinds.values()
    )


def _from_method(warning: warnings.WarningMessage) -> bool:
    """A warning a method raised (not one of a library's deprecation notices)."""
    return not issubclass(warning.category, (DeprecationWarning, FutureWarning))


def _report_context(result) -> dict:
    budget = result.config.budget_s
    over = None if budget is None else int((result.signals.unlearned.seconds > budget).sum())
    return {"method": {"budget_s": budget, "runs_over_budget": over}}


def _shared(result, report: dict) -> dict:
    """What every method of the board shares: the setup and the reference figures."""
    setup = result.data
    return {
        "setup": {
            "dataset": setup["dataset"],
            "forget": setup["forget"],
            "forget_examples": setup["sizes"]["forget"],
            "sizes": setup["sizes"],
            "seed": setup["seed"],
            "arch": result.arch,
            "recipe": result.recipe.name,
            "trainer": result.config.trainer,  # of the references (the original: sequential)
            "device": result.device,
        },
        "references": {
            "retraining_s": report["time"]["retraining_s"],  # the original's own training
            "references_s_mean": report["time"]["references_s_mean"],
            "ceiling_f": report["ceiling"]["forget_quality"],
            "ceiling_score": report["ceiling"]["score"],
            "floor_f": report["floor"]["forget_quality"],
            "floor_score": report["floor"]["score"],
        },
    }


def _references_s(refs: dict) -> str:
    mean = refs.get("references_s_mean")  # absent from boards written before it was kept
    return "" if mean is None else f" (the references: {mean:.2f} s each, in worker processes)"


def machine(device: str) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, device {device}, "
        f"{platform.system()} {platform.release()}, python {platform.python_version()}"
    )


def choose_methods(spec: str) -> list[str]:
    """A comma list of board entries, checked: ``all`` (every registered method, in registry
    order), a method's name, or a variant of it, ``NAME[K=V,...]`` (the method with those
    hyperparameters, as ``--hp`` gives them), e.g. ``all,relearn[regime=reset]``. A variant
    is its own row; it is not the default and not a competition entry."""
    from submission import METHODS

    labels = []
    for piece in _split_top(spec, ","):
        if piece.strip() == "all":
            labels += list(METHODS)
        elif piece.strip():
            labels.append(_normal_label(piece))
    if not labels:
        raise ValueError("--methods is empty; give 'all' or a comma-separated list of names")
    for label in labels:
        name, hyperparameters = method_entry(label)
        # an unknown name lists the known ones, an unknown hyperparameter the method's own
        load_unlearning(method=name, hyperparameters=hyperparameters)
    return list(dict.fromkeys(labels))


_ENTRY = re.compile(r"\s*(?P<name>[A-Za-z_]\w*)\s*(?:\[(?P<hp>.*)\])?\s*", re.DOTALL)


def method_entry(label: str) -> tuple[str, dict]:
    """A board entry's method and hyperparameters: ``"relearn"`` -> ``("relearn", {})``,
    ``"relearn[regime=reset,epochs=4]"`` -> ``("relearn", {"regime": "reset", "epochs": 4})``
    (values are Python literals, else the bare string, as with ``--hp``)."""
    match = _ENTRY.fullmatch(label)
    if match is None:
        raise UsageError(f"a --methods entry is NAME or NAME[K=V,...], got {label!r}")
    pairs = [p.strip() for p in _split_top(match["hp"] or "", ",") if p.strip()]
    if match["hp"] is not None and not pairs:
        raise UsageError(f"{label!r} has empty brackets: give NAME=VALUE inside, or drop them")
    try:
        return match["name"], parse_hyperparameters(pairs)
    except UsageError as exc:
        raise UsageError(f"in the --methods entry {label!r}: {exc}") from None


def _normal_label(piece: str) -> str:
    """``" relearn[ regime=reset , epochs=4 ]"`` -> ``"relearn[regime=reset,epochs=4]"``."""
    match = _ENTRY.fullmatch(piece)
    if match is None or match["hp"] is None:
        return piece.strip()
    return f"{match['name']}[{','.join(p.strip() for p in _split_top(match['hp'], ','))}]"


def _split_top(text: str, sep: str) -> list[str]:
    """``text`` split at each ``sep`` outside brackets and quotes (a variant's commas, or a
    tuple value's, stay in their piece)."""
    pieces, depth, quote, start = [], 0, None, 0
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == sep and depth == 0:
            pieces.append(text[start:i])
            start = i + 1
    if depth != 0 or quote:
        raise UsageError(f"unbalanced brackets or quotes in {text!r}")
    return [*pieces, text[start:]]


def _row_key(repeat: int, label: str) -> str:
    """A row's journal key: a method's name as it is (boards journaled before variants
    existed resume), a variant's with a digest of its label (keys are file names)."""
    if is_key(f"row-{repeat}-{label}"):
        return f"row-{repeat}-{label}"
    name = method_entry(label)[0]
    return f"row-{repeat}-{name}-{hashlib.sha256(label.encode()).hexdigest()[:12]}"
