"""``python -m submission.run``: N unlearned checkpoints within a time budget, resumable.

Example (the competition's job, 512 checkpoints in 8 hours)::

    python -m submission.run --data kaggle:/kaggle/input/neurips-2023-machine-unlearning \\
        --original original_model.pth --arch resnet18 --method scrub --out ckpts --zip

Writes ``unlearned_checkpoint_{i}.pth`` (plain state dicts) and ``manifest.json`` (method,
hyperparameters, seed, data fingerprint, seconds and sha256 per checkpoint) into ``--out``.
Every file is written to a temporary name and moved into place, so an interrupted job leaves
no half-written checkpoint; the same command resumes it, keeping the checkpoints whose
checksum matches the manifest (a checkpoint whose checksum does not match is reported and
redone). A lock file keeps two jobs out of one folder.

The budget: ``--budget-h`` for the whole job (default 8). Each run gets ``--budget-s``
seconds, or an even share of the job budget, and the method scales its work to that. The
runner projects the total from the first runs, warns when N will not fit, and never starts a
run it cannot finish.

Sharding: ``--shard i/K`` writes only the checkpoints j with ``j % K == i`` (K jobs on K
machines, each with its own ``--out`` and its own ``--budget-h``, shared by its runs);
``python -m submission.run merge DIR... --out ALL [--zip]`` (``submission.merge``) puts the
K folders' checkpoints together, checked, as one unsharded job would have written them.

Failures: a bad input (path, option, original model) ends with one ``error:`` line and exit
status 2 before anything is written. An ``unlearning`` that raises, or returns NaN/inf
weights, stops the job with exit status 2 (``--debug`` shows the traceback); a run still going
when the job budget is spent (a hang, say) is interrupted and the job stops with exit status
3. Checkpoints already written stay valid for a resume; a folder this job created and left
without any checkpoint is removed. Original models are read with
``torch.load(weights_only=True)``: a file holding anything but tensors (a pickle that could
run code) is refused. The ``--submission`` file itself is code the user asked us to run: it
runs with the user's rights.
"""

import argparse
import ast
import contextlib
import hashlib
import importlib.util
import inspect
import json
import math
import os
import pickle
import re
import shutil
import signal
import sys
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .devices import cuda_problem
from .loop import warm_up
from .registry import UnknownMethodError, get_method
from .seeding import seed_everything
from .shard_text import split_shard

MANIFEST = "manifest.json"
LOCK = ".submission-run.lock"
ZIP_NAME = "submission.zip"
CHECKPOINT = "unlearned_checkpoint_{}.pth"
CHECKPOINT_RE = re.compile(r"^unlearned_checkpoint_(\d+)\.pth$")
BATCH_SIZE = 64  # the competition template's loaders
SHARE_OF_BUDGET = 0.9  # per-run share of the even split; the rest pays for saving and loading


class UsageError(Exception):
    """A user mistake, reported as one line without a traceback."""


class SubmissionFailed(UsageError):
    """The unlearning function raised or returned unusable weights."""


class RunTimeout(BaseException):
    """A run went past its hard time limit (a BaseException, so ``except Exception`` in the
    user's code cannot swallow it)."""


# ---------------------------------------------------------------- validation helpers


def check_positive(value, name: str) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UsageError(f"{name} must be a positive number, got {value}")


