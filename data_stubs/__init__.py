"""A miniature of the competition's hidden input folder: ``python -m data_stubs make DIR``."""

from data_stubs.make import CSV_COLUMNS, StubConfig, StubError, make_stub

__all__ = ["CSV_COLUMNS", "StubConfig", "StubError", "make_stub"]
