"""The benchmarks still run: a quick pass of each, so they cannot rot between releases."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_core_ingest_benchmark_runs_quickly_and_prints_its_figures():
    run = subprocess.run(
        [sys.executable, "-m", "bench.core_ingest", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    for label in (
        "raw baseline: dict + executemany",
        "(a) PointDB",
        "(b) PointDB + alarms",
        "(c) PointDB + alarms + history (SQLite)",
    ):
        assert re.search(re.escape(label) + r"\s+[\d,]+/s\s+[\d.]+ x baseline", out), label
    assert re.search(r"tracemalloc: [\d,]+ B/point", out)
    assert re.search(r"24 h, 1-min buckets \(\d+ buckets\): first [\d.]+ ms, median [\d.]+ ms", out)
    assert "dropped: 0" in out


def test_onvif_snapshots_benchmark_runs_quickly_and_caps_camera_requests():
    run = subprocess.run(
        [sys.executable, "-m", "bench.onvif_snapshots", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    # Exit status 1 would mean a camera got more than one request a second.
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert re.search(r"browser requests: [\d,]+ \([\d,]+/s\), errors: 0", out)
    assert re.search(r"requests reaching the cameras: [\d,]+ .*max [\d.]+/s", out)
    assert re.search(r"latency: p50 [\d.]+ ms, p99 [\d.]+ ms", out)


def test_ws_fanout_benchmark_runs_quickly_and_delivers_every_update():
    run = subprocess.run(
        [sys.executable, "-m", "bench.ws_fanout", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    for label in ("raw aiohttp broadcast", "cityvisor /api/v1/ws"):
        assert re.search(
            re.escape(label) + r"\s+delivered\s+[\d,]+ of [\d,]+ \(100\.0%\)\s+[\d,]+/s"
            r"\s+latency p50 [\d.]+ ms, p99 [\d.]+ ms",
            out,
        ), label
    assert re.search(r"ratio: [\d.]+ x raw", out)
    assert "clients dropped: 0" in out


def test_modbus_poll_benchmark_runs_quickly_and_prints_its_figures():
    run = subprocess.run(
        [sys.executable, "-m", "bench.modbus_poll", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert re.search(r"coalescing: [\d.]+ x fewer requests", out)
    assert re.search(
        r"per cycle: cityvisor 40, raw 40, one per point 530 \(servers counted 530\)", out
    )
    assert re.search(
        r"ratio cityvisor / raw \(median of paired cycles\): [\d.]+ x wall, [\d.]+ x CPU", out
    )
    assert re.search(r"hub, drivers free-running: +[\d.]+%", out)
    assert "0 driver restarts" in out


def test_snmp_poll_benchmark_runs_quickly_and_prints_its_ratios():
    run = subprocess.run(
        [sys.executable, "-m", "bench.snmp_poll", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert re.search(r"requests per cycle: raw 30, cityvisor 30", out)
    assert re.search(
        r"ratio cityvisor / raw \(median of paired cycles\): [\d.]+ x wall, [\d.]+ x CPU", out
    )
    assert re.search(r"hub: +cycle median +[\d.]+ s, CPU +[\d.]+% of one core", out)
    assert "0 driver restarts" in out


def test_ntcip_poll_benchmark_runs_quickly_and_prints_its_ratios():
    run = subprocess.run(
        [sys.executable, "-m", "bench.ntcip_poll", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert re.search(r"requests per cycle: raw 10, cityvisor 10", out)
    assert re.search(
        r"ratio cityvisor / raw \(median of paired cycles\): [\d.]+ x wall, [\d.]+ x CPU", out
    )
    assert re.search(r"between two reads of a controller: median [\d.]+ s, max [\d.]+ s", out)
    assert re.search(r"CPU +[\d.]+% of one core", out)
    assert "0 driver restarts" in out


def test_patterns_benchmark_runs_quickly_and_prints_its_ratios():
    run = subprocess.run(
        [sys.executable, "-m", "bench.patterns", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert re.search(r"raw baseline: fnmatch regex, .*: \d+ ns/id", out)
    hostile = re.findall(r"cityvisor, hostile .*: \d+ ns/id \(([\d.]+) x raw\)", out)
    assert len(hostile) == 3, out
    assert re.search(r"backtracking, one id of \d+ characters: [\d,]+ ms", out)


def test_command_audit_benchmark_runs_quickly_and_journals_every_order():
    run = subprocess.run(
        [sys.executable, "-m", "bench.command_audit", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert re.search(r"raw baseline: 2 synced rows per command\s+[\d,]+/s", out)
    for label in ("(a) CommandBus, one at a time", "(b) CommandBus", "(c) CommandBus"):
        assert re.search(re.escape(label) + r".*\s+[\d,]+/s\s+[\d.]+ x baseline", out), label
    assert re.search(r"command_sent entries: ([\d,]+) of \1\n", out), out


def test_map_frames_benchmark_runs_quickly_and_prints_its_figures():
    run = subprocess.run(
        [sys.executable, "-m", "bench.map_frames", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert re.search(r"raw baseline \(no devices\): frame p50 [\d.]+ ms, p95 [\d.]+ ms", out)
    found = re.findall(
        r"5,000 devices, zoom \d+: clustering [\d.]+ ms, draw p50 [\d.]+ ms, frame p50 [\d.]+ ms,"
        r" p95 [\d.]+ ms \([\d.]+ x baseline\), \d+ marks drawn",
        out,
    )
    assert len(found) == 3, out


def test_journal_chain_benchmark_runs_quickly_and_prints_both_rates_and_the_cost():
    run = subprocess.run(
        [sys.executable, "-m", "bench.journal_chain", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert re.search(r"raw baseline: sqlite3, 1 synced row each\s+[\d,]+/s", out)
    for per in ("one entry", "100 entries"):
        for chain in ("no chain", "chained"):
            label = f"store, {per} per transaction, {chain}"
            assert re.search(re.escape(label) + r"\s+[\d,]+/s\s+[\d.]+ x baseline", out), label
    assert len(re.findall(r"chain cost, .*: -?[\d.]+% of the write rate", out)) == 2


def test_subscriptions_benchmark_runs_quickly_and_prints_its_figures():
    run = subprocess.run(
        [sys.executable, "-m", "bench.subscriptions", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    for label in ("raw: dict lookup", "raw: plain scan", "join a shared watch: one zone"):
        assert re.search(re.escape(label) + r"\s+[\d.]+ ms\s+[\d.]+ ms", run.stdout), label
    assert re.search(r"worst subscribe/unsubscribe .*: [\d.]+ ms", run.stdout)


def test_points_listing_benchmark_runs_quickly_and_prints_the_loop_lag():
    run = subprocess.run(
        [sys.executable, "-m", "bench.points_listing", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    for label in ("raw: idle", "pages of 10,000", "one request, limit=100000"):
        assert re.search(re.escape(label) + r".*lag p50 +[\d.]+ ms, p99 +[\d.]+ ms", run.stdout), (
            label
        )


def test_rules_benchmark_runs_quickly_and_prints_its_figures():
    run = subprocess.run(
        [sys.executable, "-m", "bench.rules", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert re.search(r"without rules \(PointDB \+ alarms\)\s+[\d,]+/s\s+1\.00 x baseline", out)
    assert re.search(r"with rules\s+[\d,]+/s\s+[\d.]+ x baseline", out)
    assert re.search(r"rules' cost: -?[\d.]+%", out)
    onsets = re.search(r"onsets: ([\d,]+)", out)
    assert onsets and int(onsets.group(1).replace(",", "")) > 0, out


def test_pg_history_benchmark_runs_quickly_and_prints_its_ratio_and_bytes_per_row():
    run = subprocess.run(
        [sys.executable, "-m", "bench.pg_history", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=55,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert re.search(r"raw baseline: binary COPY of ready tuples\s+[\d,]+ rows/s", out)
    assert re.search(
        r"store: record\(\) \+ flush_history\(\)\s+[\d,]+ rows/s\s+[\d.]+ x baseline", out
    )
    assert re.search(r"store: journal\(\), chained, 1 commit each\s+[\d,]+ rows/s\s+[\d.]+ x", out)
    assert re.search(r"disk: [\d.]+ bytes/row with the primary key", out)


def test_sparkplug_benchmark_runs_quickly_and_prints_its_ratio():
    run = subprocess.run(
        [sys.executable, "-m", "bench.sparkplug", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert re.search(r"raw baseline: .*\s+[\d,]+/s\s+1\.00 x baseline", out), out
    assert re.search(r"cityvisor: edge hubs -> central PointDB\s+[\d,]+/s\s+[\d.]+ x baseline", out)
    assert re.search(r"[\d.]+ us CPU per change", out)
    assert "sequence gaps 0" in out


def test_scale_benchmark_runs_quickly_and_prints_every_figure():
    run = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    for label in ("raw aiohttp broadcast", "cityvisor /api/v1/ws"):
        assert re.search(
            re.escape(label)
            + r"\s+delivered\s+[\d,]+ of [\d,]+ \(100\.0%\); latency p50 [\d.]+ ms,"
            r" p99 [\d.]+ ms; loop lag p99 [\d.]+ ms, max [\d.]+ ms; server CPU [\d.]+ us/update",
            out,
        ), label
    assert re.search(r"CPU ratio: [\d.]+ x raw", out)
    assert re.search(
        r"memory: empty hub \d+ MB; with the city [\d,]+ B/point; with the clients connected"
        r" [\d,]+ B/point; after they left [\d,]+ B/point",
        out,
    )
    assert "clients dropped 0" in out
    assert re.search(r"targets: p99 < 100 ms: (met|NOT met)", out)
