"""``python -m local_eval score`` on saved confidences and logits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from local_eval.cli import score as score_cli
from local_eval.scoring import metric


@pytest.fixture
def groups():
    rng = np.random.default_rng(0)
    return rng.normal(0, 1, (16, 12)), rng.normal(0.8, 1, (16, 12))


def test_json_summary_from_npy(tmp_path, groups, capsys):
    u, r = groups
    np.save(tmp_path / "u.npy", u)
    np.save(tmp_path / "r.npy", r)
    code = score_cli.main(
        ["--unlearned", str(tmp_path / "u.npy"), "--retrained", str(tmp_path / "r.npy"), "--json"]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["forget_quality"] == pytest.approx(metric.forget_quality(u, r), abs=1e-15)
    assert out["n_models"] == 16 and out["n_examples"] == 12
    assert out["max_epsilon"] == 3.0  # ceil(ln 15)
    assert out["n_buckets"] == 6
    assert sum(row["examples"] for row in out["histogram"]) == 12


def test_logits_with_targets_in_npz(tmp_path, capsys):
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 5, size=7)
    lu, lr = rng.normal(0, 2, (8, 7, 5)), rng.normal(0, 2, (8, 7, 5))
    np.savez(tmp_path / "u.npz", logits=lu, targets=targets)
    np.savez(tmp_path / "r.npz", logits=lr, targets=targets)
    code = score_cli.main(
        ["--unlearned", str(tmp_path / "u.npz"), "--retrained", str(tmp_path / "r.npz"), "--json"]
    )
    assert code == 0
    expected = metric.forget_quality(
        metric.logit_scaled_confidence(lu, targets), metric.logit_scaled_confidence(lr, targets)
    )
    assert json.loads(capsys.readouterr().out)["forget_quality"] == pytest.approx(expected)


def test_table_output(tmp_path, groups, capsys):
    u, r = groups
    np.savez(tmp_path / "u.npz", confidences=u)
    np.savez(tmp_path / "r.npz", confidences=r)
    assert (
        score_cli.main(["--unlearned", f"{tmp_path}/u.npz", "--retrained", f"{tmp_path}/r.npz"])
        == 0
    )
    out = capsys.readouterr().out
    assert "forget quality F" in out and "[0.0, 0.5)" in out and ">= 3.0" in out


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "unlearned file not found"),
        ("logits_no_targets", "pass --targets"),
        ("wrong_keys", "expected 'confidences'"),
        ("shape_mismatch", "same shape"),
        ("strings", "dtype <U1"),
        ("garbage", "not a readable .npy/.npz"),
        ("nan", "NaN or inf at forget example 3"),
    ],
)
def test_clear_errors(tmp_path, capsys, setup, message):
    u, r = tmp_path / "u.npy", tmp_path / "r.npy"
    np.save(r, np.zeros((4, 5)))
    if setup == "logits_no_targets":
        np.save(u, np.zeros((4, 5, 3)))
    elif setup == "wrong_keys":
        u = tmp_path / "u.npz"
        np.savez(u, something=np.zeros((4, 5)))
    elif setup == "shape_mismatch":
        np.save(u, np.zeros((4, 6)))
    elif setup == "strings":
        np.save(u, np.full((4, 5), "a"))
    elif setup == "garbage":
        u.write_bytes(b"this is not numpy")
    elif setup == "nan":
        bad = np.ones((4, 5))
        bad[0, 3] = np.nan
        np.save(u, bad)
    code = score_cli.main(["--unlearned", str(u), "--retrained", str(r)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err
