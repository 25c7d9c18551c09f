"""``prune_reinit``: its published defaults and its signature step."""

import torch

from submission.methods.prune_reinit import reinit_smallest


def test_prune_reinit_keeps_exactly_the_largest_weights():
    torch.manual_seed(0)
    w = torch.randn(10, 20)
    kept = w.abs().flatten().topk(2).indices  # 1% of 200
    fresh = w.clone()
    reinit_smallest(fresh, 0.99)
    assert torch.equal(fresh.flatten()[kept], w.flatten()[kept])
    assert (fresh != w).sum() == 198
