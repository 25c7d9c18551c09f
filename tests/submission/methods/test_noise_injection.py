"""``noise_injection``: its published defaults and its signature step."""

import copy

import torch

from submission import METHODS, seed_everything


def test_noise_injection_restores_frozen_flags(tiny_setup):
    original, _, make = tiny_setup
    net = copy.deepcopy(original)
    net.body[0].bias.requires_grad_(False)
    seed_everything(0)
    METHODS["noise_injection"](net, *make("tuple"), epochs=2, noisy_epochs=1)
    flags = {name: p.requires_grad for name, p in net.named_parameters()}
    assert flags.pop("body.0.bias") is False and all(flags.values())
    assert torch.equal(net.body[0].bias, original.body[0].bias)