def check_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {path} is a folder; give a file")
    if not path.is_file():
        raise UsageError(f"{what} not found: {path}")
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def safe_torch_load(path: Path):
    """``torch.load(path, weights_only=True)`` on the CPU; never runs code from the file.

    Raises ``pickle.UnpicklingError`` for a file holding other Python objects, ``OSError`` and
    the like for unreadable ones.
    """
    with warnings.catch_warnings():  # e.g. "pickle protocol 4": the refusal says enough
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def load_state_dict(path: Path) -> dict:
    if path.is_dir():
        raise UsageError(f"the original model {path} is a folder; give its .pth file")
    try:
        state = safe_torch_load(path)
    except pickle.UnpicklingError:
        raise UsageError(
            f"refused to load the original model {path}: it holds Python objects other than "
            "tensors (a pickle that could run code); give a plain state dict saved with "
            "torch.save(model.state_dict(), path)"
        ) from None
    except Exception as e:  # a corrupt or non-checkpoint file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(
            f"cannot read the original model {path}: not a file written by torch.save "
            f"({type(e).__name__}: {first})"
        ) from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UsageError(f"{path} is not a state dict (a dict of tensors)")
    bad = non_finite(state)
    if bad:
        raise UsageError(
            f"the original model {path} has NaN/inf values in {', '.join(bad[:3])}"
            f"{' (+more)' if len(bad) > 3 else ''}; give a trained model with finite weights"
        )
    return state


def non_finite(state: dict) -> list[str]:
    """Names of floating-point tensors of ``state`` holding NaN or inf."""
    return [
        k
        for k, v in state.items()
        if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]


def check_out_folder(out: Path) -> None:
    """A clear error, before any work, when ``out`` cannot be a folder we write into."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    ancestor = out
    while not ancestor.exists():
        if ancestor.is_symlink():
            raise UsageError(f"--out {out}: {ancestor} is a broken link")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"cannot create --out {out}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write to --out {out}: {ancestor} is not writable")


@contextlib.contextmanager
def time_limit(seconds: float | None, message: str):
    """Raise :class:`RunTimeout` (``message``) if the block runs longer than ``seconds``.

    Uses SIGALRM, so it works in the main thread on POSIX only (elsewhere: no limit). The
    signal interrupts Python code and sleeps; a single long C call ends before it lands.
    """
    usable = seconds is not None and hasattr(signal, "setitimer") and threading_is_main()
    if not usable:
        yield
        return

    def fire(signum, frame):
        raise RunTimeout(message)

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def check_state_dict_fits(state: dict, model: torch.nn.Module, arch: str, path) -> None:
    """Clear error when ``state`` does not match ``model`` (missing/extra keys, shapes)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", extra), ("shapes", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{more}")
    if problems:
        raise UsageError(
            f"the original model {path} does not fit --arch {arch}: " + "; ".join(problems)
        )


# ---------------------------------------------------------------- the method


