"""bench/memory.py: the peak RSS of a block, not of the process's whole life."""

import sys

import numpy as np
import pytest

from bench import memory


def test_peak_of_a_block_sees_a_big_allocation_inside_it_and_not_one_before():
    big = np.ones(300 * 2**20 // 8)  # 300 MB, touched
    del big
    with memory.PeakRSS() as before_only:
        pass
    with memory.PeakRSS() as inside:
        block = np.ones(200 * 2**20 // 8)  # 200 MB, touched
        del block
    if sys.platform != "linux":
        pytest.skip("the block's peak needs Linux's /proc/self/clear_refs")
    assert inside.scope == "block"
    # the 300 MB freed before is not counted; the 200 MB inside is
    assert inside.mb - before_only.mb > 150
    assert inside.mb - before_only.mb < 260
    assert 150 < inside.rise_mb < 260
    assert abs(before_only.rise_mb) < 50


def test_high_water_mark_is_a_positive_size():
    mb, source = memory.high_water_mb()
    assert mb > 10 and source in ("VmHWM", "ru_maxrss")
