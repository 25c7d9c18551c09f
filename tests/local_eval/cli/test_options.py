"""The shared evaluation options: a named setting fills what it fixes, given options win."""

import dataclasses

import pytest

from local_eval.cli.options import build_parser, eval_config
from local_eval.runs.competition import SETTING
from local_eval.runs.pipeline import EvalConfig


def config(*argv: str) -> EvalConfig:
    return eval_config(build_parser("test", "test").parse_args(list(argv)))


def test_without_a_setting_the_options_take_the_configs_defaults():
    assert config() == EvalConfig()
    assert config("--dataset", "mnist5k", "--trainer", "batched") == EvalConfig(
        dataset="mnist5k", trainer="batched"
    )


def test_the_competition_setting_sets_its_options():
    got = config("--setting", "competition")
    assert {k: getattr(got, k) for k in SETTING} == SETTING
    assert SETTING == {
        "dataset": "digits",
        "forget": "persons",
        "arch": "resnet18_narrow",
        "recipe": "organisers_face",
        "trainer": "batched",
    }
    # everything else as without it
    rest = {f.name for f in dataclasses.fields(EvalConfig)} - set(SETTING)
    assert all(getattr(got, k) == getattr(EvalConfig(), k) for k in rest)


def test_an_option_given_beside_the_setting_wins():
    got = config("--setting", "competition", "--trainer", "sequential", "--n-models", "8")
    assert (got.trainer, got.n_models, got.arch) == ("sequential", 8, "resnet18_narrow")
    # even when it names the option's own default (the setting would have changed it)
    assert config("--setting", "competition", "--dataset", "digits").dataset == "digits"


def test_an_unknown_setting_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        config("--setting", "kaggle")
    assert exc.value.code == 2
    assert "invalid choice: 'kaggle'" in capsys.readouterr().err
