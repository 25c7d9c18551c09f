"""Self-contained Kaggle notebooks: ``python -m notebooks build`` (and ``build-eval``)."""

from notebooks.build import BuildError, build_kaggle_notebook, write_notebook
from notebooks.eval_notebook import build_eval_notebook

__all__ = ["BuildError", "build_eval_notebook", "build_kaggle_notebook", "write_notebook"]
