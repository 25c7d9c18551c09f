"""A hand-written forward pass for K stacked copies of one ``nn.Sequential`` CNN.

:func:`stacked_forward` runs K models of one architecture, each on its own batch, from
weights stacked along a leading model axis (the tensors ``torch.func.stack_module_state``
returns, keyed by ``state_dict`` name). Autograd through it gives every model the gradient
of its own loss, as K separate runs would. :func:`supports` says which models it covers;
:data:`LAYERS` maps each covered layer type to its batched form.

Why not ``vmap(functional_call)`` (the general path, kept for other architectures): on a
CPU its batching rules run the K models' convolutions, BatchNorms and max-pools on NCHW
layouts whose kernels take slow paths (max-pool, the grouped convolution's backward and
BatchNorm above all, on the digits ``smallcnn``), so a vmapped step cost almost as much per
model as one model alone.

How it is done here: the K models' activations live side by side as the channels of one
channels-last image batch ``[B, K*C, H, W]`` (model k's channels are ``k*C .. k*C+C-1``).
Then every image layer is a single native call whose channels-last CPU kernel is fast:

- ``Conv2d``: ``F.conv2d`` with ``groups = K * groups`` and the K weights concatenated
  (oneDNN's grouped convolution; channels-last, its forward is far faster than an im2col +
  ``bmm`` formulation, which was tried first);
- ``BatchNorm2d``: ``F.batch_norm`` over the K*C channels with views of the stacked running
  statistics, i.e. the very kernel ``nn.BatchNorm2d`` calls: statistics per (model, channel)
  over its own batch, running mean/var updated in place (momentum, unbiased variance);
  ``num_batches_tracked`` is counted here;
- ``ReLU``, ``MaxPool2d``, ``AdaptiveAvgPool2d``, ``Identity``: as is (they act per
  channel); a ReLU directly before a MaxPool2d runs after it (exact; 4x less data, see
  :func:`_plan`);
- a ``BatchNorm2d`` then a 2x2 ``MaxPool2d`` (the digits model's first block, once its ReLU
  has moved): in training on a CPU, the pool of the raw input and then the normalisation,
  with the batch statistics from BatchNorm's own kernel and a hand-derived backward
  (:class:`_PoolThenNormalise`; exact while every scale is positive, checked each step);
- ``Flatten`` reorders to ``[K, B, features]`` (a custom backward returns the gradient in
  the channels-last layout), and ``Linear`` is one ``baddbmm`` per step, computed as
  ``(W @ x^T)^T`` for a well-shaped weight gradient. A Flatten directly before a Linear
  keeps the memory's (H, W, C) feature order and permutes the Linear's weight columns
  instead (a cheaper copy); otherwise features are in ``nn.Flatten``'s (C, H, W) order.

The logits are ``[K, B, classes]``. The maths is the modules' maths; only the summation
order inside the kernels differs, so logits and gradients agree with the sequential model's
to float rounding (tests: K = 1 and K = 3 against ``nn.Sequential``, within 1e-5).

Where the time goes (digits, torch.profiler): the convolutions' backward, then the first
block's BatchNorm and max-pool. Memory-bound work on multi-MB tensors runs several times
slower inside a training step than alone (page faults on fresh allocations, cache misses),
so passes over the full-size tensors are what to save: the pool-then-normalise step saves
two of them and a full-size allocation each way.

Tried and dropped, each for the reason given (measured against the version kept):

- an im2col + ``bmm`` convolution: slower than oneDNN's grouped convolution;
- a hand-written BatchNorm (statistics by ``var_mean``): far slower than BatchNorm's own
  statistics kernel;
- a BatchNorm backward from sums over the ``[B*H*W, C]`` view: not faster;
- a fused BatchNorm + max-pool backward that scatter-adds the pooled gradient
  (``index_put_`` or ``index_add_``): the scatter alone costs more than the max-pool
  backward the step now uses;
- in-place ReLUs: not faster;
- the last ReLU writing straight into the Linear's ``[K, B, H*W*C]`` features and its
  backward straight into channels-last: no reordering copies, but its strided writes of
  short runs made the step slower;
- the first convolution as a depthwise one over K-times repeated inputs: far slower;
- its weight gradient as a ``bmm`` over unfolded inputs: slower;
- the second convolution's input gradient as a forward convolution with flipped weights:
  oneDNN already does that;
- Flatten + Linear as a grouped 4x4 convolution: not faster;
- ``torch.compile`` of the step (inductor): a long compile, then slower steps than eager;
- glibc ``mallopt`` thresholds (or ``GLIBC_TUNABLES``) that keep freed memory: far fewer
  page faults, a gain at one lane, but at two lanes the cores' shared memory traffic is
  what limits, and the gain was within the run-to-run noise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

__all__ = ["LAYERS", "stacked_forward", "supports"]


@dataclass(frozen=True)
class _Stack:
    """The K models' stacked tensors, by ``state_dict`` name, and the mode."""

    params: Mapping[str, torch.Tensor]
    buffers: Mapping[str, torch.Tensor]
    k: int
    training: bool


