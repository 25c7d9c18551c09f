"""Everything a run needs, loaded and checked once; one unlearning run from the original."""

from dataclasses import dataclass

import torch

from local_eval.common.checks import check_file, check_state_dict_fits, load_state_dict, non_finite
from local_eval.common.errors import UsageError
from local_eval.common.files import sha256_of
from local_eval.data.setup import LOADER_BATCH, load_setup
from local_eval.runs.loading import LoadedMethod, load_unlearning, parse_hyperparameters
from local_eval.runs.unlearning import SubmissionError, unlearn
from local_eval.training.models import build_model, default_arch
from submission.devices import cuda_problem


class SubmissionFailed(UsageError):
    """The unlearning function raised or returned unusable weights."""


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class Inputs:
    """What every run of a job starts from, loaded and checked once."""

    setup: object  # local_eval.data.setup.DataSetup
    arch: str  # resolved: never None
    original: dict
    original_sha: str | None  # None: fresh weights (the profiler without --original)
    method: LoadedMethod
    device: torch.device

    @property
    def fingerprint(self):
        return getattr(self.setup, "fingerprint", None)


def load_inputs(job) -> Inputs:
    """Validate and load everything a :class:`~submission_tools.run.job.RunJob` needs (clear
    errors, no tracebacks). Cheap checks first, so a typo is reported before the data is
    loaded."""
    original_path = check_file(job.original, "original model")
    method = load_method(job)
    device = parse_device(job.device)
    original = load_state_dict(original_path)
    setup, model, arch = load_setup_and_model(
        data=job.data, forget=job.forget, seed=job.seed, arch=job.arch
    )
    check_state_dict_fits(original, model, arch, original_path)
    return Inputs(setup, arch, original, sha256_of(original_path), method, device)


def check_method_choice(job) -> None:
    """At most one of ``--method``, ``--submission`` and ``--notebook`` (none: the kit's
    default method, as for ``python -m local_eval``)."""
    given = [x for x in (job.method, job.submission, job.notebook) if x is not None]
    if len(given) > 1:
        raise UsageError("give at most one of --method NAME, --submission FILE.py or "
                         "--notebook FILE.ipynb")  # fmt: skip


def load_method(job) -> LoadedMethod:
    """The job's ``unlearning`` (:func:`check_method_choice`), through the evaluator's
    loader."""
    check_method_choice(job)
    if job.submission is not None:
        check_file(job.submission, "submission file")
    return load_unlearning(
        method=job.method,
        submission=job.submission,
        notebook=job.notebook,
        hyperparameters=parse_hyperparameters(job.hp),
    )


def parse_device(name: str | None) -> torch.device:
    try:
        device = torch.device(name or default_device())
    except RuntimeError as e:
        raise UsageError(f"bad --device {name!r}: {e}") from None
    problem = cuda_problem(device)
    if problem:
        raise UsageError(f"--device {name} asked for, but {problem} (try --device cpu)")
    return device


def load_setup_and_model(*, data: str, forget: str | None, seed: int, arch: str | None):
    """``(DataSetup, freshly built model, architecture)`` through local_eval's data and model
    contracts; ``arch=None`` is resolved from the data, once, so what is recorded is real."""
    try:
        kwargs = {"forget": forget} if forget else {}
        setup = load_setup(data, seed=seed, **kwargs)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise UsageError(f"cannot load --data {data!r}: {e}") from None
    arch = arch or default_arch(setup.in_channels, setup.image_size)
    try:
        model = build_model(
            arch,
            num_classes=setup.num_classes,
            in_channels=setup.in_channels,
            image_size=setup.image_size,
        )
    except (ValueError, KeyError) as e:
        raise UsageError(f"cannot build --arch {arch!r}: {e}") from None
    return setup, model, arch


def run_once(
    inputs: Inputs,
    *,
    index: int,
    budget_s: float | None,
    batch_size: int = LOADER_BATCH,
    debug: bool = False,
) -> dict:
    """Run ``index`` of the job (``local_eval.runs.unlearning.unlearn``: the evaluator's
    run ``index``); returns the returned model's weights as a CPU state dict."""
    try:
        run = unlearn(
            inputs.method,
            inputs.setup,
            arch=inputs.arch,
            original=inputs.original,
            index=index,
            device=inputs.device,
            budget_s=budget_s,
            batch_size=batch_size,
        )
    except SubmissionError as exc:
        if debug and exc.__cause__ is not None:
            raise exc.__cause__ from None
        raise SubmissionFailed(
            f"{exc}; fix {inputs.method.name} (--debug shows the traceback)"
        ) from None
    state = {k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()}
    bad = non_finite(state)
    if bad:
        raise SubmissionFailed(
            f"unlearning run {index} (seed {run.seed}) left NaN/inf weights in "
            f"{', '.join(bad[:3])}{' (+more)' if len(bad) > 3 else ''}: its model gives NaN "
            "logits; nothing saved"
        )
    return state
