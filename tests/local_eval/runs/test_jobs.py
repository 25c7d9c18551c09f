"""The job list of an evaluation, its shards, and assembling records back in index order."""

import numpy as np
import pytest

from local_eval.runs.jobs import WHOLE, Job, Shard, assemble, evaluation_jobs, model_seed
from local_eval.training.signals import ModelRecord


def test_an_evaluation_is_4n_jobs_in_a_fixed_order():
    jobs = evaluation_jobs(3)
    assert [str(j) for j in jobs] == [
        "unlearning:0", "unlearning:1", "unlearning:2",
        "retrained:0", "retrained:1", "retrained:2", "retrained:3", "retrained:4", "retrained:5",
        "original:0", "original:1", "original:2",
    ]  # fmt: skip
    assert Job.parse("retrained:4") == Job("retrained", 4)
    with pytest.raises(ValueError, match="not a job name"):
        Job.parse("teacher:1")


def test_model_seeds_never_change():
    """Cached models are found by these seeds: changing them would retrain every cache."""
    cases = [("original", 0), ("retrained", 0), ("retrained", 5), ("unlearning", 1)]
    assert [model_seed(0, r, i) for r, i in cases] == [
        1817441348, 993632895, 1460747719, 1531785293
    ]  # fmt: skip
    assert model_seed(7, "retrained", 3) == 2086489817


@pytest.mark.parametrize("n", [2, 3, 8])
@pytest.mark.parametrize("count", [1, 2, 3, 5, 7, 64])
def test_shards_cover_every_job_once_and_share_every_role_evenly(n, count):
    jobs = evaluation_jobs(n)
    parts = [Shard(i, count).select(jobs) for i in range(count)]
    flat = [job for part in parts for job in part]
    assert sorted(flat) == sorted(jobs) and len(flat) == len(set(flat)) == 4 * n
    for role, total in (("unlearning", n), ("retrained", 2 * n), ("original", n)):
        sizes = [sum(job.role == role for job in part) for part in parts]
        assert max(sizes) - min(sizes) <= 1 and sum(sizes) == total
    assert WHOLE.select(jobs) == list(jobs)


def test_shard_text():
    assert Shard.parse("0/2") == Shard(0, 2)
    assert Shard.parse(" 3 / 4 ") == Shard(3, 4)
    assert str(Shard(1, 8)) == "1/8"
    for text, message in [
        ("2/2", r"bad shard '2/2': needs 0 <= i < K \(shards are numbered 0 to K-1\), e\.g\. 0/2"),
        ("0/0", "bad shard '0/0': needs 0 <= i < K"),
        ("a/b", "bad shard 'a/b': expected i/K"),
        ("-1/2", "bad shard '-1/2'"),
        ("1", "bad shard '1'"),
        ("1/2/3", "bad shard"),
        ("", "bad shard"),
    ]:
        with pytest.raises(ValueError, match=message):
            Shard.parse(text)


def record(value: float) -> ModelRecord:
    return ModelRecord(
        forget_logits=np.full((2, 3), value, dtype=np.float32),
        test_losses=np.full(4, value, dtype=np.float32),
        retain_accuracy=value,
        test_accuracy=value,
        forget_accuracy=value,
        seconds=value,
    )


def test_assemble_puts_records_in_index_order_whatever_order_they_came_in():
    n = 2
    jobs = evaluation_jobs(n)
    values = {job: 10 * k + 1.0 for k, job in enumerate(jobs)}
    shuffled = dict(sorted(values.items(), key=lambda kv: -kv[1]))  # reversed arrival
    signals = assemble(
        {job: record(v) for job, v in shuffled.items()},
        n_models=n,
        seed=5,
        targets=np.array([0, 1]),
        example_ids=np.array(["a", "b"]),
    )
    assert list(signals.unlearned.retain_accuracy) == [1.0, 11.0]
    assert list(signals.retrained.retain_accuracy) == [21.0, 31.0]
    assert list(signals.ceiling.retain_accuracy) == [41.0, 51.0]
    assert list(signals.floor.retain_accuracy) == [61.0, 71.0]
    assert signals.floor.forget_logits.shape == (2, 2, 3)
    assert list(signals.ceiling.seeds) == [model_seed(5, "retrained", i) for i in (2, 3)]
    del shuffled[Job("original", 1)]
    with pytest.raises(KeyError, match="original:1"):
        assemble(
            {job: record(v) for job, v in shuffled.items()},
            n_models=n,
            seed=5,
            targets=np.array([0, 1]),
            example_ids=np.array(["a", "b"]),
        )
