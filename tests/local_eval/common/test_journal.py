"""The journal a long job resumes from: identity check, exact round trips, clear refusals."""

import json

import pytest

from local_eval.common.errors import UsageError
from local_eval.common.journal import Journal


def test_pieces_read_back_exactly_in_a_journal_opened_again(tmp_path):
    folder = tmp_path / "board" / ".progress"
    journal = Journal(folder, {"n_models": 32, "methods": ("a", "b")})
    assert journal.keys() == [] and journal.get("row-0-a") is None
    value = {"score": 0.1 + 0.2, "points": [1 / 3, 2.5e-17, -0.0], "name": "a"}
    journal.put("row-0-a", value)
    journal.put("budget-0", {"budget_s": 1.8159871188006946, "retraining_s": None})
    # the same identity (a tuple reads back as a list): the pieces are there, to the last bit
    again = Journal(folder, {"n_models": 32, "methods": ["a", "b"]})
    assert again.keys() == ["budget-0", "row-0-a"]
    kept = again.get("row-0-a")
    assert kept == value and kept["score"] == 0.30000000000000004
    assert again.get("budget-0")["budget_s"] == 1.8159871188006946
    assert json.loads((folder / "identity.json").read_text()) == {
        "n_models": 32,
        "methods": ["a", "b"],
    }


def test_a_journal_of_other_settings_is_refused_naming_what_differs(tmp_path):
    folder = tmp_path / ".progress"
    Journal(folder, {"n_models": 32, "seed": 0, "methods": ["a"]}).put("row-0-a", {"x": 1})
    with pytest.raises(UsageError) as caught:
        Journal(folder, {"n_models": 64, "seed": 0, "methods": ["a"], "repeats": 2}, what="board")
    message = str(caught.value)
    assert "holds a board started with other settings" in message
    assert "n_models: 32 there, 64 now" in message
    assert "repeats: null there, 2 now" in message
    assert "seed" not in message  # the same on both sides
    assert f"delete {folder} to start it over" in message
    assert Journal(folder, {"n_models": 32, "seed": 0, "methods": ["a"]}).get("row-0-a") == {"x": 1}


def test_a_damaged_piece_says_how_to_redo_it_and_bad_keys_are_refused(tmp_path):
    journal = Journal(tmp_path, {"k": 1})
    (tmp_path / "row-0-a.json").write_text('{"score": 0.1')  # cut short (not by the journal)
    with pytest.raises(UsageError, match=r"row-0-a.json cannot be read back .*delete it"):
        journal.get("row-0-a")
    for key in ("../escape", "a b", "identity", ""):
        with pytest.raises(ValueError, match="journal key"):
            journal.put(key, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["identity.json", "row-0-a.json"]
