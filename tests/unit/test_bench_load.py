"""The arithmetic behind the load benchmarks' figures (benchmarks/load.py): percentiles and gaps."""
from __future__ import annotations

import pytest

from benchmarks.load import Target, _lua, longest_gaps, percentile


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1 … 100
    assert percentile(values, 50) == 50 and percentile(values, 95) == 95 and percentile(values, 99) == 99
    assert percentile(values, 100) == 100 and percentile([7.0], 99) == 7 and percentile([], 50) == 0


def test_a_gap_is_a_stretch_with_no_response() -> None:
    done = [0.0, 0.01, 0.02, 1.52, 1.53, 1.9]
    assert longest_gaps(list(reversed(done)), 0.25) == pytest.approx([1.5, 0.37])  # completion order does not matter
    assert longest_gaps(done, 2.0) == []


def test_wrk_scripts_rotate_paths_and_carry_a_post_body() -> None:
    lua = _lua(Target(["/a", "/b"]))
    assert 'paths = {"/a", "/b"}' in lua and "wrk.method" not in lua
    lua = _lua(Target(["/api"], method="POST", body='{"prescription_id": 7}'))
    assert 'wrk.method = "POST"' in lua and 'wrk.body = "{\\"prescription_id\\": 7}"' in lua
