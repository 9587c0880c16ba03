"""The side-by-side latency comparison: its order of runs, its summary, its export of a
revision."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from bench import ab


def test_each_variant_goes_first_in_turn_and_every_round_runs_each_once() -> None:
    names = ["head", "base", "floor"]
    orders = [ab.rotation(names, k) for k in range(4)]
    assert [o[0] for o in orders] == ["head", "base", "floor", "head"]
    assert all(sorted(o) == sorted(names) for o in orders)


def test_the_summary_gives_each_figure_s_median_and_range_and_skips_missing_ones() -> None:
    rows: list[dict[str, float | None]] = [
        {"p99 to Redis, ms": 40.0, "at least once, events/s": 70_000.0},
        {"p99 to Redis, ms": 90.0, "at least once, events/s": None},
        {"p99 to Redis, ms": 45.0, "at least once, events/s": 60_000.0},
    ]
    s = ab.summary({ab.HEAD: rows, "base x": [{"p99 to Redis, ms": 50.0}]})
    assert s[ab.HEAD]["p99 to Redis, ms"] == {"median": 45.0, "range": [40.0, 90.0], "runs": 3}
    assert s[ab.HEAD]["at least once, events/s"] == {
        "median": 65_000.0,
        "range": [60_000.0, 70_000.0],
        "runs": 2,
    }
    assert s["base x"]["at least once, events/s"] is None


def test_the_table_gives_this_checkout_against_the_base_and_latency_against_the_floor() -> None:
    head = {"p99 to Redis, ms": 30.0, "exactly once, events/s": 80_000.0}
    base = {"p99 to Redis, ms": 60.0, "exactly once, events/s": 64_000.0}
    floor = {"p99 to Redis, ms": 30.0}
    text = ab.render(ab.summary({ab.HEAD: [head], "base x": [base], ab.FLOOR: [floor]}), "base x")
    assert f"p99 to Redis, ms: {ab.HEAD} ÷ base x = 0.50" in text
    assert f"p99 to Redis, ms: {ab.HEAD} ÷ {ab.FLOOR} = 1.00" in text
    assert f"p99 to Redis, ms: base x ÷ {ab.FLOOR} = 2.00" in text
    assert f"exactly once, events/s: {ab.HEAD} ÷ base x = 1.25" in text
    assert "80,000 (80,000-80,000)" in text
    assert f"exactly once, events/s: {ab.HEAD} ÷ {ab.FLOOR}" not in text  # the floor has none


def test_a_revision_s_services_are_exported_once_per_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if subprocess.run(
        ["git", "-C", str(ab.ROOT), "rev-parse", "HEAD"], capture_output=True
    ).returncode:
        pytest.skip("not a git checkout: nothing to export")
    monkeypatch.setattr(ab, "TREES", tmp_path)
    commit, services = ab.export("HEAD")
    assert services == tmp_path / commit / "services"
    assert (services / "loginpipe" / "consumer.py").is_file()
    marker = services / "loginpipe" / "marker"
    marker.write_text("kept")
    assert ab.export(commit) == (commit, services) and marker.read_text() == "kept"


def test_an_unknown_revision_is_refused_with_its_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert ab.main(["--base", "no-such-revision-xyz"]) == 2
    assert "no-such-revision-xyz" in capsys.readouterr().err
