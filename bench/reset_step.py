"""Benchmark: a reset-regime step of ``relearn``, in forwards of the network.

    python -m bench.reset_step [--device auto] [--batch B] [--repeats R]

``relearn`` chooses its regime before any step from two timed forwards of the network,
counting one step of its reset regime as ``RESET_STEP_FORWARDS`` forwards
(``submission.methods.relearn``). If a step costs more forwards than that, the estimate errs
towards "the reset regime fits", which the reset loop's own timed steps then check (a few
steps lost, in the direction it errs); if it costs fewer, runs that could reset are sent to
the perturb regime. This measures which holds on this device: for each model at the shape of
the data it is used on, the median of ``repeats`` eval-mode forwards of a batch and the median
of ``repeats`` reset steps (``relearn.reset_step`` itself: the network's forward, backward and
Adam update, and the teacher's forward), and prints their ratio beside the constant.

Models and shapes: the small CNN and the narrow ResNet-18 on the bundled digits (1x8x8, the
two boards' settings), the narrow ResNet-18 and the full ResNet-18 (torchvision's, the
competition's model) on 3x32x32 (the competition's images). The pixels are random: the
seconds depend on the shapes, not the values. A few untimed steps and forwards run first
(one-off costs: Adam's state, the allocator, kernel selection on a GPU).
"""

from __future__ import annotations

import argparse
import copy
import inspect
import statistics
import time

import torch

from local_eval.runs.workers import resolve_device
from local_eval.training.models import build_model
from submission.devices import synchronize
from submission.methods.relearn import RESET_STEP_FORWARDS, relearn, reset_step

SHAPES = (  # (architecture, channels, image side): where each is used
    ("smallcnn", 1, 8),
    ("resnet18_narrow", 1, 8),
    ("resnet18_narrow", 3, 32),
    ("resnet18", 3, 32),
)
WARMUP = 3  # untimed steps and forwards before the timed ones
NUM_CLASSES = 10
# the reset regime's step as relearn runs it by default
STEP_SETTINGS = {
    name: inspect.signature(relearn).parameters[name].default
    for name in ("distill_weight", "temperature")
}


def _median_seconds(fn, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(arch: str, channels: int, side: int, *, batch: int, repeats: int, device) -> dict:
    """The median forward and reset step of ``arch`` on a batch of ``batch`` random images of
    ``channels`` x ``side`` x ``side``, in seconds, and the step in forwards."""
    torch.manual_seed(0)
    net = build_model(arch, num_classes=NUM_CLASSES, in_channels=channels, image_size=side)
    net = net.to(device)
    teacher = copy.deepcopy(net).eval()
    x = torch.rand(batch, channels, side, side, device=device)
    y = torch.randint(0, NUM_CLASSES, (batch,), device=device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)

    def forward():
        net.eval()
        with torch.no_grad():
            net(x)

    def step():
        net.train()
        reset_step(net, teacher, optimizer, (x, y), **STEP_SETTINGS)

    for _ in range(WARMUP):
        step()
        forward()
    synchronize(device)
    forward_s = _median_seconds(forward, repeats, device)
    step_s = _median_seconds(step, repeats, device)
    return {
        "arch": arch,
        "shape": f"{channels}x{side}x{side}",
        "forward_s": forward_s,
        "step_s": step_s,
        "forwards_per_step": step_s / forward_s,
    }


def run(*, batch: int = 64, repeats: int = 20, device: str = "auto") -> dict:
    """Every model of :data:`SHAPES` measured on ``device``; with the constant relearn uses."""
    dev = resolve_device(device)
    return {
        "device": str(dev),
        "batch": batch,
        "repeats": repeats,
        "counted_as": RESET_STEP_FORWARDS,
        "rows": [
            measure(arch, c, side, batch=batch, repeats=repeats, device=dev)
            for arch, c, side in SHAPES
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    res = run(batch=args.batch, repeats=args.repeats, device=args.device)
    print(f"device {res['device']}, batch {res['batch']}, median of {res['repeats']}; "
          f"relearn counts a reset step as {res['counted_as']:g} forwards")  # fmt: skip
    for row in res["rows"]:
        print(
            f"{row['arch']:>16} {row['shape']:>8}: forward {1e3 * row['forward_s']:8.2f} ms, "
            f"reset step {1e3 * row['step_s']:8.2f} ms = {row['forwards_per_step']:.1f} forwards"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
