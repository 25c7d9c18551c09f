"""Benchmark: ResNet-18 reference models on 32x32 images, the competition's model size.

    python -m bench.resnet18 [--device auto] [--images N] [--epochs E] [--models M]
                             [--workers W] [--cifar10 DIR]

Trains ``models`` ResNet-18s from scratch (``build_model("resnet18")``, the competition's
architecture) with the evaluator's 32x32 recipe (``cifar_kit``: SGD, random crop and flip,
batch 128, 30 epochs) through the evaluator's own trainer (``train_new_model``), and prints:

- the seconds of one full default-recipe retraining: measured when the run is full size
  (CIFAR-10's 40,500 retain images, the recipe's epochs), else an estimate scaled from the
  measured run by epochs and images (said so on the line);
- reference models per minute: ``workers`` processes train at once, each its share of the
  models (on one GPU they share it: a ResNet-18 at batch 128 on 32x32 images leaves a large
  GPU mostly idle, so several trainings at once get more models per minute; the evaluator's
  ``--workers`` does the same);
- the seconds of one unlearning run of the kit's default method on a ResNet-18 (no budget:
  its full recipe), and from the two the hours of an N = 512 evaluation on this device,
  one job at a time (3N + 1 trainings, N runs; divide by the devices or workers you have);
- the device (its name, torch and CUDA versions, whether TF32 is on) and the peak memory.

Data: CIFAR-10 from ``--cifar10 DIR`` (the python version, as the evaluator reads it), or by
default synthetic images of the same shape and count (a noisy template per class): the
seconds depend on the shapes and the recipe, not on the pixels. On a GPU the defaults are the
full size; on a CPU (hours per model) they are a reduced run and the full figure is an
estimate.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch

from bench.memory import PeakRSS
from local_eval.data.setup import Split, load_setup, make_loader
from local_eval.runs.workers import resolve_device
from local_eval.training.models import build_model
from local_eval.training.train import get_recipe, train_new_model
from submission import DEFAULT_METHOD, get_method
from submission.devices import synchronize

# CIFAR-10's training images, less the evaluator's validation images (CIFAR_VAL_SIZE) and a
# random 10% forget set: what one reference model trains on in the default 32x32 setup.
FULL_IMAGES = 40_500
RECIPE = "cifar_kit"
CPU_DEFAULTS = {"images": 512, "epochs": 1, "models": 1}


@dataclass(frozen=True)
class DataSpec:
    """How a worker gets the training images: synthetic from a seed, or a CIFAR-10 folder."""

    images: int
    cifar10: str | None = None
    seed: int = 0


def synthetic_split(n: int, *, seed: int, classes: int = 10, size: int = 32) -> Split:
    """``n`` CIFAR-shaped normalised images: a fixed random template per class plus noise."""
    generator = torch.Generator().manual_seed(seed)
    templates = torch.randn(classes, 3, size, size, generator=generator)
    labels = torch.randint(0, classes, (n,), generator=generator)
    images = templates[labels] + torch.randn(n, 3, size, size, generator=generator)
    return Split(images, labels, {})


def load_images(spec: DataSpec) -> tuple[Split, Split]:
    """(training images, validation images) for ``spec``."""
    if spec.cifar10 is None:
        return synthetic_split(spec.images, seed=spec.seed), synthetic_split(
            500, seed=spec.seed + 1
        )
    setup = load_setup(f"cifar10:{spec.cifar10}", seed=spec.seed)
    if spec.images > len(setup.retain):
        raise ValueError(
            f"--images {spec.images} is more than the {len(setup.retain)} retain images of "
            f"{spec.cifar10}"
        )
    return setup.retain.take(range(spec.images)), setup.val


def estimate_full_seconds(seconds: float, *, epochs: int, images: int, full_epochs: int) -> float:
    """A full retraining's seconds from one of ``epochs`` epochs on ``images`` images: the
    work is steps, so it scales with epochs x images (an epoch's last, smaller batch makes
    this a slight overestimate; the closing validation pass is not in it)."""
    if epochs < 1 or images < 1:
        raise ValueError(f"need epochs >= 1 and images >= 1, got {epochs} and {images}")
    return seconds * (full_epochs / epochs) * (FULL_IMAGES / images)


def _train_share(
    spec: DataSpec,
    seeds: list[int],
    epochs: int,
    device: str,
    threads: int,
    full: bool,
    unlearning: bool = False,
) -> dict:
    """Train one model per seed (in a worker process or in this one): their seconds; with
    ``unlearning``, then also one unlearning run's seconds on the same data. The closing
    validation pass is the evaluator's, so it is timed in a full-size run; a reduced run
    leaves it out, as it would not scale with the epochs and images."""
    torch.set_num_threads(threads)
    data, val = load_images(spec)
    recipe = get_recipe(RECIPE, epochs=epochs)
    dev = torch.device(device)
    _warm_up(data, dev)
    with PeakRSS() as rss:
        start = time.time()  # wall clock: comparable across the worker processes
        seconds = [
            train_new_model(
                "resnet18",
                data,
                val if full else None,
                recipe,
                num_classes=10,
                device=dev,
                seed=s,
            ).seconds
            for s in seeds
        ]
        end = time.time()
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else rss.mb
    out = {"seconds": seconds, "peak_mb": peak, "start": start, "end": end}
    if unlearning:
        out["unlearning_s"] = time_unlearning(data, val, dev, seed=spec.seed)
    return out


def _warm_up(data: Split, device: torch.device) -> None:
    """Two steps on two batches, so cuDNN's algorithm search and the allocator's first
    growth count for no model."""
    recipe = get_recipe(RECIPE, epochs=1)
    small = data.take(range(min(len(data), 2 * recipe.batch_size)))
    train_new_model("resnet18", small, None, recipe, num_classes=10, device=device, seed=0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def time_unlearning(
    data: Split, val: Split, device: torch.device, *, seed: int, method: str = DEFAULT_METHOD
) -> float:
    """Seconds of one unlearning run (``method``, no budget: its full recipe) on a ResNet-18,
    with ``data`` as the retain set, a synthetic forget set a ninth of its size (the
    evaluator's 10% of the training data) and ``val``, in loaders of the competition's batch
    size 64. The model is freshly initialised: a run's time does not depend on the weights."""
    forget = synthetic_split(max(1, len(data) // 9), seed=seed + 2)
    loaders = (
        make_loader(data, batch_size=64, shuffle=True, seed=0),
        make_loader(forget, batch_size=64, shuffle=False),
        make_loader(val, batch_size=64, shuffle=False),
    )
    torch.manual_seed(0)
    net = build_model("resnet18", num_classes=10, in_channels=3, image_size=32).to(device)
    start = time.perf_counter()
    get_method(method)(net, *loaders)
    synchronize(device)
    return time.perf_counter() - start


def projected_hours(retraining_s: float, unlearning_s: float, n_models: int = 512) -> float:
    """Hours of an evaluation at ``n_models`` on one device, one job at a time: 3N + 1
    trainings (N references, N for the ceiling, N floor originals, the original) and N
    unlearning runs."""
    return ((3 * n_models + 1) * retraining_s + n_models * unlearning_s) / 3600


def describe_device(device: torch.device) -> str:
    """The device in words, with what decides its speed."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return (
            f"{props.name} ({props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, "
            f"CUDA {torch.version.cuda}, TF32 convolutions "
            f"{'on' if torch.backends.cudnn.allow_tf32 else 'off'}, matmuls "
            f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}"
        )
    return (
        f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
        f"thread(s), torch {torch.__version__}"
    )


def run(
    *,
    device: str = "auto",
    images: int | None = None,
    epochs: int | None = None,
    models: int | None = None,
    workers: int = 1,
    cifar10: str | None = None,
) -> dict:
    """Train the models and return the figures (see the module docstring). ``None`` sizes
    are the full size on a GPU and :data:`CPU_DEFAULTS` on a CPU."""
    dev = resolve_device(device)
    full_epochs = get_recipe(RECIPE).epochs
    defaults = (
        CPU_DEFAULTS
        if dev.type == "cpu"
        else {"images": FULL_IMAGES, "epochs": full_epochs, "models": workers}
    )
    images = defaults["images"] if images is None else images
    epochs = defaults["epochs"] if epochs is None else epochs
    models = defaults["models"] if models is None else models
    if min(images, epochs, models, workers) < 1:
        raise ValueError(
            f"images, epochs, models and workers must be >= 1; got {images}, {epochs}, "
            f"{models}, {workers}"
        )
    spec = DataSpec(images=images, cifar10=cifar10)
    seeds = list(range(100, 100 + models))
    shares = [seeds[w::workers] for w in range(workers) if seeds[w::workers]]
    threads = max(1, torch.get_num_threads() // len(shares)) if dev.type == "cpu" else 1

    full = images == FULL_IMAGES and epochs == full_epochs
    start = time.perf_counter()
    if len(shares) == 1:
        before = torch.get_num_threads()
        try:
            # alone on the device: also one unlearning run, like the retraining figure
            outs = [_train_share(spec, shares[0], epochs, str(dev), before, full, True)]
        finally:
            torch.set_num_threads(before)
    else:
        context = multiprocessing.get_context("spawn")  # a CUDA context cannot be forked
        with ProcessPoolExecutor(len(shares), mp_context=context) as pool:
            futures = [
                pool.submit(_train_share, spec, share, epochs, str(dev), threads, full)
                for share in shares
            ]
            outs = [f.result() for f in futures]
    wall = time.perf_counter() - start

    scale = (
        1.0
        if full
        else estimate_full_seconds(1.0, epochs=epochs, images=images, full_epochs=full_epochs)
    )
    unlearning_s = outs[0].get("unlearning_s")
    if unlearning_s is not None:
        # an unlearning run's work scales with the retain images (its epochs are fixed)
        unlearning_s *= FULL_IMAGES / images
    seconds = [s for out in outs for s in out["seconds"]]
    # the training phase: first worker's first model to the last one's end (each worker's
    # start-up, its data and warm-up, is left out: it does not grow with the models)
    training_wall = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    return {
        "device": describe_device(dev),
        "data": "synthetic" if cifar10 is None else f"cifar10:{cifar10}",
        "images": images,
        "epochs": epochs,
        "models": models,
        "workers": len(shares),
        "model_seconds": seconds,
        "wall_s": wall,
        "full_size": full,
        # one model alone on the device: only without concurrent workers
        "retraining_s": sum(seconds) / len(seconds) * scale if len(shares) == 1 else None,
        "unlearning_s": unlearning_s,
        "unlearning_method": DEFAULT_METHOD,
        "training_wall_s": training_wall,
        # full-size models per minute of the training phase's wall time
        "models_per_min": 60 * models / (training_wall * scale),
        "peak_mb": max(out["peak_mb"] for out in outs),
        "peak_kind": "GPU memory allocated" if dev.type == "cuda" else "RSS while training",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.resnet18", description=__doc__)
    parser.add_argument("--device", default="auto", help="auto (default), cuda, cuda:1, cpu")
    parser.add_argument("--images", type=int, default=None, help=f"default {FULL_IMAGES} on a GPU")
    parser.add_argument("--epochs", type=int, default=None, help="default: the recipe's on a GPU")
    parser.add_argument("--models", type=int, default=None, help="default: one per worker")
    parser.add_argument("--workers", type=int, default=1, help="processes at once (default 1)")
    parser.add_argument("--cifar10", default=None, help="a CIFAR-10 folder (default: synthetic)")
    args = parser.parse_args(argv)
    try:
        res = run(**vars(args))
    except ValueError as exc:
        parser.error(str(exc))
    for line in report_lines(res):
        print(line)
    return 0


def report_lines(res: dict) -> list[str]:
    kind = (
        "measured"
        if res["full_size"]
        else (f"estimated from {res['epochs']} epoch(s) on {res['images']} images")
    )
    retraining = (
        f"{res['retraining_s']:.1f} s ({kind})"
        if res["retraining_s"] is not None
        else "not measured with concurrent workers (run with --workers 1)"
    )
    if res["unlearning_s"] is None:
        unlearning = projection = "not measured with concurrent workers"
    else:
        measured = res["images"] == FULL_IMAGES  # its epochs are the method's own
        how = "measured" if measured else f"estimated from {res['images']} images"
        unlearning = f"{res['unlearning_s']:.1f} s ({res['unlearning_method']}, {how})"
        hours = projected_hours(res["retraining_s"], res["unlearning_s"])
        projection = f"{hours:.1f} h (1,537 trainings and 512 runs, one at a time)"
    return [
        f"ResNet-18 references, {RECIPE} recipe, {res['data']} 32x32 images",
        f"  device:            {res['device']}",
        f"  run:               {res['models']} model(s), {res['epochs']} epoch(s) on "
        f"{res['images']} images, {res['workers']} worker(s), {res['wall_s']:.1f} s",
        f"  one retraining:    {retraining}",
        f"  one unlearning:    {unlearning}",
        f"  N = 512 here:      {projection}",
        f"  models per minute: {res['models_per_min']:.3f} at full size ({kind})",
        f"  peak memory:       {res['peak_mb']:.0f} MB ({res['peak_kind']})",
    ]


if __name__ == "__main__":
    raise SystemExit(main())
