import dataclasses
import json
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from local_eval.cli.main import main
from local_eval.data.setup import Split, load_setup, make_loader
from local_eval.runs.pipeline import EvalConfig, _group_size, _ModelSource
from local_eval.training.batched import (
    _batched_forward,
    _lanes,
    _summed_loss,
    epoch_orders,
    train_new_models_batched,
)
from local_eval.training.batched_ops import stacked_forward
from local_eval.training.cache import ModelCache
from local_eval.training.models import build_model
from local_eval.training.signals import accuracy, model_logits
from local_eval.training.train import get_recipe, train_new_model

SEEDS = [11, 12, 13, 14]


@pytest.fixture(scope="module")
def digits():
    return load_setup("digits")


@pytest.fixture(scope="module")
def recipe():
    return get_recipe("fast_smallcnn")


@pytest.fixture(scope="module")
def batched(digits, recipe):
    return train_new_models_batched(
        "smallcnn", digits.retain, digits.val, recipe, num_classes=10, device="cpu", seeds=SEEDS
    )


def _test_accuracy(model, setup):
    return accuracy(model_logits(model, setup.test, device="cpu"), setup.test.labels.numpy())


def test_epoch_orders_are_the_seeded_loaders_orders(digits):
    bare = Split(digits.retain.images, digits.retain.labels, {})
    loader = make_loader(bare, batch_size=64, shuffle=True, seed=7)
    for order in epoch_orders(len(bare), 7, 3):  # three passes over one loader
        seen = torch.cat([batch["image"] for batch in loader])
        assert torch.equal(seen, bare.images[order])


def test_every_model_gets_its_own_data_order():
    orders = [epoch_orders(500, s, 2) for s in SEEDS]
    firsts = [o[0] for o in orders]
    for i in range(len(SEEDS)):
        assert sorted(firsts[i].tolist()) == list(range(500))  # a permutation
        assert not torch.equal(orders[i][0], orders[i][1])  # a new order each epoch
        for j in range(i):
            assert not torch.equal(firsts[i], firsts[j])


def test_state_dicts_load_strictly_into_a_fresh_smallcnn(batched):
    for result in batched:
        fresh = build_model("smallcnn", num_classes=10, in_channels=1, image_size=8)
        fresh.load_state_dict(result.model.state_dict(), strict=True)
        assert not result.model.training


def test_each_model_has_its_own_weights_and_batchnorm_statistics(batched, digits, recipe):
    states = [r.model.state_dict() for r in batched]
    steps = recipe.epochs * -(-len(digits.retain) // recipe.batch_size)
    for state in states:
        assert int(state["1.num_batches_tracked"]) == steps
    for name in ("0.weight", "1.running_mean", "5.running_var", "9.weight"):
        assert not torch.equal(states[0][name], states[1][name])


def test_accuracies_match_the_sequential_trainer(batched, digits, recipe):
    sequential = [
        train_new_model(
            "smallcnn", digits.retain, digits.val, recipe, num_classes=10, device="cpu", seed=s
        ).model
        for s in SEEDS
    ]
    seq_acc = np.mean([_test_accuracy(m, digits) for m in sequential])
    bat_acc = np.mean([_test_accuracy(r.model, digits) for r in batched])
    assert bat_acc > 0.9 and abs(seq_acc - bat_acc) <= 0.02, (seq_acc, bat_acc)


def test_one_model_is_near_identical_to_the_sequential_run(digits, recipe):
    """Same seed, same batches, same steps: the weights differ only by float rounding (the
    grouped convolution sums in another order), amplified a little by 10 epochs."""
    seq = train_new_model(
        "smallcnn", digits.retain, digits.val, recipe, num_classes=10, device="cpu", seed=5
    ).model
    (bat,) = train_new_models_batched(
        "smallcnn", digits.retain, digits.val, recipe, num_classes=10, device="cpu", seeds=[5]
    )
    a, b = seq.state_dict(), bat.model.state_dict()
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=2e-2), name
    same = (
        model_logits(seq, digits.test, device="cpu").argmax(1)
        == model_logits(bat.model, digits.test, device="cpu").argmax(1)
    ).mean()
    assert same >= 0.99


