import numpy as np
import torch

from local_eval.training.cache import CACHE_ENV, ModelCache, default_cache_dir, group_key
from local_eval.training.signals import ModelRecord


def record(seed: int = 0) -> ModelRecord:
    rng = np.random.default_rng(seed)
    return ModelRecord(
        forget_logits=rng.normal(size=(5, 3)).astype(np.float32),
        test_losses=rng.random(7).astype(np.float32),
        retain_accuracy=0.99,
        test_accuracy=0.9,
        forget_accuracy=1.0,
        seconds=1.5,
    )


def test_round_trip_and_meta(tmp_path):
    cache = ModelCache(tmp_path)
    key = cache.group({"role": "retrained", "arch": "smallcnn"})
    assert cache.load(key, 7) is None
    cache.save(key, 7, record())
    loaded = cache.load(key, 7)
    assert np.array_equal(loaded.forget_logits, record().forget_logits)
    assert loaded.test_accuracy == 0.9 and loaded.seconds == 1.5
    assert (tmp_path / key / "meta.json").read_text().count("smallcnn") == 1
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in (tmp_path / key).iterdir()) == ["meta.json", "seed-7.npz"]


def test_weights_only_on_request(tmp_path):
    cache = ModelCache(tmp_path)
    key = cache.group({"role": "original"})
    assert cache.load_weights(key, 1) is None
    cache.save_weights(key, 1, {"w": torch.ones(2, 2)})
    assert torch.equal(cache.load_weights(key, 1)["w"], torch.ones(2, 2))


def test_key_covers_the_identity():
    base = {"role": "retrained", "arch": "smallcnn", "recipe": {"lr": 0.01}, "data": "abc"}
    assert group_key(base) == group_key(dict(reversed(base.items())))
    for change in (
        {"arch": "resnet18"},
        {"recipe": {"lr": 0.02}},
        {"data": "abd"},
        {"role": "original"},
    ):
        assert group_key({**base, **change}) != group_key(base)


def test_unreadable_entry_counts_as_missing(tmp_path):
    cache = ModelCache(tmp_path)
    key = cache.group({"x": 1})
    (tmp_path / key / "seed-3.npz").write_bytes(b"not a zip")
    assert cache.load(key, 3) is None


def test_disabled_cache_stores_nothing(tmp_path):
    cache = ModelCache(None)
    key = cache.group({"x": 1})
    cache.save(key, 0, record())
    assert cache.load(key, 0) is None
    assert list(tmp_path.iterdir()) == []


def test_default_location(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv(CACHE_ENV)
    assert default_cache_dir().parts[-2:] == (".cache", "unlearning-kit")