# A layer's batched forward: (module, its state_dict prefix, the stack, activation).
LayerFn = Callable[[nn.Module, str, _Stack, torch.Tensor], torch.Tensor]


def _conv2d(m: nn.Conv2d, p: str, s: _Stack, x: torch.Tensor) -> torch.Tensor:
    weight = s.params[p + "weight"]  # [K, C_out, C_in / groups, kh, kw]
    bias = s.params.get(p + "bias")
    return F.conv2d(
        x,
        weight.reshape(-1, *weight.shape[2:]),
        None if bias is None else bias.reshape(-1),
        m.stride,
        m.padding,
        m.dilation,
        s.k * m.groups,
    )


def _momentum(m: nn.BatchNorm2d, p: str, s: _Stack) -> float:
    """The step's running-statistics momentum; in training, counts the batch as
    ``nn.BatchNorm2d`` does (``num_batches_tracked``)."""
    if not s.training:
        return 0.0  # unused in eval mode
    tracked = s.buffers[p + "num_batches_tracked"]
    tracked.add_(1)
    # as nn.BatchNorm2d: exponential average, or cumulative when momentum is None
    return 1.0 / float(tracked[0]) if m.momentum is None else m.momentum


def _batch_norm2d(
    m: nn.BatchNorm2d, p: str, s: _Stack, x: torch.Tensor, momentum: float | None = None
) -> torch.Tensor:
    momentum = _momentum(m, p, s) if momentum is None else momentum
    return F.batch_norm(
        x,
        s.buffers[p + "running_mean"].view(-1),  # views: the kernel updates the stacked buffers
        s.buffers[p + "running_var"].view(-1),
        s.params[p + "weight"].reshape(-1),
        s.params[p + "bias"].reshape(-1),
        training=s.training,
        momentum=momentum,
        eps=m.eps,
    )


def _relu(m: nn.ReLU, p: str, s: _Stack, x: torch.Tensor) -> torch.Tensor:
    return F.relu(x)


def _identity(m: nn.Identity, p: str, s: _Stack, x: torch.Tensor) -> torch.Tensor:
    return x


def _max_pool2d(m: nn.MaxPool2d, p: str, s: _Stack, x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)


class _PoolThenNormalise(torch.autograd.Function):
    """Training-mode BatchNorm followed by a 2x2 max-pool (stride 2), computed as the pool
    then the normalisation: the same values and gradients where every channel's scale is
    positive (then the normalisation is increasing, so it commutes with the max), on a
    quarter of the data. Forward: the batch statistics (the kernel ``nn.BatchNorm2d``
    uses, running statistics updated in place), the max-pool of the raw input, the
    normalisation of the pooled values; no full-size normalised tensor. Backward: BatchNorm's
    input gradient is the pooled gradient scaled by ``gamma * invstd`` at each window's
    maximum plus ``u + v * x`` per channel (the batch mean's and variance's share, from two
    sums over the pooled gradient), i.e. one max-pool backward and one pass over ``x``.
    Faster, forward + backward, than the two native layers: fewer passes over the
    full-size input, one full-size gradient instead of two."""

    @staticmethod
    def forward(ctx, x, gamma, beta, running_mean, running_var, momentum, eps):
        c = x.shape[1]
        mean, var = torch.batch_norm_update_stats(x, running_mean, running_var, momentum)
        invstd = torch.rsqrt(var + eps)
        pooled, where = F.max_pool2d(x, 2, return_indices=True)
        scale = gamma * invstd
        out = torch.addcmul((beta - mean * scale).view(1, c, 1, 1), pooled, scale.view(1, c, 1, 1))
        ctx.save_for_backward(x, pooled, where, mean, invstd, scale)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, pooled, where, mean, invstd, scale = ctx.saved_tensors
        b, c, h, w = x.shape
        n = b * h * w  # values per channel in the batch statistics
        rows = grad.permute(0, 2, 3, 1).reshape(-1, c)  # channels-last: a view
        normalised = (pooled.permute(0, 2, 3, 1).reshape(-1, c) - mean) * invstd
        grad_beta = rows.sum(0)
        grad_gamma = (rows * normalised).sum(0)
        v = -(scale / n) * invstd * grad_gamma
        u = -(scale / n) * grad_beta - v * mean
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(
            grad * scale.view(1, c, 1, 1), x, [2, 2], [2, 2], [0, 0], [1, 1], False, where
        )
        grad_x.addcmul_(x, v.view(1, c, 1, 1)).add_(u.view(1, c, 1, 1))
        return grad_x, grad_gamma, grad_beta, None, None, None, None


