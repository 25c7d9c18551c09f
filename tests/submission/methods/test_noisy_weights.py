"""``noisy_weights``: its published defaults and its signature step."""

import copy
import inspect
import math
import warnings

import pytest
import torch
from torchvision.models import resnet18

import submission.methods.noisy_weights as module
from submission import METHODS, seed_everything
from submission.methods.noisy_weights import (
    NoisyWeightsBudgetWarning,
    batch_scaled_cross_entropy,
    epoch_learning_rates,
    team_class_weights,
)

from ..conftest import CLASSES, SlowLoader, Untouchable, make_data, make_loader, make_net


def test_noisy_weights_defaults_are_the_published_recipe():
    # xcadet/deepunlearn munl/unlearning/kgltop3.py l. 48-54
    defaults = {
        k: p.default for k, p in inspect.signature(METHODS["noisy_weights"]).parameters.items()
    }
    assert defaults["noise_std"] == 0.6
    assert defaults["renoise_std"] == 0.005
    assert defaults["epochs"] == 4
    assert defaults["lr"] == 7e-4
    assert defaults["momentum"] == 0.9
    assert defaults["weight_decay"] == 5e-4
    assert defaults["class_weight"] == 0.05
    assert defaults["budget_s"] is None


def test_epoch_learning_rates_are_a_cosine_stepped_once_per_epoch():
    rates = epoch_learning_rates(7e-4, 4)
    torch.testing.assert_close(
        torch.tensor(rates, dtype=torch.float64),
        torch.tensor([7e-4, 5.974874e-4, 3.5e-4, 1.025126e-4], dtype=torch.float64),
        rtol=1e-6,
        atol=0,
    )


def test_class_weights_are_one_for_class_0_and_w_for_the_others():
    weights = team_class_weights(CLASSES, 0.05)
    assert weights.tolist() == pytest.approx([1.0] + [0.05] * (CLASSES - 1))


def test_weighted_loss_scales_the_batch_mean_by_the_mean_label_weight():
    logits = torch.zeros(4, CLASSES)  # every sample's cross-entropy is ln 10
    y = torch.tensor([0, 0, 1, 2])
    weights = team_class_weights(CLASSES, 0.05)
    loss = batch_scaled_cross_entropy(logits, y, weights)
    # mean weight (1 + 1 + 0.05 + 0.05) / 4 = 0.525; a per-sample weighting would give ln 10
    assert loss.item() == pytest.approx(0.525 * math.log(10), rel=1e-6)
    assert torch.nn.functional.cross_entropy(logits, y, weight=weights).item() == pytest.approx(
        math.log(10), rel=1e-6
    )


def test_noise_changes_only_the_stem_conv_by_the_published_std():
    torch.manual_seed(0)
    net = resnet18(num_classes=CLASSES).eval()
    before = copy.deepcopy(net.state_dict())
    seed_everything(0)
    METHODS["noisy_weights"](net, Untouchable(), Untouchable(), Untouchable(), epochs=0)
    after = net.state_dict()
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert changed == ["conv1.weight"]  # the team's name test selects conv1 alone
    noise = after["conv1.weight"] - before["conv1.weight"]
    assert noise.numel() == 64 * 3 * 7 * 7
    assert noise.std().item() == pytest.approx(0.6, abs=0.02)  # absolute, not relative
    assert abs(noise.mean().item()) < 0.02
    assert not net.training


class CountingLoader:
    """Counts the batches read from ``loader`` (over all passes)."""

    def __init__(self, loader):
        self.loader, self.read = loader, 0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.read += 1
            yield batch


@pytest.mark.parametrize("epochs, expected", [(3, [(0.6, 0), (0.005, 40)]), (1, [(0.6, 0)])])
def test_second_noise_comes_just_before_the_last_epoch(epochs, expected, tiny_setup, monkeypatch):
    original, _, make = tiny_setup
    retain, forget, val = make("tuple")
    retain = CountingLoader(retain)  # 20 batches an epoch
    calls = []
    add_noise = module.add_noise

    def recording(weight, std):
        calls.append((std, retain.read))
        add_noise(weight, std)

    monkeypatch.setattr(module, "add_noise", recording)
    seed_everything(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoisyWeightsBudgetWarning)  # the full recipe: no warning
        METHODS["noisy_weights"](copy.deepcopy(original), retain, forget, val, epochs=epochs)
    assert calls == expected
    assert retain.read == 20 * epochs


def test_a_budget_short_of_the_recovery_warns():
    retain = SlowLoader(make_loader(*make_data(160, seed=1), form="dict", batch_size=4), 0.02)
    forget = make_loader(*make_data(4, seed=2, shift=2.0), form="dict", batch_size=4)
    val = make_loader(*make_data(8, seed=3), form="dict", batch_size=4)
    seed_everything(0)
    with pytest.warns(NoisyWeightsBudgetWarning, match=r"of the 160 planned retain steps"):
        METHODS["noisy_weights"](make_net(), retain, forget, val, budget_s=0.3)
