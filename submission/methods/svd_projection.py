"""SVD projection: remove the forget set's input directions from every layer, no training.

Recipe (Kodge, Saha and Roy, "Deep Unlearning: Fast and Efficient Gradient-free Class
Forgetting", TMLR 2024, arXiv 2023; their code ``sangamesh-kodge/class_forgetting``): in eval
mode, record the inputs of every Conv2d and Linear on 900 retain and up to 900 forget samples
(``--our-samples 900``; convolution inputs unfolded into patches, subsampled);
per layer and set, the SVD ``R = U S V^T`` of the representation matrix gives the
importance-scaled projector ``M = U diag(lam) U^T`` with ``lam_i = a s_i / ((a - 1) s_i + 1)``,
``s_i`` the squared singular values normalised to sum 1 (``a`` 100 for retain, 3 for forget);
the forget-only space is ``M_f - M_f M_r`` and every weight becomes ``W P^T`` with
``P = I - (M_f - M_f M_r)`` (convolutions on their unfolded input dimension, in x k x k).
Designed for forgetting whole classes.

Adapted: ``U`` and ``s`` come from the eigendecomposition of the Gram matrix ``R R^T``,
accumulated batch by batch (the same left singular vectors, without holding ``R``);
``patches`` random patch positions per sample are kept for convolutions. Grouped convolutions
(depthwise) are left unchanged. Their retain sample is class-balanced (900 // 9 of each
retained class, for class forgetting); the kit takes the retain loader's first 900 (a random
draw from a shuffling loader), as its forget sets are not whole classes. Under a budget the
forget samples are recorded in full and fewer retain samples may be; the
recording pass gets ``record_share`` (half) of the budget, the
eigendecompositions the rest (classifier end first, skipping a layer whose predicted ~D**3
cost would overrun); layers left over are not projected (``net.svd_projected_`` and a
warning say how many were).
"""

import math
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..batches import count_batches, device_batches
from ..devices import synchronize
from ..helpers import device_of, layers_of_type
from ..loop import Deadline, TrainLoop
from ..registry import register

CALIBRATION_SIZE = 128  # D of the timed projection that predicts the first layer's cost


def layer_inputs(layer: nn.Module, x: torch.Tensor, patches: int | None) -> torch.Tensor:
    """The layer's input as columns of its weight's input dimension: ``(D, N)``.

    Linear: ``D = in_features``, one column per sample (and extra leading position).
    Conv2d: ``D = in_channels * kh * kw``, ``patches`` random patch positions per sample
    (all of them when ``None``).
    """
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1]).T
    cols = F.unfold(
        x, layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride
    )  # (B, D, L)
    if patches is not None and cols.shape[2] > patches:
        keep = torch.randperm(cols.shape[2], device=cols.device)[:patches]
        cols = cols[:, :, keep]
    return cols.permute(1, 0, 2).reshape(cols.shape[1], -1)


def supported(layer: nn.Module) -> bool:
    if isinstance(layer, nn.Linear):
        return True
    return (
        isinstance(layer, nn.Conv2d)
        and layer.groups == 1
        and isinstance(layer.padding, tuple)  # 'same'/'valid' strings: unfold needs numbers
        and layer.padding_mode == "zeros"
    )


def scaled_projector(gram: torch.Tensor, a: float) -> torch.Tensor:
    """``U diag(lam) U^T`` from ``gram = R R^T`` (D, D), ``lam = a s / ((a - 1) s + 1)``.

    Computed in float64 and returned in float64.
    """
    gram = gram.double()
    try:
        eigvals, vectors = torch.linalg.eigh(gram)
    except torch.linalg.LinAlgError:
        # Ill-conditioned (many repeated zero eigenvalues): a jitter far below any kept
        # direction's share lets the solver converge without changing the projector.
        jitter = 1e-9 * gram.diagonal().mean().clamp_min(1e-30)
        eye = torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
        eigvals, vectors = torch.linalg.eigh(gram + jitter * eye)
    eigvals = eigvals.clamp_min(0.0)
    total = eigvals.sum()
    if total <= 0:
        return torch.zeros_like(gram)
    s = eigvals / total
    lam = a * s / ((a - 1.0) * s + 1.0)
    return (vectors * lam) @ vectors.T


def forget_projection(
    gram_retain: torch.Tensor,
    gram_forget: torch.Tensor,
    *,
    retain_scale: float,
    forget_scale: float,
) -> torch.Tensor:
    """``P = I - (M_f - M_f M_r)`` for one layer (D, D)."""
    m_r = scaled_projector(gram_retain, retain_scale)
    m_f = scaled_projector(gram_forget, forget_scale)
    eye = torch.eye(len(m_r), dtype=m_r.dtype, device=m_r.device)
    return eye - (m_f - m_f @ m_r)


def projection_seconds_per_cube(*, device: torch.device, size: int = CALIBRATION_SIZE) -> float:
    """Seconds per D**3 of one layer's :func:`forget_projection`, timed once on a random
    ``size``-dimensional pair: the prediction for a layer before any has run. At a small D
    the fixed overheads weigh more, so it over-predicts larger layers: it errs on the side
    of the budget."""
    generator = torch.Generator().manual_seed(0)
    r = torch.randn(size, 2 * size, generator=generator).to(device)
    gram = r @ r.T
    if device.type == "cuda":  # untimed first: the solver's start-up is not per-D^3 work
        forget_projection(gram, gram.flip(0, 1), retain_scale=100.0, forget_scale=3.0)
        synchronize(device)
    start = time.perf_counter()
    forget_projection(gram, gram.flip(0, 1), retain_scale=100.0, forget_scale=3.0)
    synchronize(device)
    return (time.perf_counter() - start) / float(size) ** 3