def _batch_norm_max_pool(
    m: nn.BatchNorm2d, p: str, s: _Stack, x: torch.Tensor, pool: nn.MaxPool2d
) -> torch.Tensor:
    """A BatchNorm2d then a 2x2 max-pool: :class:`_PoolThenNormalise` in training on a CPU
    while every scale is positive (checked each step: training can drive one to zero or
    below, and then the order matters), else the two layers as they are. Not on a GPU:
    the check would wait for the device every step, and it was not measured there."""
    momentum = _momentum(m, p, s)
    gamma = s.params[p + "weight"].reshape(-1)
    if s.training and x.device.type == "cpu" and bool((gamma > 0).all()):
        return _PoolThenNormalise.apply(
            x,
            gamma,
            s.params[p + "bias"].reshape(-1),
            s.buffers[p + "running_mean"].view(-1),
            s.buffers[p + "running_var"].view(-1),
            momentum,
            m.eps,
        )
    return _max_pool2d(pool, "", s, _batch_norm2d(m, p, s, x, momentum))


def _pool_after_norm_ok(m: nn.MaxPool2d) -> bool:
    """The max-pools :func:`_batch_norm_max_pool` covers: 2x2, stride 2, nothing else."""
    return (
        _pair(m.kernel_size) == (2, 2)
        and _pair(m.stride or m.kernel_size) == (2, 2)
        and _pair(m.padding) == (0, 0)
        and _pair(m.dilation) == (1, 1)
        and not m.ceil_mode
    )


def _adaptive_avg_pool2d(m: nn.AdaptiveAvgPool2d, p: str, s: _Stack, x: torch.Tensor):
    return F.adaptive_avg_pool2d(x, m.output_size)


class _Flatten(torch.autograd.Function):
    """``[B, K*C, H, W]`` (channels-last) -> ``[K, B, C*H*W]``, each model's features in
    ``nn.Flatten``'s (C, H, W) order, or with ``hwc`` in the memory's own (H, W, C) order
    (a copy that moves whole C-runs, much cheaper, fine when the next layer is a Linear
    whose weight columns are permuted to match, see :func:`_flatten_linear`). The backward
    writes the gradient straight back in the channels-last layout (autograd's own, a
    permuted view, sent the ReLU backward before it down a slow strided path)."""

    @staticmethod
    def forward(ctx, x, k, hwc):
        b, kc, h, w = x.shape
        c = kc // k
        ctx.geometry = (b, k, c, h, w, hwc)
        nhwkc = x.permute(0, 2, 3, 1).reshape(b, h, w, k, c)  # a view of the memory
        order = (3, 0, 1, 2, 4) if hwc else (3, 0, 4, 1, 2)
        return nhwkc.permute(*order).reshape(k, b, -1)

    @staticmethod
    def backward(ctx, grad):
        b, k, c, h, w, hwc = ctx.geometry
        out = grad.new_empty((b, h, w, k, c))  # channels-last memory
        if hwc:
            out.copy_(grad.reshape(k, b, h, w, c).permute(1, 2, 3, 0, 4))
        else:
            out.copy_(grad.reshape(k, b, c, h, w).permute(1, 3, 4, 0, 2))
        return out.view(b, h, w, k * c).permute(0, 3, 1, 2), None, None


def _flatten(m: nn.Flatten, p: str, s: _Stack, x: torch.Tensor) -> torch.Tensor:
    return _Flatten.apply(x, s.k, False)


def _linear(m: nn.Linear, p: str, s: _Stack, x: torch.Tensor, weight=None) -> torch.Tensor:
    """``[K, B, in] -> [K, B, out]`` computed as ``(W @ x^T)^T``: the weight gradient is
    then ``grad^T @ x``, a well-shaped product (forward + backward faster than
    ``x @ W^T``)."""
    weight = s.params[p + "weight"] if weight is None else weight  # [K, out, in]
    bias = s.params.get(p + "bias")
    xt = x.transpose(1, 2)
    out = torch.bmm(weight, xt) if bias is None else torch.baddbmm(bias.unsqueeze(2), weight, xt)
    return out.transpose(1, 2)


