import doctest
import inspect
import re

import pytest

import submission
import submission.registry
from submission.registry import METHODS, UnknownMethodError, get_method, register

BASELINES = ["finetune", "neggrad_plus", "random_label", "scrub", "salun", "ssd", "bad_teacher"]


def test_the_published_baselines_are_registered():
    assert set(BASELINES) <= set(METHODS)
    assert type(METHODS) is dict


def test_get_method_returns_the_registered_function():
    assert get_method("scrub") is METHODS["scrub"]
    assert get_method("scrub").__module__ == "submission.methods.scrub"


def test_unknown_name_is_refused_with_the_known_names():
    with pytest.raises(UnknownMethodError) as info:
        get_method("scurb")
    message = str(info.value)
    assert "'scurb'" in message
    for name in METHODS:
        assert name in message
    assert isinstance(info.value, ValueError)


def test_duplicate_registration_is_refused():
    before = dict(METHODS)
    with pytest.raises(ValueError, match="already registered"):
        register("finetune")(lambda net, retain, forget, val: net)
    assert METHODS == before


def test_register_adds_a_new_name():
    def dummy(net, retain, forget, val, *, budget_s=None):
        return net

    try:
        assert register("_test_dummy")(dummy) is dummy
        assert get_method("_test_dummy") is dummy
    finally:
        METHODS.pop("_test_dummy", None)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_signature_is_the_contract(name):
    params = list(inspect.signature(METHODS[name]).parameters.values())
    assert [p.name for p in params[:4]] == ["net", "retain", "forget", "val"]
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params[:4])
    rest = params[4:]
    assert rest[0].name == "budget_s" and rest[0].default is None
    # Hyperparameters: keyword-only, each with a default.
    assert all(p.kind is p.KEYWORD_ONLY and p.default is not p.empty for p in rest)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_has_its_own_module_citing_its_source(name):
    module = inspect.getmodule(METHODS[name])
    assert module.__name__ == f"submission.methods.{name}"
    doc = module.__doc__ or ""
    assert "Recipe (" in doc and re.search(r"\b(19|20)\d\d\b", doc), "cite the paper and year"


def test_entry_point_is_the_default_method():
    params = list(inspect.signature(submission.unlearning).parameters)
    assert params[:4] == ["net", "retain", "forget", "val"]
    assert submission.DEFAULT_METHOD in METHODS


@pytest.mark.parametrize("module", [submission, submission.registry])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 1 and result.failed == 0
