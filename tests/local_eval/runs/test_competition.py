"""The competition-shaped setting: its forget set's shape, fixed from the competition's facts."""

import json

import numpy as np
import pytest

from local_eval.cli.main import main as local_eval_main
from local_eval.data.setup import PERSONS_MAJORITY, load_setup, parse_forget_spec
from local_eval.runs.competition import COMPETITION, SETTING, forget_statistics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_forget_set_is_15_whole_persons_2_percent_almost_all_class_0(seed):
    setup = load_setup(SETTING["dataset"], forget=SETTING["forget"], seed=seed)
    stats = forget_statistics(setup)
    assert stats["forget_groups"] == COMPETITION["forget_groups"] == 15
    assert stats["persons_split"] == 0  # no person on both sides
    assert abs(stats["forget_fraction"] - COMPETITION["forget_fraction"]) < 0.005
    # 13 of the 15 persons of class 0, 2 of class 1: only the first two classes
    assert set(stats["forget_classes"]) == {0, 1}
    persons = setup.forget.column("person_id")
    labels = setup.forget.labels.numpy()
    of_class = [int(np.bincount(labels[persons == p]).argmax()) for p in np.unique(persons)]
    assert of_class.count(0) == round(15 * PERSONS_MAJORITY) == 13 and of_class.count(1) == 2
    assert stats["forget_classes"][0] > 0.8 * len(setup.forget)


def test_the_persons_spec_reads_a_count():
    assert parse_forget_spec("persons").count == 15
    assert parse_forget_spec("persons:6").count == 6
    for bad in ("persons:x", "persons:0"):
        with pytest.raises(ValueError, match="bad forget spec"):
            parse_forget_spec(bad)
    with pytest.raises(ValueError, match=r"persons of class [01], \d+ are needed"):
        load_setup("digits", forget="persons:400")


def test_the_settings_recipe_is_the_organisers_30_epochs():
    from local_eval.training.train import get_recipe

    recipe = get_recipe(SETTING["recipe"])
    assert (recipe.optimizer, recipe.lr, recipe.weight_decay, recipe.epochs) == (
        "adam", 1e-4, 5e-3, COMPETITION["recipe_epochs"]
    )
    assert recipe.class_weighted and recipe.best_on_val and recipe.schedule == "cosine"


@pytest.mark.slow
def test_the_leaderboard_runs_on_the_setting(tmp_path):
    """Every registered method on the competition-shaped setting, at a small N."""
    out = tmp_path / "board"
    argv = ["leaderboard", "--setting", "competition", "--n-models", "2",
            "--epochs", "2", "--workers", "1", "--quiet", "--cache-dir", str(tmp_path / "c"),
            "--out", str(out)]  # fmt: skip
    assert local_eval_main(argv) == 0
    board = json.loads((out / "leaderboard.json").read_text())
    from submission import METHODS

    assert {row["method"] for row in board["rows"]} == set(METHODS)
    assert board["setup"]["forget"] == "persons" and board["setup"]["arch"] == "resnet18_narrow"
    assert board["setup"]["trainer"] == "batched"  # the setting's references
