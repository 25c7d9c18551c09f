"""Shared pieces of unlearning methods, written once: layer lookup by type, teacher copies and
KL, gradient masks, penultimate features, relabelling.

Layers are always found by type (Conv2d, Linear, BatchNorm), never by name, so every method
runs on the kit's small CNN as well as on torchvision's ResNet-18.
"""

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CONSTRUCTOR_INITS",
    "NORMS",
    "RecoveryCutWarning",
    "apply_grad_masks",
    "cross_entropy_step",
    "device_of",
    "frozen_copy",
    "last_linear",
    "layers_of_type",
    "num_classes",
    "penultimate_features",
    "projection_shortcuts",
    "reinitialise",
    "reinitialise_tensors",
    "teacher_kl",
    "warn_if_recovery_cut",
]


def device_of(net: nn.Module) -> torch.device:
    """The device of ``net``'s parameters (methods never pick a device themselves)."""
    try:
        return next(net.parameters()).device
    except StopIteration:
        raise ValueError("the model has no parameters") from None


def layers_of_type(net: nn.Module, *types: type) -> list[nn.Module]:
    """Modules of ``net`` that are instances of ``types``, in registration (forward) order."""
    return [m for m in net.modules() if isinstance(m, types)]


def last_linear(net: nn.Module) -> nn.Linear:
    """The classifier head: the last ``nn.Linear`` registered in ``net``."""
    linears = layers_of_type(net, nn.Linear)
    if not linears:
        raise ValueError(f"{type(net).__name__} has no nn.Linear layer to use as the classifier")
    return linears[-1]


def num_classes(net: nn.Module) -> int:
    return last_linear(net).out_features


def frozen_copy(net: nn.Module) -> nn.Module:
    """A deep copy in eval mode with gradients off (a teacher)."""
    teacher = copy.deepcopy(net).eval()
    teacher.requires_grad_(False)
    return teacher


@torch.no_grad()
def torchvision_resnet_init(net: nn.Module) -> None:
    """The draw of torchvision's ``ResNet.__init__`` (torchvision/models/resnet.py): every conv
    from a Kaiming normal (fan out, ReLU gain), every BatchNorm/GroupNorm weight 1 and bias 0;
    the classifier keeps ``nn.Linear``'s own draw. (``zero_init_residual`` is off by default
    there, so it is not applied.)"""
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


# Networks whose constructor draws its weights otherwise than the layers' own defaults, by the
# class's qualified name (so the submission need not import torchvision to recognise one).
CONSTRUCTOR_INITS = {"torchvision.models.resnet.ResNet": torchvision_resnet_init}


def constructor_init_of(net: nn.Module):
    """The registered constructor draw of ``net``'s class (None: its layers' own defaults)."""
    cls = type(net)
    return CONSTRUCTOR_INITS.get(f"{cls.__module__}.{cls.__qualname__}")


def reinitialise(net: nn.Module) -> nn.Module:
    """Re-draw every parameter (and reset every norm's running statistics) as a freshly built
    network of the same class would have them, in place: each layer's ``reset_parameters``,
    then the class's own constructor draw where :data:`CONSTRUCTOR_INITS` knows it (on
    torchvision's ResNet-18, Kaiming-normal convolutions instead of the layers' default
    Kaiming-uniform ones). Torch's global generator draws it: seed it for a reproducible copy."""
    for module in net.modules():
        if hasattr(module, "reset_parameters") and module is not net:
            module.reset_parameters()
    init = constructor_init_of(net)
    if init is not None:
        init(net)
    return net


def teacher_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
):
    """KL(teacher || student) at temperature ``T``, times ``T**2`` (Hinton et al. 2015).

    Shapes: ``(B, C)`` logits each; returns a scalar (mean over the batch).
    """
    t = temperature
    log_p_student = F.log_softmax(student_logits / t, dim=1)
    p_teacher = F.softmax(teacher_logits.detach() / t, dim=1)
    return F.kl_div(log_p_student, p_teacher, reduction="batchmean") * (t * t)