def test_group_size_changes_nothing_but_float_noise_and_runs_repeat_exactly(batched, digits):
    """The same seeds in groups of 4 (the fixture), of 3 + 1 and of 1: the same models up to
    float noise. Adam amplifies that noise (its early steps are ~lr * sign(gradient), and a
    gradient component near 0 can flip sign), so after 10 epochs single weights may differ
    by ~1e-2 (as against the sequential trainer): compared here are the predictions."""
    recipe = get_recipe("fast_smallcnn")
    kwargs = dict(num_classes=10, device="cpu", seeds=SEEDS)
    for group in (3, 1):
        other = train_new_models_batched(
            "smallcnn", digits.retain, digits.val, recipe, group_size=group, **kwargs
        )
        for a, b in zip(batched, other, strict=True):
            same = (
                model_logits(a.model, digits.test, device="cpu").argmax(1)
                == model_logits(b.model, digits.test, device="cpu").argmax(1)
            ).mean()
            assert same >= 0.98, (group, same)
    again = train_new_models_batched("smallcnn", digits.retain, digits.val, recipe, **kwargs)
    for a, b in zip(batched, again, strict=True):
        sa, sb = a.model.state_dict(), b.model.state_dict()
        assert all(torch.equal(sa[name], sb[name]) for name in sa)  # deterministic


def test_groups_in_parallel_lanes_give_the_same_models(digits):
    """With 2 torch threads two groups train at once (one thread each); the models are
    those of the groups run one after the other at 1 thread, bit for bit, and the thread
    setting is restored."""
    recipe = get_recipe("fast_smallcnn", epochs=1)
    kwargs = dict(num_classes=10, device="cpu", seeds=[31, 32, 33, 34], group_size=2)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = train_new_models_batched("smallcnn", digits.retain, None, recipe, **kwargs)
        torch.set_num_threads(2)
        assert _lanes(2, "cpu") == 2 and _lanes(1, "cpu") == 1
        two = train_new_models_batched("smallcnn", digits.retain, None, recipe, **kwargs)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, two, strict=True):
        sa, sb = a.model.state_dict(), b.model.state_dict()
        assert all(torch.equal(sa[name], sb[name]) for name in sa)


def test_the_fast_path_for_the_small_cnn_and_vmap_for_resnet18():
    small = build_model("smallcnn", num_classes=10, in_channels=1, image_size=8).to("meta")
    assert _batched_forward(small).func is stacked_forward
    gen = torch.Generator().manual_seed(0)
    data = Split(torch.randn(16, 3, 32, 32, generator=gen), torch.randint(0, 3, (16,)), {})
    recipe = get_recipe("fast_smallcnn", epochs=1, batch_size=8)
    results = train_new_models_batched(
        "resnet18", data, None, recipe, num_classes=3, device="cpu", seeds=[1, 2]
    )
    first, second = (r.model.state_dict() for r in results)
    assert not torch.equal(first["conv1.weight"], second["conv1.weight"])
    assert int(first["bn1.num_batches_tracked"]) == 2


def test_summed_loss_is_each_models_own_cross_entropy():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 4, generator=gen)
    y = torch.randint(0, 4, (3, 5), generator=gen)
    weight = torch.tensor([1.0, 0.5, 2.0, 0.25])
    for w in (None, weight):
        expected = sum(
            torch.nn.functional.cross_entropy(logits[k], y[k], weight=w) for k in range(3)
        )
        assert torch.allclose(_summed_loss(logits, y, w), expected)


def test_refuses_what_it_cannot_batch(digits):
    kwargs = dict(num_classes=10, device="cpu")
    with pytest.raises(ValueError, match="sequential trainer"):
        aug = get_recipe("fast_smallcnn", augment="crop_flip")
        train_new_models_batched("smallcnn", digits.retain, None, aug, seeds=[1], **kwargs)
    with pytest.raises(ValueError, match="distinct"):
        recipe = get_recipe("fast_smallcnn")
        train_new_models_batched("smallcnn", digits.retain, None, recipe, seeds=[1, 1], **kwargs)


def test_best_on_validation_keeps_each_models_best_epoch_as_the_sequential_trainer(digits):
    # 6 epochs at a low rate: validation accuracy still moves from epoch to epoch
    recipe = get_recipe("fast_smallcnn", epochs=6, lr=2e-3)
    recipe = dataclasses.replace(recipe, best_on_val=True, best_from_epoch=3)
    val = digits.val
    seeds = [21, 22, 23]
    results = train_new_models_batched(
        "smallcnn", digits.retain, val, recipe, num_classes=10, device="cpu", seeds=seeds
    )
    last = train_new_models_batched(
        "smallcnn",
        digits.retain,
        val,
        dataclasses.replace(recipe, best_on_val=False),
        num_classes=10,
        device="cpu",
        seeds=seeds,
    )
    for result, final in zip(results, last, strict=True):
        assert 3 <= result.best_epoch <= 6 and final.best_epoch == 6
        # the kept weights are the reported epoch's: their accuracy is the reported one,
        # the best of the epochs from 3 on (so never below the last epoch's)
        kept = accuracy(model_logits(result.model, val, device="cpu"), val.labels.numpy())
        assert kept == pytest.approx(result.val_accuracy)
        assert result.val_accuracy >= final.val_accuracy
    assert any(r.best_epoch < 6 for r in results)  # (seed 22 peaks at epoch 4 here)
    # the sequential trainer, seed for seed, keeps an epoch of the same accuracy (up to the
    # float noise of the grouped kernels: one validation example in 180)
    for seed, result in zip(seeds, results, strict=True):
        alone = train_new_model(
            "smallcnn", digits.retain, val, recipe, num_classes=10, device="cpu", seed=seed
        )
        assert abs(alone.val_accuracy - result.val_accuracy) <= 1 / len(val) + 1e-9


