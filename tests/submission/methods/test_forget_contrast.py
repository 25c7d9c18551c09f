"""``forget_contrast``: its published defaults and its signature step."""

import pytest
import torch

from submission.methods.forget_contrast import kl_to_uniform, output_contrast


def test_kl_to_uniform_and_output_contrast():
    assert kl_to_uniform(torch.zeros(2, 5)).item() == pytest.approx(0.0, abs=1e-6)
    assert kl_to_uniform(torch.tensor([[10.0, 0.0]])).item() > 0.6
    forget_logits = torch.randn(3, 4, requires_grad=True)
    retain_logits = torch.randn(5, 4, requires_grad=True)
    output_contrast(forget_logits, retain_logits, 1.15).backward()
    assert forget_logits.grad is not None and retain_logits.grad is None  # retain detached