class GramRecorder:
    """Forward pre-hooks summing ``R R^T`` of every supported layer's input."""

    def __init__(self, layers: list[nn.Module], patches: int | None):
        self.layers, self.patches = layers, patches
        self.grams: dict[nn.Module, torch.Tensor] = {}

    def _hook(self, layer, inputs):
        cols = layer_inputs(layer, inputs[0].detach(), self.patches).float()
        gram = cols @ cols.T
        if layer in self.grams:
            self.grams[layer] += gram
        else:
            self.grams[layer] = gram

    def record(self, net, loop, batches, *, samples: int, steps: int, full: bool = False) -> int:
        """Runs ``net`` on batches until ``samples`` inputs are recorded; returns the count
        (``full``: a phase the budget does not shorten, see :class:`TrainLoop`)."""
        self.grams = {}
        handles = [m.register_forward_pre_hook(self._hook) for m in self.layers]
        seen = 0

        @torch.no_grad()
        def step(batch):
            nonlocal seen
            x, _ = batch
            x = x[: samples - seen]
            net(x)
            seen += len(x)

        def until_enough():
            for batch in batches:
                if seen >= samples:
                    return
                yield batch

        try:
            loop.run(until_enough(), step, steps=steps, full=full)
        finally:
            for handle in handles:
                handle.remove()
        return seen


def planned_batches(loader, samples: int) -> int:
    batch_size = getattr(loader, "batch_size", None)
    n = count_batches(loader)
    return n if not batch_size else min(n, math.ceil(samples / batch_size))


@register("svd_projection")
def svd_projection(
    net,
    retain,
    forget,
    val,
    *,
    budget_s=None,
    retain_samples: int = 900,
    forget_samples: int = 900,
    retain_scale: float = 100.0,
    forget_scale: float = 3.0,
    patches: int | None = 32,
    record_share: float = 0.5,
):
    if retain_scale <= 0 or forget_scale <= 0:
        raise ValueError(f"scales must be positive, got {retain_scale}, {forget_scale}")
    if not 0.0 < record_share <= 1.0:
        raise ValueError(f"record_share must lie in (0, 1], got {record_share}")
    deadline = Deadline(budget_s)
    # The eigendecompositions after the recording are not cheap (D up to 4608 on ResNet-18):
    # the recording gets only ``record_share`` of the budget.
    recording = Deadline(None if budget_s is None else record_share * budget_s)
    device = device_of(net)
    n_retain = planned_batches(retain, retain_samples)
    n_forget = planned_batches(forget, forget_samples)
    # the forget recording runs whole (it is small, and it is what gets projected out)
    loop = TrainLoop(
        recording, planned_steps=n_retain + n_forget, full_steps=n_forget, device=device
    )
    layers = [m for m in layers_of_type(net, nn.Conv2d, nn.Linear) if supported(m)]
    recorder = GramRecorder(layers, patches)

    net.eval()
    recorder.record(
        net, loop, device_batches(forget, device), samples=forget_samples, steps=n_forget,
        full=True,
    )  # fmt: skip
    grams_forget = recorder.grams
    recorder.record(
        net, loop, device_batches(retain, device), samples=retain_samples, steps=n_retain
    )
    grams_retain = recorder.grams
    # Not reached (or the budget ran out before the layer was seen): left as it is.
    reached = [m for m in layers if m in grams_forget and m in grams_retain]

    @torch.no_grad()
    def project(layer):
        proj = forget_projection(
            grams_retain[layer],
            grams_forget[layer],
            retain_scale=retain_scale,
            forget_scale=forget_scale,
        )
        w = layer.weight
        flat = w.reshape(w.shape[0], -1)
        w.copy_((flat @ proj.T.to(w.dtype)).reshape(w.shape))

    # Classifier end first (the most class-specific inputs). A layer's eigendecompositions
    # cost ~D**3: under a budget one is skipped when the slowest rate seen so far predicts it
    # would overrun the deadline. Before any layer has run, the rate comes from timing one
    # small projection (always running the first layer, as before, overran small digits
    # budgets: its 512-D classifier's two float64 eigendecompositions alone take longer).
    done, rate = 0, None
    if budget_s is not None and reached:
        first_rate = projection_seconds_per_cube(device=device)
    for layer in reversed(reached):
        cost = float(layer.weight[0].numel()) ** 3
        if budget_s is not None and (rate or first_rate) * cost > deadline.remaining():
            continue
        start = time.perf_counter()
        project(layer)
        synchronize(device)
        rate = max(rate or 0.0, (time.perf_counter() - start) / cost)
        done += 1
    net.svd_projected_ = {
        "layers": done,
        "supported": len(layers),
        "total": len(layers_of_type(net, nn.Conv2d, nn.Linear)),
    }
    if done < len(layers):
        warnings.warn(
            f"svd_projection: projected {done} of {len(layers)} supported layers "
            f"(budget_s={budget_s})",
            stacklevel=2,
        )
    return net.eval()
