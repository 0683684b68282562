"""completions/ and man/ are generated from the click tree and checked in: they must be current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_completions_and_man_pages_are_up_to_date() -> None:
    out = subprocess.run([sys.executable, "scripts/gen_docs.py", "--check"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