def _flatten_linear(m: nn.Linear, p: str, s: _Stack, x: torch.Tensor) -> torch.Tensor:
    """``Flatten`` then ``Linear`` ``m``: features in (H, W, C) order, and the weight's
    columns (C, H, W) permuted to match (a copy of the small weight, differentiable)."""
    _, kc, h, w = x.shape
    weight = s.params[p + "weight"]
    weight = (
        weight.reshape(s.k, -1, kc // s.k, h, w)
        .permute(0, 1, 3, 4, 2)
        .reshape(s.k, -1, h * w * kc // s.k)
    )
    return _linear(m, p, s, _Flatten.apply(x, s.k, True), weight)


def _always(m: nn.Module) -> bool:
    return True


def _conv_ok(m: nn.Conv2d) -> bool:
    return m.padding_mode == "zeros" and not isinstance(m.padding, str)


def _bn_ok(m: nn.BatchNorm2d) -> bool:
    return m.affine and m.track_running_stats


def _max_pool_ok(m: nn.MaxPool2d) -> bool:
    return not m.return_indices


def _flatten_ok(m: nn.Flatten) -> bool:
    return m.start_dim == 1 and m.end_dim == -1


# Layer type -> (batched forward, which instances of the type it covers), and whether the
# layer works on images (before Flatten) or on features (after it). Exact types: a subclass
# may override forward(), so it is not assumed to be covered.
LAYERS: dict[type[nn.Module], tuple[LayerFn, Callable[[nn.Module], bool], str]] = {
    nn.Conv2d: (_conv2d, _conv_ok, "image"),
    nn.BatchNorm2d: (_batch_norm2d, _bn_ok, "image"),
    nn.MaxPool2d: (_max_pool2d, _max_pool_ok, "image"),
    nn.AdaptiveAvgPool2d: (_adaptive_avg_pool2d, _always, "image"),
    nn.Flatten: (_flatten, _flatten_ok, "flatten"),
    nn.Linear: (_linear, _always, "features"),
    nn.ReLU: (_relu, _always, "any"),
    nn.Identity: (_identity, _always, "any"),
}


def supports(model: nn.Module) -> bool:
    """Whether :func:`stacked_forward` covers ``model``: an ``nn.Sequential`` of layers of
    the types in :data:`LAYERS` (and settings they cover): image layers, one ``Flatten``,
    then feature layers."""
    if type(model) is not nn.Sequential:
        return False
    stage = "image"
    for m in model.children():
        entry = LAYERS.get(type(m))
        if entry is None or not entry[1](m):
            return False
        kind = entry[2]
        if kind == "flatten":
            if stage != "image":
                return False
            stage = "features"
        elif kind != "any" and kind != stage:
            return False
    return stage == "features"


def stacked_forward(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    images: torch.Tensor,
    *,
    training: bool = True,
) -> torch.Tensor:
    """Logits ``[K, B, classes]`` of K stacked copies of ``model`` (a template: only its
    layer types and settings are read, never its weights) on ``images`` ``[K, B, C, H, W]``
    (model k's batch is ``images[k]``). ``params`` / ``buffers`` map ``state_dict`` names to
    tensors stacked along a new leading axis of size K; in training mode BatchNorm uses
    batch statistics and updates the stacked running statistics in place."""
    k, b, c, h, w = images.shape
    x = images.transpose(0, 1).reshape(b, k * c, h, w)  # the K batches side by side
    x = x.contiguous(memory_format=torch.channels_last)
    stack = _Stack(params, buffers, k, training)
    for fn, m, prefix in _plan(model):
        x = fn(m, prefix, stack, x)
    return x


def _plan(model: nn.Module) -> list[tuple[LayerFn, nn.Module, str]]:
    """The steps run: one per layer, in the model's order, with two exact rewrites.

    - A ``ReLU`` directly followed by a ``MaxPool2d`` runs after it: values and gradients
      are the same (ReLU is monotone: the pool picks the same first maximum either way, and
      where that is <= 0 both orders give 0 and a zero gradient), and the ReLU then touches
      a tensor kernel_size^2 times smaller (on the digits model: 8x8 -> 4x4).
    - A ``BatchNorm2d`` directly followed by a 2x2 ``MaxPool2d`` (after the first rewrite)
      is one step, :func:`_batch_norm_max_pool`.
    - A ``Flatten`` directly followed by a ``Linear`` is one step, :func:`_flatten_linear`.
    """
    layers = list(model.named_children())
    i = 0
    while i < len(layers) - 1:
        (_, a), (_, b) = layers[i], layers[i + 1]
        if type(a) is nn.ReLU and type(b) is nn.MaxPool2d:
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
            i += 1
        i += 1
    steps: list[tuple[LayerFn, nn.Module, str]] = []
    for name, m in layers:
        if type(m) is nn.Linear and steps and type(steps[-1][1]) is nn.Flatten:
            steps[-1] = (_flatten_linear, m, name + ".")
        elif (
            type(m) is nn.MaxPool2d
            and _pool_after_norm_ok(m)
            and steps
            and type(steps[-1][1]) is nn.BatchNorm2d
        ):
            _, norm, prefix = steps[-1]
            steps[-1] = (partial(_batch_norm_max_pool, pool=m), norm, prefix)
        else:
            steps.append((LAYERS[type(m)][0], m, name + "."))
    return steps
