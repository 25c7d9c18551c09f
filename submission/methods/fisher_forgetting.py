"""Fisher forgetting: Gaussian noise on every weight, scaled by the inverse retain Fisher.

Recipe (Golatkar, Achille and Soatto, "Eternal Sunshine of the Spotless Net: Selective
Forgetting in Deep Networks", CVPR 2020; ``fisher`` forgetting in their code): the diagonal
Fisher information of the retain loss,
``F_i = mean over retain samples x of sum_y p(y|x) (d log p(y|x) / d w_i)**2``
(the true Fisher: per-sample gradients for every class, weighted by the predicted
probability), then ``w_i += sqrt(var_i) * N(0, 1)`` with
``var_i = alpha * min(1 / (F_i + 1e-8), 1e3)`` (``1e2`` for the classifier), alpha 1e-6.
Weights the retain set needs (large F) barely move; the rest are drowned in noise.

The variance rule is the official code's (``get_mean_var`` in the authors' notebooks,
``AdityaGolatkar/SelectiveForgetting``): after the clamp, a multi-dimensional weight's
variance is averaged over dim 1 (a conv's input channels: one variance per output channel and
kernel position, broadcast back), and the classifier's and every 1-D parameter's (BatchNorm,
biases) is multiplied by 10. alpha 1e-6 is
the paper's alpha only with both, since it was calibrated with them; ``official_variance=False``
gives the per-weight rule alone. The code finds the classifier as the rows of size
``num_classes``; here it is the last ``Linear`` (a conv with as many channels as there are
classes is not a classifier). Its class-forgetting branch (zero mean and 1e-4 variance for
the forgotten class's row) does not apply to the competition's forget sets and is left out.

Adapted: per-sample gradients are batched with ``torch.func`` (``functional_call`` + ``vmap`` +
``grad``, over every (sample, class) pair, ``chunk`` pairs per call: memory is about
``chunk`` times the model's parameters) in eval mode, so BatchNorm uses
its running statistics. Slow by nature: under a budget the Fisher is estimated on the
retain batches that fit (``max_samples`` caps it without a budget) and a
:class:`FisherSubsampleWarning` says how many samples were used; ``net.fisher_samples_`` records
the samples and batches used.
"""

import math
import warnings

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from ..batches import count_batches, device_batches
from ..helpers import device_of, last_linear, num_classes
from ..loop import Deadline, TrainLoop
from ..registry import register


class FisherSubsampleWarning(UserWarning):
    """The Fisher was estimated on part of the retain set (budget or ``max_samples``)."""


class FisherAccumulator:
    """Sums ``sum_y p(y|x) g_y(x)**2`` over samples; ``mean()`` is the diagonal Fisher."""

    def __init__(self, net: torch.nn.Module, *, chunk: int = 16):
        self.net = net
        self.chunk = chunk
        self.params = {k: p.detach() for k, p in net.named_parameters() if p.requires_grad}
        self.buffers = {k: b.detach() for k, b in net.named_buffers()}
        self.sums = {k: torch.zeros_like(p) for k, p in self.params.items()}
        self.pairs, self.classes = 0, 0

        def sample_loss(params, x, y):
            logits = functional_call(net, (params, self.buffers), (x.unsqueeze(0),))
            return F.cross_entropy(logits, y.unsqueeze(0))

        self._per_sample_grads = vmap(grad(sample_loss), in_dims=(None, 0, 0))

    @torch.no_grad()
    def pair_chunks(self, x: torch.Tensor):
        """Every (sample, class) pair of ``x`` with its weight p(class | sample), in chunks of
        ``chunk`` pairs: ``(x_pairs, classes, weights)`` (the probabilities at the current
        weights; call in eval mode)."""
        probs = F.softmax(self.net(x), dim=1)  # (B, C)
        self.classes = probs.shape[1]
        xs = x.repeat_interleave(self.classes, dim=0)
        ys = torch.arange(self.classes, device=x.device).repeat(len(x))
        yield from zip(
            xs.split(self.chunk),
            ys.split(self.chunk),
            probs.flatten().split(self.chunk),
            strict=True,
        )

    @torch.no_grad()
    def add_pairs(self, xs: torch.Tensor, ys: torch.Tensor, weights: torch.Tensor) -> None:
        """One vmapped call: adds ``sum_j weights_j g(xs_j, ys_j)**2``."""
        grads = self._per_sample_grads(self.params, xs, ys)
        for k, g in grads.items():
            self.sums[k].add_(torch.einsum("b,b...->...", weights, g.square()))
        self.pairs += len(xs)

    def add(self, x: torch.Tensor) -> None:
        """Adds the samples ``x`` (B, ...)."""
        for chunk in self.pair_chunks(x):
            self.add_pairs(*chunk)

    @property
    def samples(self) -> float:
        """Samples added (fractional when a budget cut a sample's classes short)."""
        return self.pairs / self.classes if self.classes else 0.0

    def mean(self) -> dict[str, torch.Tensor]:
        return {k: s / max(self.samples, 1e-12) for k, s in self.sums.items()}