def parse_hparams(pairs: list[str]) -> dict:
    """``["lr=0.01", "epochs=2"]`` -> ``{"lr": 0.01, "epochs": 2}`` (Python literals)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--hp expects NAME=VALUE, got {pair!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value  # a bare string
    return out


def load_user_submission(path: Path):
    """The ``unlearning`` function defined in a user's Python file."""
    spec = importlib.util.spec_from_file_location(f"user_submission_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise UsageError(f"importing {path} failed: {type(e).__name__}: {e}") from None
    fn = getattr(module, "unlearning", None)
    if not callable(fn):
        raise UsageError(f"{path} defines no function named 'unlearning'")
    return fn


@dataclass(frozen=True)
class Method:
    """The function a run calls, with what the manifest records about it."""

    name: str
    fn: object
    hparams: dict  # every keyword-only hyperparameter, defaults filled in
    takes_budget: bool

    def __call__(self, net, retain, forget, val, *, budget_s):
        kwargs = {k: v for k, v in self.hparams.items()}
        if self.takes_budget:
            kwargs["budget_s"] = budget_s
        return self.fn(net, retain, forget, val, **kwargs)


def resolve_method(*, method: str | None, submission: str | None, overrides: dict) -> Method:
    if (method is None) == (submission is None):
        raise UsageError("give exactly one of --method NAME or --submission FILE.py")
    if submission is not None:
        path = check_file(submission, "submission file")
        fn, name = load_user_submission(path), f"file:{path.name}"
    else:
        try:
            fn, name = get_method(method), method
        except UnknownMethodError as e:
            raise UsageError(str(e)) from None
    params = inspect.signature(fn).parameters
    takes_var = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = [k for k in overrides if k not in params and not takes_var]
    if unknown or "budget_s" in overrides:
        known = [k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k != "budget_s"]
        raise UsageError(
            f"{name} has no hyperparameter {', '.join(unknown) or 'budget_s (use --budget-s)'}; "
            f"its hyperparameters: {', '.join(known) or '(none)'}"
        )
    defaults = {
        k: p.default
        for k, p in params.items()
        if p.kind is p.KEYWORD_ONLY and k != "budget_s" and p.default is not p.empty
    }
    takes_budget = "budget_s" in params or takes_var
    return Method(name, fn, {**defaults, **overrides}, takes_budget)


# ---------------------------------------------------------------- files


def atomic_write_bytes(path: Path, write) -> None:
    """``write(file)`` into ``path.tmp``, flushed to disk, then moved over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


@contextlib.contextmanager
def folder_lock(out: Path):
    """Exclusive lock on ``out`` for this process (released by the OS if it dies)."""
    import fcntl

    handle = open(out / LOCK, "a+")  # held for the with block
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            raise UsageError(
                f"another job is writing to {out} (pid {owner}); wait for it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/K"`` -> ``(i, K)`` with 0 <= i < K; ``None`` -> ``(0, 1)`` (every checkpoint)."""
    if text is None:
        return 0, 1
    try:
        return split_shard(text)
    except ValueError as exc:
        raise UsageError(f"--shard: {exc}") from None


def shard_indices(args) -> list[int]:
    """The checkpoints this job writes: all N, or those of its shard."""
    index, count = parse_shard(args.shard)
    return [j for j in range(args.n) if j % count == index]


def job_identity(args, method: Method, original_sha: str, fingerprint) -> dict:
    """What must match for a folder's checkpoints to be reused by a resumed job (a shard's
    folder also records its shard; unsharded folders have no such entry, as before)."""
    shard = {} if args.shard is None else {"shard": "{}/{}".format(*parse_shard(args.shard))}
    return {
        **shard,
        "method": method.name,
        "hyperparameters": {k: repr(v) for k, v in method.hparams.items()},
        "seed": args.seed,
        "data": args.data,
        "forget": args.forget,
        "arch": args.arch,
        "original_sha256": original_sha,
        "submission_sha256": sha256_of(Path(args.submission)) if args.submission else None,
        "data_fingerprint": fingerprint,
    }


def load_manifest(out: Path, identity: dict) -> dict:
    """The folder's manifest if it belongs to the same job, else a fresh one."""
    path = out / MANIFEST
    if not path.exists():
        return {**identity, "checkpoints": {}}
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        print(f"warning: {path} is unreadable; redoing every checkpoint", file=sys.stderr)
        return {**identity, "checkpoints": {}}
    clash = [k for k, v in identity.items() if manifest.get(k) != v]
    if clash:
        raise UsageError(
            f"{out} holds checkpoints of a different job ({', '.join(clash)} differ); "
            "use another --out or empty that folder"
        )
    manifest.setdefault("checkpoints", {})
    return manifest


def valid_checkpoints(out: Path, manifest: dict, n: int) -> dict:
    """Manifest entries whose file exists with the recorded checksum; removes the rest
    (and says so when a file is there but its checksum does not match: a corrupt file)."""
    for tmp in out.glob("*.tmp"):
        tmp.unlink()
    keep = {}
    for key, entry in manifest["checkpoints"].items():
        path = out / entry["file"]
        if int(key) >= n or not path.is_file():
            continue
        if sha256_of(path) == entry["sha256"]:
            keep[key] = entry
        else:
            print(
                f"warning: {path} does not match its checksum in {MANIFEST} (corrupt); redoing it",
                file=sys.stderr,
            )
    for path in out.iterdir():  # checkpoints without a valid entry, or beyond N
        match = CHECKPOINT_RE.match(path.name)
        if match and match.group(1) not in keep:
            path.unlink()
    return keep


def write_zip(out: Path, n: int) -> Path:
    names = [CHECKPOINT.format(i) for i in range(n)]
    missing = [name for name in names if not (out / name).is_file()]
    if missing:
        raise UsageError(f"cannot zip: {len(missing)} checkpoints missing ({missing[0]}, ...)")

    def write(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as archive:
            for name in names:
                archive.write(out / name, arcname=name)

    target = out / ZIP_NAME
    atomic_write_bytes(target, write)
    return target


# ---------------------------------------------------------------- budget


def duration(seconds: float) -> str:
    """``'42 s'``, ``'12.5 min'`` or ``'3.20 h'``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


class BudgetWatch:
    """Projects the job's total time from the runs so far and refuses runs that cannot fit."""

    def __init__(
        self, total_s: float, todo: int, *, prior_s: float = 0.0, warn_after: int = 2, clock=None
    ):
        self.clock = clock or time.perf_counter
        self.total_s = total_s
        self.prior_s = prior_s  # expected seconds of a run before any was measured
        self.todo = todo
        self.start = self.clock()
        self.run_seconds: list[float] = []
        self.warn_after = warn_after
        self.warned = False

    def elapsed(self) -> float:
        return self.clock() - self.start

    def estimate(self) -> float:
        """Seconds the next run will take (mean of the runs so far, slowest-weighted)."""
        if not self.run_seconds:
            return self.prior_s
        mean = sum(self.run_seconds) / len(self.run_seconds)
        return max(mean, 0.5 * (mean + max(self.run_seconds)))

    def can_start(self) -> bool:
        return self.elapsed() + self.estimate() <= self.total_s

    def runs_that_fit(self) -> int:
        per_run = self.estimate()
        if per_run <= 0:
            return self.todo
        return len(self.run_seconds) + int(max(self.total_s - self.elapsed(), 0) // per_run)

    def record(self, seconds: float) -> str | None:
        """Add a run; returns a warning the first time the projection overshoots."""
        self.run_seconds.append(seconds)
        if self.warned or len(self.run_seconds) < min(self.warn_after, self.todo):
            return None
        projected = self.elapsed() + self.estimate() * (self.todo - len(self.run_seconds))
        if projected <= self.total_s:
            return None
        self.warned = True
        return (
            f"warning: at {self.estimate():.2f} s per run the {self.todo} runs need about "
            f"{duration(projected)}, over the {duration(self.total_s)} budget; "
            f"about {self.runs_that_fit()} of them fit"
        )


def progress_bar(total: int, initial: int):
    try:
        from tqdm import tqdm
    except ImportError:  # the bar is a convenience, never a requirement
        return contextlib.nullcontext(None)
    return tqdm(total=total, initial=initial, unit="ckpt", dynamic_ncols=True, file=sys.stderr)


# ---------------------------------------------------------------- the job


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class Inputs:
    setup: object
    original: dict
    original_sha: str
    method: Method
    device: torch.device


def load_inputs(args) -> Inputs:
    """Validate and load everything a run needs (clear errors, no tracebacks).

    Cheap checks first, so a typo is reported before the data is loaded.
    """
    original_path = check_file(args.original, "original model")
    method = resolve_method(
        method=args.method, submission=args.submission, overrides=parse_hparams(args.hp)
    )
    device = parse_device(args.device)
    original = load_state_dict(original_path)
    setup, model = load_setup_and_model(args)
    check_state_dict_fits(original, model, args.arch, original_path)
    return Inputs(setup, original, sha256_of(original_path), method, device)


def parse_device(name: str | None) -> torch.device:
    try:
        device = torch.device(name or default_device())
    except RuntimeError as e:
        raise UsageError(f"bad --device {name!r}: {e}") from None
    problem = cuda_problem(device)
    if problem:
        raise UsageError(f"--device {name} asked for, but {problem} (try --device cpu)")
    return device


def load_setup_and_model(args):
    """``(DataSetup, freshly built model)`` through local_eval's data and model contracts."""
    from local_eval.data import load_setup
    from local_eval.models import build_model, default_arch

    try:
        kwargs = {"forget": args.forget} if args.forget else {}
        setup = load_setup(args.data, seed=args.seed, **kwargs)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise UsageError(f"cannot load --data {args.data!r}: {e}") from None
    if args.arch is None:  # resolved once, so the manifest records the real architecture
        args.arch = default_arch(setup.in_channels, setup.image_size)
    try:
        model = build_model(
            args.arch,
            num_classes=setup.num_classes,
            in_channels=setup.in_channels,
            image_size=setup.image_size,
        )
    except (ValueError, KeyError) as e:
        raise UsageError(f"cannot build --arch {args.arch!r}: {e}") from None
    return setup, model


def run_once(inputs: Inputs, args, run_seed: int, budget_s: float | None) -> dict:
    """One unlearning run from the original weights; returns a CPU state dict."""
    from local_eval.data import make_loader
    from local_eval.models import build_model

    setup = inputs.setup
    seed_everything(run_seed)
    loaders = [
        make_loader(split, batch_size=args.batch_size, shuffle=True, seed=run_seed)
        for split in (setup.retain, setup.forget, setup.val)
    ]
    net = build_model(
        args.arch,
        num_classes=setup.num_classes,
        in_channels=setup.in_channels,
        image_size=setup.image_size,
    )
    net.load_state_dict(inputs.original)
    net.to(inputs.device)
    where = f"unlearning run with seed {run_seed}"
    try:
        inputs.method(net, *loaders, budget_s=budget_s)
    except Exception as e:
        if getattr(args, "debug", False):
            raise
        raise SubmissionFailed(
            f"{where} raised {type(e).__name__}: {e}; fix {inputs.method.name} "
            "(--debug shows the traceback)"
        ) from None
    state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
    bad = non_finite(state)
    if bad:
        raise SubmissionFailed(
            f"{where} left NaN/inf weights in {', '.join(bad[:3])}"
            f"{' (+more)' if len(bad) > 3 else ''}: its model gives NaN logits; nothing saved"
        )
    return state


def per_run_budget(args) -> float:
    """``--budget-s``, or an even share of the job budget (less what saving and loading cost)."""
    if args.budget_s is not None:
        return args.budget_s
    return SHARE_OF_BUDGET * args.budget_h * 3600 / len(shard_indices(args))


def prepare_folder(out: Path, args, inputs: Inputs) -> dict:
    """The folder's manifest, reduced to the checkpoints that are valid for this job."""
    identity = job_identity(args, inputs.method, inputs.original_sha, fingerprint(inputs))
    manifest = load_manifest(out, identity)
    manifest["checkpoints"] = valid_checkpoints(out, manifest, args.n)
    manifest["n"] = args.n
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def save_checkpoint(out: Path, manifest: dict, i: int, state: dict, **record) -> None:
    """Checkpoint ``i`` and its manifest entry, each written atomically (checkpoint first)."""
    name = CHECKPOINT.format(i)
    atomic_write_bytes(out / name, lambda f: torch.save(state, f))
    manifest["checkpoints"][str(i)] = {"file": name, "sha256": sha256_of(out / name), **record}
    atomic_write_json(out / MANIFEST, manifest)


def run_job(args) -> int:
    """The whole job; returns the process exit code."""
    out = Path(args.out)
    check_out_folder(out)
    inputs = load_inputs(args)  # every input checked before anything is written
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    with folder_lock(out):  # refuses a folder another job is writing to
        try:
            return _run_locked(args, inputs, out)
        except BaseException:
            if created and not any(CHECKPOINT_RE.match(p.name) for p in out.iterdir()):
                shutil.rmtree(out, ignore_errors=True)  # nothing of value: leave no trace
            raise


def check_disk_space(out: Path, *, checkpoints: int, checkpoint_bytes: int, zip_too: bool):
    """A clear error before hours of work when the checkpoints cannot fit on the disk."""
    need = checkpoints * checkpoint_bytes * (2 if zip_too else 1)
    need = int(need * 1.05) + (16 << 20)  # manifest, temp files, file-system slack
    free = shutil.disk_usage(out).free
    if free < need:
        raise UsageError(
            f"not enough disk space in --out {out}: {checkpoints} checkpoints of about "
            f"{checkpoint_bytes / 2**20:.1f} MiB{' plus the zip' if zip_too else ''} need about "
            f"{need / 2**20:.0f} MiB, {free / 2**20:.0f} MiB free; "
            "free some space or choose another --out"
        )


def _run_locked(args, inputs: Inputs, out: Path) -> int:
    manifest = prepare_folder(out, args, inputs)
    mine = shard_indices(args)
    todo = [i for i in mine if str(i) not in manifest["checkpoints"]]
    check_disk_space(
        out,
        checkpoints=len(todo),
        checkpoint_bytes=Path(args.original).stat().st_size,
        zip_too=bool(args.zip),
    )
    if len(todo) < len(mine):
        kept = len(mine) - len(todo)
        print(f"resuming: {kept} valid checkpoints kept, {len(todo)} to do", file=sys.stderr)
    budget_s = per_run_budget(args)
    prior = budget_s if inputs.method.takes_budget else 0.0
    watch = BudgetWatch(args.budget_h * 3600, len(todo), prior_s=prior)
    print(startup_note(args, budget_s, len(todo), inputs.method), file=sys.stderr)
    if todo and watch.can_start():
        # A discarded run first: lazy imports, allocator and cuDNN warm-up would otherwise
        # eat the first checkpoint's budget (its method would then do almost nothing).
        warm_up(inputs.device)
        with job_time_limit(watch, "the warm-up run"):
            run_once(inputs, args, args.seed, budget_s)
    with progress_bar(len(mine), len(mine) - len(todo)) as bar:
        for i in todo:
            if not watch.can_start():
                log_job(out, manifest, watch, stopped=True)
                return stop_for_budget(args, watch, out, manifest)
            start = time.perf_counter()
            with job_time_limit(watch, f"run {i}"):
                state = run_once(inputs, args, args.seed + i, budget_s)
            seconds = time.perf_counter() - start  # the run itself; saving is overhead
            record = {"seconds": round(seconds, 4), "seed": args.seed + i, "budget_s": budget_s}
            save_checkpoint(out, manifest, i, state, **record)
            warning = watch.record(seconds)
            if bar is not None:
                bar.set_postfix(run_s=f"{seconds:.2f}")
                bar.update(1)
            if warning:
                print(warning, file=sys.stderr)
    log_job(out, manifest, watch, stopped=False)
    print(summary(watch, args), file=sys.stderr)
    if args.zip:
        print(f"wrote {write_zip(out, args.n)}", file=sys.stderr)
    return 0


def job_time_limit(watch: BudgetWatch, what: str):
    """Interrupt a run still going when the job's whole budget is spent (a hang, say)."""
    left = watch.total_s - watch.elapsed()
    return time_limit(
        left,
        f"{what} was still going when the {duration(watch.total_s)} job budget ran out "
        "(does the method honour budget_s, or does it hang?); stopped",
    )


def startup_note(args, budget_s: float, todo: int, method: Method) -> str:
    note = f"{method.name}: {todo} runs to do, {budget_s:.2f} s budget per run"
    if not method.takes_budget:
        note += " (ignored: this unlearning() takes no budget_s)"
    needed = todo * budget_s
    if args.budget_s is not None and needed > args.budget_h * 3600:
        note += (
            f"\nwarning: {todo} runs of up to {budget_s:g} s need up to {duration(needed)}, "
            f"over the {duration(args.budget_h * 3600)} budget; about "
            f"{int(args.budget_h * 3600 // budget_s)} runs of that length fit"
        )
    return note


def fingerprint(inputs: Inputs):
    return getattr(inputs.setup, "fingerprint", None)


def summary(watch: BudgetWatch, args) -> str:
    if not watch.run_seconds:
        return f"all {len(shard_indices(args))} checkpoints were already there"
    return (
        f"done: {len(watch.run_seconds)} runs in {watch.elapsed():.1f} s "
        f"({watch.estimate():.2f} s per run); at that pace {watch.runs_that_fit()} runs "
        f"fit in the {args.budget_h:g} h budget"
    )


def log_job(out: Path, manifest: dict, watch: BudgetWatch, *, stopped: bool) -> None:
    """Append this invocation to the manifest's history (how the folder was made)."""
    manifest.setdefault("jobs", []).append(
        {
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "elapsed_s": round(watch.elapsed(), 3),  # warm-up included, data loading not
            "budget_s": watch.total_s,
            "runs": len(watch.run_seconds),
            "stopped_for_budget": stopped,
            "torch": torch.__version__,
        }
    )
    atomic_write_json(out / MANIFEST, manifest)


def stop_for_budget(args, watch: BudgetWatch, out: Path, manifest: dict) -> int:
    have = len(manifest["checkpoints"])
    print(
        f"error: stopped with {have} of {len(shard_indices(args))} checkpoints in {out}: "
        "the next run "
        f"(about {watch.estimate():.1f} s) would overrun the {args.budget_h:g} h budget. "
        f"Rerun the same command with a larger --budget-h (or a smaller --budget-s) to finish.",
        file=sys.stderr,
    )
    return 3


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m submission.run",
        description="Write N unlearned checkpoints of an original model within a time budget.",
    )
    p.add_argument("--data", required=True, help="digits, mnist5k, kaggle:PATH or cifar10:PATH")
    p.add_argument("--forget", default=None, help="forget-set choice (see local_eval.data)")
    p.add_argument("--original", required=True, help="state dict of the original model (.pth)")
    p.add_argument(
        "--arch",
        default=None,
        help="local_eval.models architecture (default: resnet18 for RGB 32x32+, else smallcnn)",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--method", help="a registered method name")
    which.add_argument("--submission", help="a Python file defining unlearning(...)")
    p.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--n", type=int, default=512, help="number of checkpoints (default 512)")
    p.add_argument("--budget-h", type=float, default=8.0, help="hours for the whole job")
    p.add_argument("--budget-s", type=float, default=None, help="seconds per run")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="run i uses seed + i")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if any)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    p.add_argument("--zip", action="store_true", help=f"also write {ZIP_NAME}")
    p.add_argument(
        "--shard",
        metavar="i/K",
        help="write only the checkpoints j with j %% K == i (merge the K folders with "
        "'python -m submission.run merge')",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks of a failing method")
    return p


def check_args(args) -> None:
    if args.n < 1:
        raise UsageError(f"--n must be at least 1, got {args.n}")
    check_positive(args.budget_h, "--budget-h")
    check_positive(args.budget_s, "--budget-s")
    if args.seed < 0:
        raise UsageError(f"--seed must be non-negative, got {args.seed}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    _, count = parse_shard(args.shard)
    if count > 1 and args.zip:
        raise UsageError(
            "--zip needs all N checkpoints in one folder: give it to "
            "'python -m submission.run merge' instead"
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["merge"]:
        from .merge import main as merge_main

        return merge_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        return run_job(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunTimeout as e:
        print(f"error: {e}; checkpoints written so far are kept", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
