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
    rows = [
        {"p99 to Redis": 40.0, "p50 to Redis": 5.0, "p99 first hop": 20.0},
        {"p99 to Redis": 90.0, "p50 to Redis": 6.0, "p99 first hop": 50.0},
        {"p99 to Redis": 45.0, "p50 to Redis": 7.0, "p99 first hop": None},
    ]
    s = ab.summary({ab.HEAD: rows, "base x": []})
    assert s[ab.HEAD]["p99 to Redis"] == {"median": 45.0, "range": [40.0, 90.0], "runs": 3}
    assert s[ab.HEAD]["p99 first hop"] == {"median": 35.0, "range": [20.0, 50.0], "runs": 2}
    assert s["base x"]["p99 to Redis"] is None


def test_the_table_states_this_checkout_against_the_base_and_the_floor() -> None:
    row = {"p99 to Redis": 30.0, "p50 to Redis": 5.0, "p99 first hop": 15.0}
    s = ab.summary({ab.HEAD: [row], "base x": [{**row, "p99 to Redis": 60.0}], ab.FLOOR: [row]})
    text = ab.render(s, "base x")
    assert f"p99 to Redis, {ab.HEAD} ÷ base x: 0.50" in text
    assert f"p99 to Redis, {ab.HEAD} ÷ {ab.FLOOR}: 1.00" in text
    assert f"p99 to Redis, base x ÷ {ab.FLOOR}: 2.00" in text


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
