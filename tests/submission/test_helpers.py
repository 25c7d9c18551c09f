import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from submission.helpers import (
    apply_grad_masks,
    frozen_copy,
    last_linear,
    layers_of_type,
    num_classes,
    penultimate_features,
    reinitialise,
    teacher_kl,
)
from submission.methods.masked_small_gradients import smallest_fraction
from submission.methods.salun import saliency_masks

from .conftest import TinyNet


def test_teacher_kl_golden_value():
    # KL(p || q) for p = softmax([0, ln 3]) = (1/4, 3/4), q = uniform, at T = 1.
    student = torch.zeros(1, 2)
    teacher = torch.tensor([[0.0, math.log(3.0)]])
    expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert teacher_kl(student, teacher).item() == pytest.approx(expected, rel=1e-6)
    # Temperature T divides the logits and multiplies by T**2.
    assert teacher_kl(student, 2 * teacher, 2.0).item() == pytest.approx(4 * expected, rel=1e-6)
    assert teacher_kl(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)


def test_layer_lookup_is_by_type():
    net = TinyNet()
    assert len(layers_of_type(net, nn.Conv2d)) == 2
    assert len(layers_of_type(net, nn.BatchNorm2d, nn.Linear)) == 3
    assert last_linear(net) is net.head and num_classes(net) == 10
    with pytest.raises(ValueError, match=r"no nn\.Linear"):
        last_linear(nn.Conv2d(1, 1, 1))


@pytest.mark.slow
def test_layer_lookup_works_on_resnet18():
    from torchvision.models import resnet18

    net = resnet18(num_classes=7)
    assert len(layers_of_type(net, nn.Conv2d)) == 20 and num_classes(net) == 7
    features, logits = penultimate_features(net.eval(), torch.randn(2, 3, 32, 32))
    assert features.shape == (2, 512) and logits.shape == (2, 7)


def test_penultimate_features_feed_the_head():
    net = TinyNet().eval()
    x = torch.randn(5, 3, 8, 8)
    features, logits = penultimate_features(net, x)
    assert features.shape == (5, 8)
    torch.testing.assert_close(net.head(features), logits)
    torch.testing.assert_close(features, net.body(x))
    assert not net.head._forward_hooks


def test_frozen_copy_and_reinitialise_leave_the_original():
    net = TinyNet()
    before = [p.clone() for p in net.parameters()]
    teacher = reinitialise(frozen_copy(net))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    assert not torch.equal(teacher.head.weight, net.head.weight)


def test_reinitialise_draws_torchvision_resnets_as_their_constructor_does():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    built = resnet18(num_classes=10)  # what the bad-teaching code's random teacher is
    net = resnet18(num_classes=10)
    with torch.no_grad():  # a "trained" network: every tensor moved off its initial draw
        for p in net.parameters():
            p.mul_(0.5).add_(0.3)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.fill_(1.0), m.running_var.fill_(4.0)
    fresh = reinitialise(copy.deepcopy(net))
    for (name, a), b in zip(fresh.named_parameters(), built.parameters(), strict=True):
        if a.dim() == 4:  # Kaiming normal, fan out: std sqrt(2 / (out * k * k)), mean 0
            fan_out = a.shape[0] * a.shape[2] * a.shape[3]
            assert a.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.08), name
            assert a.std().item() == pytest.approx(b.std().item(), rel=0.12), name
            assert abs(a.mean().item()) < 0.2 * a.std().item(), name
        elif name.startswith("fc."):  # nn.Linear's own draw: U(-1/sqrt(fan_in), +)
            assert a.abs().max().item() <= 1 / math.sqrt(512) + 1e-7, name
        else:  # BatchNorm: weight 1, bias 0, as built
            torch.testing.assert_close(a, b)
    for m in fresh.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean.abs().max() == 0 and torch.all(m.running_var == 1)
    # The layers' defaults alone (Kaiming uniform, a = sqrt(5)) give a conv std of
    # 1 / sqrt(3 fan_in), about 2.4 times smaller on ResNet-18's 3x3 convs.
    default = copy.deepcopy(net.layer4[1].conv2)
    default.reset_parameters()
    assert fresh.layer4[1].conv2.weight.std() > 2 * default.weight.std()


def test_reinitialise_keeps_the_layer_defaults_of_other_networks():
    net = TinyNet()
    torch.manual_seed(3)
    reinitialise(net)
    torch.manual_seed(3)
    expected = TinyNet()  # built from its layers' defaults, in the same order
    for a, b in zip(net.parameters(), expected.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_grad_masks_freeze_gradient_and_decay():
    w = nn.Parameter(torch.tensor([1.0, 2.0, 3.0]))
    w.grad = torch.tensor([0.5, 0.5, 0.5])
    apply_grad_masks({w: torch.tensor([1.0, 0.0, 0.1])}, weight_decay=0.1)
    torch.testing.assert_close(w.grad, torch.tensor([0.6, 0.0, 0.08]))


def test_masked_sgd_with_momentum_never_moves_frozen_weights():
    w = nn.Parameter(torch.ones(4))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    mask = torch.tensor([True, False, True, False])
    for _ in range(3):
        opt.zero_grad()
        (w * torch.arange(1.0, 5.0)).sum().backward()
        apply_grad_masks({w: mask}, weight_decay=5e-4)
        opt.step()
    assert torch.equal(w.detach()[~mask], torch.ones(2))
    assert (w.detach()[mask] < 1).all()


def test_saliency_masks_keep_the_largest_half_globally():
    a, b = nn.Parameter(torch.zeros(4)), nn.Parameter(torch.zeros(2))
    grads = {a: torch.tensor([0.1, -5.0, 0.2, 3.0]), b: torch.tensor([-0.3, 0.0])}
    masks = saliency_masks(None, grads, 0.5)
    assert masks[a].tolist() == [False, True, False, True] and masks[b].tolist() == [True, False]


def test_smallest_fraction_per_tensor():
    grad = torch.tensor([[0.5, -0.1], [2.0, 0.05]])
    assert smallest_fraction(grad, 0.5).tolist() == [[False, True], [False, True]]
    assert not smallest_fraction(grad, 0.0).any()


def test_cross_entropy_golden_for_reference():
    # Sanity anchor used by the method tests: uniform logits give CE = ln(classes).
    assert F.cross_entropy(torch.zeros(3, 10), torch.tensor([1, 2, 3])).item() == pytest.approx(
        math.log(10)
    )


def test_cross_entropy_step_runs_the_hook_between_backward_and_step():
    from submission.helpers import cross_entropy_step

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    grads_at_hook = []
    step = cross_entropy_step(
        net, optimizer, before_step=lambda: grads_at_hook.append(net.weight.grad.clone())
    )
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    before = net.weight.detach().clone()
    expected = torch.nn.functional.cross_entropy(net(x), y)
    loss = step((x, y))
    assert loss.item() == pytest.approx(expected.item())
    assert len(grads_at_hook) == 1 and grads_at_hook[0].abs().sum() > 0
    torch.testing.assert_close(net.weight.detach(), before - 0.1 * grads_at_hook[0])