def apply_grad_masks(masks: dict[nn.Parameter, torch.Tensor], *, weight_decay: float = 0.0) -> None:
    """``grad = (grad + weight_decay * w) * mask`` for every masked parameter (in place).

    Call between ``backward()`` and ``optimizer.step()`` with an optimizer built without
    weight decay: decay is folded in before masking, so a zero mask entry gets neither
    gradient nor decay, and SGD momentum buffers of frozen entries stay zero. Masks may be
    boolean (freeze) or float (scale gradients).
    """
    for param, mask in masks.items():
        if param.grad is None:
            continue
        if weight_decay:
            param.grad.add_(param.detach(), alpha=weight_decay)
        param.grad.mul_(mask)


def penultimate_features(net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(features, logits)``: the input of the classifier head and the output of ``net``.

    Shapes ``(B, D)`` and ``(B, C)``. Uses a forward hook on :func:`last_linear`, so the
    network runs once and gradients flow through both outputs.
    """
    captured = []
    handle = last_linear(net).register_forward_hook(
        lambda m, inputs, out: captured.append(inputs[0])
    )
    try:
        logits = net(x)
    finally:
        handle.remove()
    return captured[-1].flatten(1), logits


def cross_entropy_step(net: nn.Module, optimizer, *, before_step=None):
    """A :meth:`~submission.loop.TrainLoop.run` step: cross-entropy on one ``(x, y)`` batch.

    ``before_step`` runs between the backward pass and the optimizer step (gradient masks).
    """

    def step(batch):
        x, y = batch
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        if before_step is not None:
            before_step()
        optimizer.step()
        return loss

    return step


NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def projection_shortcuts(net: nn.Module) -> list[nn.Module]:
    """The layers of the projection shortcuts: every 1x1 ``nn.Conv2d`` and the BatchNorm
    registered right after it (a ResNet ``downsample``: conv 1x1 + BatchNorm), in order."""
    layers = layers_of_type(net, nn.Conv2d, *NORMS)
    found = []
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1):
            found.append(layer)
            if i + 1 < len(layers) and isinstance(layers[i + 1], NORMS):
                found.append(layers[i + 1])
    return found


@torch.no_grad()
def reinitialise_tensors(entries: list[tuple[nn.Module, str]]) -> None:
    """Redraws each ``(layer, name)`` tensor from its layer's default initialisation, in place:
    ``reset_parameters`` on one copy of each layer (torch's generator), whose drawn tensors are
    copied back, so the layer's other tensors and its buffers stay as they are."""
    names: dict[int, tuple[nn.Module, set[str]]] = {}
    for module, name in entries:
        names.setdefault(id(module), (module, set()))[1].add(name)
    for module, drawn in names.values():
        fresh = copy.deepcopy(module)
        fresh.reset_parameters()
        for name in drawn:
            getattr(module, name).copy_(getattr(fresh, name))


class RecoveryCutWarning(UserWarning):
    """A budget cut the recovery that a method's published damage (noise, pruning,
    re-initialisation, a forget phase run whole) was sized for; each such method has its own
    subclass."""


def warn_if_recovery_cut(
    method: str,
    *,
    done: int,
    planned: int,
    steps: str,
    damage: str,
    budget_s,
    category: type[RecoveryCutWarning] = RecoveryCutWarning,
) -> None:
    """Warn (``category``) when only ``done`` of the ``planned`` recovery ``steps`` ran: the
    ``damage`` was done for the published recovery, so the model may be under-trained."""
    if done >= planned:
        return
    budget = "None" if budget_s is None else f"{budget_s:.3g}"
    warnings.warn(
        f"{method}: only {done} of the {planned} planned {steps} fit in budget_s={budget}; "
        f"{damage} for the published recovery, so the model may be under-trained. Give it a "
        "larger budget_s.",
        category,
        stacklevel=3,
    )
