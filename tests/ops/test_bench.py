"""The dispatch benchmark still runs: a quick pass, so it cannot rot between releases."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_dispatch_benchmark_runs_quickly_and_prints_its_figures():
    run = subprocess.run(
        [sys.executable, "-m", "bench.ops_dispatch", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert re.search(
        r"nearest crew, 500 vehicles, 10000 open incidents: median \d+ us, p99 [\d.]+ ms, "
        r"raw loop median \d+ us, [\d.]+ x baseline",
        out,
    ), out
    assert re.search(r"positions ingested: [\d,]+/s, raw aiohttp handler [\d,]+/s, [\d.]+ x", out)