PEAK_SCRIPT = """
import resource, torch
from local_eval.training.batched import train_new_models_batched
from local_eval.data.setup import load_setup
from local_eval.training.train import get_recipe
torch.set_num_threads(1)
setup = load_setup("digits")
recipe = get_recipe("fast_smallcnn", epochs=1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
train_new_models_batched("smallcnn", setup.retain, None, recipe, num_classes=10,
                         device="cpu", seeds=list(range(16)))
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_peak_memory_of_a_group_of_16_stays_small():
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT], capture_output=True, text=True, check=True
    )
    before, after = (int(v) / 1024 for v in out.stdout.split()[-2:])  # KiB on Linux
    # one sequential model adds ~170 MB as well (first use of oneDNN and autograd)
    assert after - before < 250, (before, after)  # MB the training adds to torch + data


# --------------------------------------------------------------------------------------
# The pipeline's --trainer batched
# --------------------------------------------------------------------------------------
QUICK = ["--n-models", "2", "--epochs", "1", "--threads", "1", "--quiet"]


def test_group_sizes_share_the_models_among_workers():
    assert [_group_size(n, 2) for n in (1, 2, 5, 64)] == [1, 1, 3, 16]
    assert _group_size(40, 1) == 16


def test_batched_models_have_their_own_cache_keys(digits, recipe):
    backend = types.SimpleNamespace(device=torch.device("cpu"))
    cache = ModelCache(None)
    source = _ModelSource(digits, "smallcnn", recipe, cache, backend, False, "batched")
    assert source.key("retrained", "batched") != source.key("retrained", "sequential")
    # the sequential trainer's keys are as they were before there was a batched trainer
    identity = {"role": "retrained", "data": digits.describe(), "arch": "smallcnn"}
    recipe_fields = {k: v for k, v in recipe.as_dict().items() if k not in ("name", "description")}
    recipe_fields.pop("best_from_epoch")  # 1, the default: left out of the key
    old_key = cache.group({**identity, "recipe": recipe_fields})
    assert source.key("retrained", "sequential") == old_key
    # the original (model 0) is the sequential trainer's, whatever trains the others
    assert source.trainer_of("original", 0) == "sequential"
    assert source.trainer_of("original", 1) == source.trainer_of("retrained", 0) == "batched"


def test_unknown_trainer_and_unbatchable_recipe_are_clean_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="trainer must be one of"):
        EvalConfig(trainer="parallel")
    code = main(
        [*QUICK, "--recipe", "cifar_kit", "--trainer", "batched", "--cache-dir", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert code == 2 and "sequential trainer" in err and "Traceback" not in err


@pytest.mark.slow
def test_evaluation_with_the_batched_trainer_end_to_end(tmp_path, capsys):
    """Two workers, so the groups also go through the process pool; a second run on the
    same cache trains nothing."""
    out = tmp_path / "out"
    args = [*QUICK, "--trainer", "batched", "--workers", "2", "--cache-dir", str(tmp_path / "c")]
    code = main([*args, "--method", "finetune", "--out", str(out), "--budget-s", "30"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["trainer"] == "batched"
    assert report["models_trained"] == {"original": 2, "retrained": 4}
    # the original was trained alone by the sequential trainer (its seconds are the budget's
    # base), the floor's other original and the references by the batched one
    digits = load_setup("digits")
    backend = types.SimpleNamespace(device=torch.device("cpu"))
    cache = ModelCache(tmp_path / "c")
    recipe = get_recipe("fast_smallcnn", epochs=1)
    source = _ModelSource(digits, "smallcnn", recipe, cache, backend, False, "batched")
    seeds = [source.seed("original", i) for i in (0, 1)]
    assert cache.load(source.key("original", "sequential"), seeds[0]) is not None
    assert cache.load(source.key("original", "batched"), seeds[0]) is None
    assert cache.load(source.key("original", "batched"), seeds[1]) is not None
    assert report["time"]["retraining_s"] == pytest.approx(
        cache.load(source.key("original", "sequential"), seeds[0]).seconds
    )
    assert np.isfinite(report["forget_quality"])
    code = main([*args, "--method", "finetune", "--out", str(tmp_path / "again")])
    assert code == 0
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert again["models_trained"] == {"original": 0, "retrained": 0}