def noise_variance(
    fisher: torch.Tensor,
    *,
    alpha: float,
    clamp: float,
    classifier: bool = False,
    official: bool = True,
    eps: float = 1e-8,
) -> torch.Tensor:
    """The noise variance of one parameter tensor from its diagonal Fisher.

    ``alpha * min(1 / (F + eps), clamp)`` elementwise; with ``official`` (the published code's
    ``get_mean_var``), then averaged over dim 1 of a multi-dimensional tensor (a conv's input
    channels: one variance per output channel and kernel position, broadcast back) and
    multiplied by 10 for the
    ``classifier``'s weight and bias and for every 1-D tensor (BatchNorm's, biases).
    """
    var = alpha * (1.0 / (fisher + eps)).clamp(max=clamp)
    if not official:
        return var
    if var.ndim > 1:
        var = var.mean(dim=1, keepdim=True).expand_as(fisher).clone()
    if classifier or var.ndim == 1:
        var = var * 10
    return var


@register("fisher_forgetting")
def fisher_forgetting(
    net,
    retain,
    forget,
    val,
    *,
    budget_s=None,
    alpha: float = 1e-6,
    clamp: float = 1e3,
    classifier_clamp: float = 1e2,
    max_samples: int | None = None,
    chunk: int = 16,
    official_variance: bool = True,
):
    if alpha <= 0 or clamp <= 0 or classifier_clamp <= 0:
        raise ValueError(
            f"alpha and the clamps must be positive, got {alpha}, {clamp}, {classifier_clamp}"
        )
    deadline = Deadline(budget_s)
    device = device_of(net)
    n_retain = count_batches(retain)
    classes = num_classes(net)
    batch_size = getattr(retain, "batch_size", None) or 1
    chunks_per_batch = math.ceil(batch_size * classes / chunk)
    loop = TrainLoop(deadline, planned_steps=n_retain * chunks_per_batch, device=device)
    net.eval()
    fisher = FisherAccumulator(net, chunk=chunk)
    batches = 0

    def chunks():
        # One loop step per chunk of (sample, class) pairs, so a step stays short.
        nonlocal batches
        wanted = math.inf if max_samples is None else max_samples
        taken = 0
        for x, _ in device_batches(retain, device):
            if taken >= wanted:
                return
            x = x[: int(min(len(x), wanted - taken))]
            taken += len(x)
            batches += 1
            yield from fisher.pair_chunks(x)

    steps = loop.run(chunks(), lambda chunk: fisher.add_pairs(*chunk), steps=loop.planned_steps)
    used = round(fisher.samples, 2)
    if batches < n_retain or (max_samples is not None and used < n_retain * batch_size):
        warnings.warn(
            # Pairs, not samples: a chunk can end part-way through one sample's classes.
            f"fisher_forgetting: Fisher estimated on {fisher.pairs} (sample, class) pairs, "
            f"{used:g} retain samples' worth ({batches} of "
            f"{n_retain} batches, {steps} gradient chunks; budget_s={budget_s}, "
            f"max_samples={max_samples})",
            FisherSubsampleWarning,
            stacklevel=2,
        )
    net.fisher_samples_ = {"samples": used, "batches": batches, "planned": n_retain}
    head = {id(p) for p in last_linear(net).parameters()}
    fisher_mean = fisher.mean()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name not in fisher_mean:
                continue
            classifier = id(p) in head
            var = noise_variance(
                fisher_mean[name],
                alpha=alpha,
                clamp=classifier_clamp if classifier else clamp,
                classifier=classifier,
                official=official_variance,
            )
            p.add_(var.sqrt() * torch.randn_like(p))
    return net.eval()
