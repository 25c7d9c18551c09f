"""The whole job: N runs into a locked folder within the budget, resumable."""

import contextlib
import shutil
import sys
import time

from local_eval.common.files import atomic_write_json, check_out_folder
from local_eval.common.timing import time_limit
from local_eval.runs.loading import LoadedMethod
from local_eval.runs.unlearning import run_seed
from local_eval.training.train import default_recipe, get_recipe
from submission.loop import warm_up
from submission_tools.run.budget import BudgetWatch, duration
from submission_tools.run.cutoff import CUTOFF_MARGIN, cutoff_cap_s, time_retrain_epoch
from submission_tools.run.folder import (
    CHECKPOINT_RE,
    MANIFEST,
    check_disk_space,
    load_manifest,
    lock_folder,
    log_job,
    save_checkpoint,
    valid_checkpoints,
    write_zip,
)
from submission_tools.run.inputs import Inputs, load_inputs, run_once
from submission_tools.run.job import RunJob


def progress_bar(total: int, initial: int):
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is a convenience, never a requirement
        return contextlib.nullcontext(None)
    return tqdm(total=total, initial=initial, unit="ckpt", dynamic_ncols=True, file=sys.stderr)


def prepare_folder(job: RunJob, inputs: Inputs) -> dict:
    """The folder's manifest, reduced to the checkpoints that are valid for this job."""
    identity = job.identity(inputs.method, inputs.original_sha, inputs.fingerprint)
    manifest = load_manifest(job.out, identity)
    manifest["checkpoints"] = valid_checkpoints(job.out, manifest, job.n)
    manifest["n"] = job.n
    atomic_write_json(job.out / MANIFEST, manifest)
    return manifest


def run_job(job: RunJob) -> int:
    """The whole job; returns the process exit code."""
    check_out_folder(job.out)
    inputs = load_inputs(job)  # every input checked before anything is written
    job = job.with_arch(inputs.arch)
    created = not job.out.exists()
    job.out.mkdir(parents=True, exist_ok=True)
    with lock_folder(job.out):  # refuses a folder another job is writing to
        try:
            return run_locked(job, inputs)
        except BaseException:
            if created and not any(CHECKPOINT_RE.match(p.name) for p in job.out.iterdir()):
                shutil.rmtree(job.out, ignore_errors=True)  # nothing of value: leave no trace
            raise


def run_locked(job: RunJob, inputs: Inputs) -> int:
    out = job.out
    manifest = prepare_folder(job, inputs)
    mine = job.indices
    todo = [i for i in mine if str(i) not in manifest["checkpoints"]]
    check_disk_space(
        out,
        checkpoints=len(todo),
        checkpoint_bytes=job.original.stat().st_size,
        zip_too=job.zip,
    )
    if len(todo) < len(mine):
        kept = len(mine) - len(todo)
        print(f"resuming: {kept} valid checkpoints kept, {len(todo)} to do", file=sys.stderr)
    budget_s = job.per_run_budget()
    cutoff = None
    if job.budget_s is None and job.cutoff > 0 and inputs.method.accepts_budget and todo:
        cutoff = cutoff_cap(job, inputs)
        budget_s = min(budget_s, cutoff["cap_s"])
        print(cutoff.pop("note"), file=sys.stderr)
    prior = budget_s if inputs.method.accepts_budget else 0.0
    watch = BudgetWatch(job.budget_h * 3600, len(todo), prior_s=prior)
    print(startup_note(job, budget_s, len(todo), inputs.method), file=sys.stderr)

    def run(index: int) -> dict:
        return run_once(
            inputs, index=index, budget_s=budget_s, batch_size=job.batch_size, debug=job.debug
        )

    if todo and watch.can_start():
        # A discarded run first: lazy imports, allocator and cuDNN warm-up would otherwise
        # eat the first checkpoint's budget (its method would then do almost nothing).
        warm_up(inputs.device)
        with job_time_limit(watch, "the warm-up run"):
            run(todo[0])
    with progress_bar(len(mine), len(mine) - len(todo)) as bar:
        for i in todo:
            if not watch.can_start():
                log_job(out, manifest, watch, stopped=True, cutoff=cutoff)
                return stop_for_budget(job, watch, manifest)
            start = time.perf_counter()
            with job_time_limit(watch, f"run {i}"):
                state = run(i)
            seconds = time.perf_counter() - start  # the run itself; saving is overhead
            seed = run_seed(inputs.setup.seed, i)
            record = {"seconds": round(seconds, 4), "seed": seed, "budget_s": budget_s}
            save_checkpoint(out, manifest, i, state, **record)
            warning = watch.record(seconds)
            if bar is not None:
                bar.set_postfix(run_s=f"{seconds:.2f}")
                bar.update(1)
            if warning:
                print(warning, file=sys.stderr)
    log_job(out, manifest, watch, stopped=False, cutoff=cutoff)
    print(summary(watch, job), file=sys.stderr)
    if job.zip:
        print(f"wrote {write_zip(out, job.n)}", file=sys.stderr)
    return 0


