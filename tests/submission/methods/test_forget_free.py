"""``forget_free``: its published defaults and its signature step."""

import copy

import torch

from submission import METHODS, seed_everything
from tests.submission.conftest import Untouchable


def test_forget_free_never_reads_the_forget_set(tiny_setup):
    original, _, make = tiny_setup
    retain, _, val = make("dict")
    net = copy.deepcopy(original)
    seed_everything(0)
    METHODS["forget_free"](net, retain, Untouchable(), val)
    pairs = zip(net.parameters(), original.parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)
