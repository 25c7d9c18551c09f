import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import stack_module_state

from local_eval.training import batched_ops
from local_eval.training.batched_ops import stacked_forward, supports
from local_eval.training.models import build_model


def _smallcnn(seed: int, image_size: int = 8) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("smallcnn", num_classes=10, in_channels=1, image_size=image_size)


def _odd_cnn(seed: int) -> nn.Module:
    """Settings the digits model does not use: conv bias, stride, groups, a BatchNorm with
    cumulative averaging (momentum None), two Linear layers, an adaptive pool."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 6, 3, stride=2, padding=1, groups=2, bias=True),
        nn.BatchNorm2d(6, momentum=None, eps=1e-3),
        nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(6, 4, 2, bias=True),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 12),
        nn.ReLU(),
        nn.Linear(12, 3),
    )


def _stack(models):
    params, buffers = stack_module_state(models)
    params = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    return params, {k: v.clone() for k, v in buffers.items()}


def _batches(k: int, b: int, shape, seed: int = 0) -> torch.Tensor:
    return torch.randn(k, b, *shape, generator=torch.Generator().manual_seed(seed))


def test_supports_the_digits_model_and_refuses_others():
    assert supports(_smallcnn(0)) and supports(_smallcnn(0, image_size=28))
    assert supports(_odd_cnn(0))
    assert not supports(build_model("resnet18", num_classes=10, in_channels=3, image_size=32))
    assert not supports(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Dropout(), nn.Flatten()))
    assert not supports(nn.Sequential(nn.Flatten(), nn.Conv2d(1, 2, 3)))  # image layer late
    assert not supports(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()))  # no Flatten
    assert not supports(nn.Sequential(nn.Conv2d(1, 2, 3, padding="same"), nn.Flatten()))
    assert not supports(nn.Sequential(nn.MaxPool2d(2, return_indices=True), nn.Flatten()))


@pytest.mark.parametrize(
    "make, shape", [(_smallcnn, (1, 8, 8)), (lambda s: _smallcnn(s, 28), (1, 28, 28))]
)
def test_one_model_gives_the_sequential_logits(make, shape):
    model = make(3).train()
    params, buffers = _stack([model])
    x = _batches(1, 64, shape)
    got = stacked_forward(model, params, buffers, x)
    expected = copy.deepcopy(model).train()(x[0])
    assert got.shape == (1, 64, 10)
    assert torch.allclose(got[0], expected, atol=1e-5), (got[0] - expected).abs().max()


def _check_against_separate_models(models, x, y):
    """Logits, every gradient and the BatchNorm buffers after one step of K stacked models
    equal those of the K models run one by one (within float rounding)."""
    params, buffers = _stack(models)
    logits = stacked_forward(models[0], params, buffers, x)
    k, b = y.shape
    loss = F.cross_entropy(logits.reshape(k * b, -1), y.reshape(-1), reduction="none")
    loss.view(k, b).mean(1).sum().backward()
    for i, model in enumerate(models):
        ref = copy.deepcopy(model).train()
        out = ref(x[i])
        assert torch.allclose(logits[i], out, atol=1e-5), (i, (logits[i] - out).abs().max())
        F.cross_entropy(out, y[i]).backward()
        for name, p in ref.named_parameters():
            assert torch.allclose(params[name].grad[i], p.grad, atol=1e-5, rtol=1e-4), (
                i,
                name,
                (params[name].grad[i] - p.grad).abs().max(),
            )
        for name, buf in ref.named_buffers():
            if name.endswith("num_batches_tracked"):
                assert torch.equal(buffers[name][i], buf), name
            else:
                assert torch.allclose(buffers[name][i], buf, atol=1e-6, rtol=1e-5), name


def test_gradients_and_running_stats_match_each_model_alone():
    models = [_smallcnn(s) for s in (1, 2, 3)]
    x = _batches(3, 64, (1, 8, 8), seed=1)
    y = torch.randint(0, 10, (3, 64), generator=torch.Generator().manual_seed(2))
    _check_against_separate_models(models, x, y)
    _check_against_separate_models(models[:1], x[:1], y[:1])  # K = 1


def test_other_layer_settings_match_each_model_alone():
    models = [_odd_cnn(s) for s in (4, 5)]
    x = _batches(2, 16, (2, 11, 11), seed=3)
    y = torch.randint(0, 3, (2, 16), generator=torch.Generator().manual_seed(4))
    _check_against_separate_models(models, x, y)


def test_a_models_result_does_not_depend_on_its_group():
    """Model 0's logits and gradients alone and in a group of 5: equal up to float noise."""
    models = [_smallcnn(s) for s in range(5)]
    x = _batches(5, 64, (1, 8, 8), seed=5)
    grads = []
    for group in (models[:1], models):
        params, buffers = _stack(group)
        logits = stacked_forward(group[0], params, buffers, x[: len(group)])
        logits[0].logsumexp(1).mean().backward()
        grads.append({k: v.grad[0] for k, v in params.items()})
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], atol=1e-6, rtol=1e-5), name