def job_time_limit(watch: BudgetWatch, what: str):
    """Interrupt a run still going when the job's whole budget is spent (a hang, say)."""
    left = watch.total_s - watch.elapsed()
    return time_limit(
        left,
        f"{what} was still going when the {duration(watch.total_s)} job budget ran out "
        "(does the method honour budget_s, or does it hang?); stopped",
    )


def cutoff_cap(job: RunJob, inputs: Inputs) -> dict:
    """The most seconds a run of ``job`` is granted under its cut-off (``cap_s``; one epoch
    of the evaluator's retraining recipe timed here: ``submission_tools.run.cutoff``), what
    it rests on (for the manifest's job log), and a ``note`` saying so."""
    recipe = get_recipe(default_recipe(inputs.arch, job.data))
    print(
        f"timing the retraining recipe ({recipe.name}) for the cut-off: two epochs "
        "(--cutoff 0 skips it)",
        file=sys.stderr,
    )
    epoch_s = time_retrain_epoch(inputs.setup, inputs.arch, recipe, inputs.device, job.seed)
    cap = cutoff_cap_s(epoch_s["total_s"], recipe.epochs, share=job.cutoff)
    retrain_s = recipe.epochs * epoch_s["total_s"]
    note = (
        f"one retraining here ({recipe.name}, {recipe.epochs} epochs): about "
        f"{duration(retrain_s)}; a run gets at most {cap:.2f} s ({CUTOFF_MARGIN:.0%} of the "
        f"{job.cutoff:.0%} cut-off; --cutoff 0 lifts it)"
    )
    return {
        "cap_s": round(cap, 4),
        "share": job.cutoff,
        "margin": CUTOFF_MARGIN,
        "recipe": recipe.name,
        "epochs": recipe.epochs,
        "epoch_s": round(epoch_s["total_s"], 4),
        "note": note,
    }


def startup_note(job: RunJob, budget_s: float, todo: int, method: LoadedMethod) -> str:
    note = f"{method.name}: {todo} runs to do, {budget_s:.2f} s budget per run"
    if not method.accepts_budget:
        note += " (ignored: this unlearning() takes no budget_s)"
    needed = todo * budget_s
    if job.budget_s is not None and needed > job.budget_h * 3600:
        note += (
            f"\nwarning: {todo} runs of up to {budget_s:g} s need up to {duration(needed)}, "
            f"over the {duration(job.budget_h * 3600)} budget; about "
            f"{int(job.budget_h * 3600 // budget_s)} runs of that length fit"
        )
    return note


def summary(watch: BudgetWatch, job: RunJob) -> str:
    if not watch.run_seconds:
        return f"all {len(job.indices)} checkpoints were already there"
    return (
        f"done: {len(watch.run_seconds)} runs in {watch.elapsed():.1f} s "
        f"({watch.estimate():.2f} s per run); at that pace {watch.runs_that_fit()} runs "
        f"fit in the {job.budget_h:g} h budget"
    )


def stop_for_budget(job: RunJob, watch: BudgetWatch, manifest: dict) -> int:
    have = len(manifest["checkpoints"])
    print(
        f"error: stopped with {have} of {len(job.indices)} checkpoints in {job.out}: "
        "the next run "
        f"(about {watch.estimate():.1f} s) would overrun the {job.budget_h:g} h budget. "
        f"Rerun the same command with a larger --budget-h (or a smaller --budget-s) to finish.",
        file=sys.stderr,
    )
    return 3
