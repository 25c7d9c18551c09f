"""Everything a run needs, loaded and checked once; one unlearning run from the original."""

from dataclasses import dataclass

import torch

from local_eval.common.checks import check_file, check_state_dict_fits, load_state_dict, non_finite
from local_eval.common.errors import UsageError
from local_eval.common.files import sha256_of
from local_eval.data.setup import load_setup, make_loader
from local_eval.training.models import build_model, default_arch
from submission.devices import cuda_problem
from submission.seeding import seed_everything
from submission_tools.run.method import Method, parse_hparams, resolve_method


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
    method: Method
    device: torch.device

    @property
    def fingerprint(self):
        return getattr(self.setup, "fingerprint", None)


def load_inputs(job) -> Inputs:
    """Validate and load everything a :class:`~submission_tools.run.job.RunJob` needs (clear
    errors, no tracebacks). Cheap checks first, so a typo is reported before the data is
    loaded."""
    original_path = check_file(job.original, "original model")
    method = resolve_method(
        method=job.method, submission=job.submission, overrides=parse_hparams(job.hp)
    )
    device = parse_device(job.device)
    original = load_state_dict(original_path)
    setup, model, arch = load_setup_and_model(
        data=job.data, forget=job.forget, seed=job.seed, arch=job.arch
    )
    check_state_dict_fits(original, model, arch, original_path)
    return Inputs(setup, arch, original, sha256_of(original_path), method, device)


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
        model = fresh_model(setup, arch)
    except (ValueError, KeyError) as e:
        raise UsageError(f"cannot build --arch {arch!r}: {e}") from None
    return setup, model, arch


def fresh_model(setup, arch: str) -> torch.nn.Module:
    return build_model(
        arch,
        num_classes=setup.num_classes,
        in_channels=setup.in_channels,
        image_size=setup.image_size,
    )


def run_once(
    inputs: Inputs, *, run_seed: int, budget_s: float | None, batch_size: int, debug: bool = False
) -> dict:
    """One unlearning run from the original weights; returns a CPU state dict."""
    setup = inputs.setup
    seed_everything(run_seed)
    loaders = [
        make_loader(split, batch_size=batch_size, shuffle=True, seed=run_seed)
        for split in (setup.retain, setup.forget, setup.val)
    ]
    net = fresh_model(setup, inputs.arch)
    net.load_state_dict(inputs.original)
    net.to(inputs.device)
    where = f"unlearning run with seed {run_seed}"
    try:
        inputs.method(net, *loaders, budget_s=budget_s)
    except Exception as e:
        if debug:
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