@pytest.mark.parametrize("make, shape", [(_smallcnn, (1, 8, 8)), (_odd_cnn, (2, 11, 11))])
def test_eval_mode_uses_and_keeps_the_running_statistics(make, shape):
    models = [make(s) for s in (6, 7)]
    for m in models:  # non-trivial running statistics
        m.train()(torch.randn(32, *shape))
    params, buffers = _stack(models)
    before = {k: v.clone() for k, v in buffers.items()}
    x = _batches(2, 8, shape, seed=8)
    with torch.no_grad():
        got = stacked_forward(models[0], params, buffers, x, training=False)
    for i, m in enumerate(models):
        assert torch.allclose(got[i], m.eval()(x[i]), atol=1e-5)
    for k, v in buffers.items():
        assert torch.equal(v, before[k]), k


@pytest.fixture
def fused_calls(monkeypatch) -> list:
    """One entry per call of the pool-then-normalise step."""
    calls = []
    real = batched_ops._PoolThenNormalise.apply
    monkeypatch.setattr(
        batched_ops._PoolThenNormalise, "apply", lambda *a: calls.append(1) or real(*a)
    )
    return calls


def test_a_batchnorm_then_2x2_max_pool_is_one_step_that_pools_first(fused_calls):
    """The digits model's BatchNorm -> (ReLU) -> MaxPool(2) runs as the pool, then the
    normalisation (see _PoolThenNormalise); the gradients and statistics checks above run
    through it. Another pool shape keeps the two layers."""
    models = [_smallcnn(s) for s in (1, 2)]
    x = _batches(2, 32, (1, 8, 8), seed=9)
    y = torch.randint(0, 10, (2, 32), generator=torch.Generator().manual_seed(9))
    _check_against_separate_models(models, x, y)
    assert fused_calls == [1]
    kinds = [step[0] for step in batched_ops._plan(models[0])]
    assert kinds[1].func is batched_ops._batch_norm_max_pool  # the first BatchNorm's step
    assert kinds.count(batched_ops._batch_norm2d) == 1  # the second (no pool after it)
    assert len(kinds) == len(list(models[0].children())) - 2  # BN+pool, Flatten+Linear
    assert sum(step[0] is batched_ops._batch_norm2d for step in batched_ops._plan(_odd_cnn(0)))


def test_a_scale_at_or_below_zero_falls_back_to_normalising_first(fused_calls):
    """Where a channel's BatchNorm scale is <= 0 the pool and the normalisation do not
    commute; that step runs the two layers as they are, still matching each model alone."""
    models = [_smallcnn(s) for s in (3, 4)]
    with torch.no_grad():
        models[1][1].weight[0] = -0.7
        models[1][1].weight[1] = 0.0
    x = _batches(2, 32, (1, 8, 8), seed=10)
    y = torch.randint(0, 10, (2, 32), generator=torch.Generator().manual_seed(10))
    _check_against_separate_models(models, x, y)
    assert fused_calls == []


@pytest.mark.parametrize(
    "pool, fused",
    [
        (nn.MaxPool2d(2), True),
        (nn.MaxPool2d((2, 2), stride=(2, 2), padding=0), True),
        (nn.MaxPool2d(2, stride=1), False),
        (nn.MaxPool2d(2, padding=1), False),
        (nn.MaxPool2d(2, dilation=2), False),
        (nn.MaxPool2d(2, ceil_mode=True), False),
        (nn.MaxPool2d(3, stride=2), False),
    ],
)
def test_only_a_plain_2x2_pool_joins_the_batchnorm_before_it(pool, fused):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), pool, nn.Flatten())
    kinds = [step[0] for step in batched_ops._plan(model)]
    assert (getattr(kinds[1], "func", None) is batched_ops._batch_norm_max_pool) is fused
    assert len(kinds) == (3 if fused else 4)
