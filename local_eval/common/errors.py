"""Exceptions shared by the evaluator and the submission tools."""


class UsageError(ValueError):
    """A user mistake (a bad option, path or file), reported as one line without a traceback."""


class RunTimeout(BaseException):
    """A run went past its hard time limit (a BaseException, so ``except Exception`` in the
    user's code cannot swallow it)."""
