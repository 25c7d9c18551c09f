"""The ``i/K`` shard notation, parsed in one place for ``python -m submission.run --shard`` and
the evaluator's ``python -m local_eval shard --shard`` (same rule, same messages)."""

import re

__all__ = ["split_shard"]

_SHARD_TEXT = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def split_shard(text: str) -> tuple[int, int]:
    """``"i/K"`` -> ``(i, K)`` with ``0 <= i < K``; otherwise a ``ValueError`` saying why."""
    match = _SHARD_TEXT.fullmatch(text)
    if not match:
        raise ValueError(f"bad shard {text!r}: expected i/K with whole numbers, e.g. 0/4")
    index, count = int(match[1]), int(match[2])
    if count < 1 or index >= count:
        raise ValueError(
            f"bad shard {text!r}: needs 0 <= i < K (shards are numbered 0 to K-1), "
            f"e.g. 0/{max(count, 2)}"
        )
    return index, count
