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
