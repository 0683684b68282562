"""bench/report.py (`make bench`): reading the scripts' JSON and writing the comparison table.

The benchmarks themselves are not run here (they take minutes): the committed
bench/results/latest.json holds real script output to read back.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import report
from bench.report import Comparison, parse_json_tail


def test_parse_json_tail_takes_the_last_object() -> None:
    out = 'table\n  a  b\n{\n  "x": 1\n}\nnoise\n{\n  "y": [1, 2]\n}\n'
    assert parse_json_tail(out) == {"y": [1, 2]}
    assert parse_json_tail('{\n "z": 0\n}\n') == {"z": 0}
    with pytest.raises(ValueError):
        parse_json_tail("no json here\n")


def test_standing_is_above_one_where_helios_does_better() -> None:
    faster = Comparison("req/s", "redis", 200, 100, "req/s", True)
    slower_start = Comparison("start-up", "redis", 2.0, 1.0, "s", False, "<= 3x", True)
    assert faster.ratio == 2 and faster.standing == 2
    assert slower_start.ratio == 2 and slower_start.standing == 0.5
    assert report._goal_standing(slower_start) == pytest.approx(1 / 3)
    assert report._goal_standing(Comparison("r", "nginx", 1, 3, "req/s", True, ">= 0.3x")) == 0.3
    assert report._goal_standing(faster) is None


def test_extractors_read_the_committed_results(tmp_path: Path) -> None:
    saved = json.loads((report.RESULTS / "latest.json").read_text())
    rows: dict[str, list[Comparison]] = {}
    for suite in report.SUITES:
        res = saved["results"].get(suite.name)
        if res is None:
            continue
        rows[suite.name] = suite.extract(res)
        for c in rows[suite.name]:
            assert math.isfinite(c.ratio) and c.ratio > 0, c
        if not rows[suite.name] and suite.alone is not None:
            assert suite.alone(res)
    assert any(rows.values()), "latest.json holds no comparison"
    out = tmp_path / "latest.md"
    report.write_markdown(out, rows, saved["results"], ["a note"], "now", False)
    text = out.read_text()
    assert "| measure | peer | HELIOS | peer | ratio |" in text and "- a note" in text
