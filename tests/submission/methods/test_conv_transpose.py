"""``conv_transpose``: its published defaults and its signature step."""

import torch
from torch import nn

from submission.methods.conv_transpose import transpose_kernels


def test_transpose_kernels_swaps_spatial_axes_of_square_kernels_only():
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Conv2d(3, 3, (1, 3)), nn.Conv2d(3, 3, 1))
    before = [m.weight.detach().clone() for m in net]
    assert transpose_kernels(net) == 1
    torch.testing.assert_close(net[0].weight, before[0].transpose(2, 3))
    assert torch.equal(net[1].weight, before[1]) and torch.equal(net[2].weight, before[2])
