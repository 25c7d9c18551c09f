"""Self-contained Kaggle notebooks: ``python -m notebooks build`` (and ``build-eval``)."""

from notebooks.build import BuildError, build_kaggle_notebook, write_notebook

__all__ = ["BuildError", "build_kaggle_notebook", "write_notebook"]
