"""The method registry: a plain dict from names to unlearning functions.

Every registered function has the signature
``fn(net, retain, forget, val, *, budget_s=None, **hyperparameters) -> net``
(see docs/architecture.md, "Methods").
"""

from collections.abc import Callable

__all__ = ["METHODS", "UnknownMethodError", "get_method", "register"]

METHODS: dict[str, Callable] = {}


class UnknownMethodError(ValueError):
    """Raised by :func:`get_method` for a name that is not registered."""


def register(name: str) -> Callable[[Callable], Callable]:
    """Decorator adding ``fn`` to :data:`METHODS` under ``name``; refuses duplicates."""

    def add(fn: Callable) -> Callable:
        if name in METHODS:
            raise ValueError(f"method {name!r} is already registered ({METHODS[name].__module__})")
        METHODS[name] = fn
        return fn

    return add


def get_method(name: str) -> Callable:
    """The function registered as ``name``.

    >>> get_method("no-such-method")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    submission.registry.UnknownMethodError: unknown method 'no-such-method'; known methods: ...
    """
    try:
        return METHODS[name]
    except KeyError:
        known = ", ".join(sorted(METHODS)) or "(none registered)"
        raise UnknownMethodError(f"unknown method {name!r}; known methods: {known}") from None
