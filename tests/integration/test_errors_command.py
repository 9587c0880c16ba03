"""`loginpipe errors` on the real broker: a summary of what the errors topic holds."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from loginpipe.events import GroundTruth, generate
from tests.integration.conftest import Pipeline, wait_for

pytestmark = pytest.mark.integration

SEED, COUNT, BAD_SHARE, START = 23, 6000, 0.3, 1_764_000_000


def routed(pl: Pipeline) -> GroundTruth:
    """A seeded generator run, routed by the consumer; its ground truth."""
    truth = GroundTruth()
    for ev in generate(COUNT, seed=SEED, bad_share=BAD_SHARE, start_time=START):
        truth.add(ev)
    gen = pl.run_cli(
        "generate", f"--count={COUNT}", "--rate=0", f"--seed={SEED}",
        f"--bad-share={BAD_SHARE}", f"--start-time={START}",
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    pl.service("consumer", "consume").start()
    pl.read_all(pl.errors, expected=truth.invalid)
    return truth


def errors_json(pl: Pipeline, *args: str) -> dict:
    out = pl.run_cli("errors", "--json", *args)
    assert out.returncode == 0, out.stderr
    return orjson.loads(out.stdout)


def test_the_summary_equals_the_generators_ground_truth(make_pipeline) -> None:
    pl = make_pipeline(partitions=3)
    truth = routed(pl)
    report = errors_json(pl)
    assert report["records"] == truth.invalid
    assert report["by_reason"] == dict(truth.invalid_by_reason)
    assert sum(report["by_source_partition"].values()) == truth.invalid
    assert set(report["by_source_partition"]) <= {f"{pl.input}/{p}" for p in range(3)}
    assert report["unreadable"] == 0
    for reason, samples in report["samples"].items():
        assert 1 <= len(samples) <= 3
        src = samples[0]["source"]
        assert src["topic"] == pl.input and src["offset"] >= 0, reason
    # The text form says the same, for a person.
    text = pl.run_cli("errors")
    assert text.returncode == 0, text.stderr
    assert f"{truth.invalid} error records" in text.stdout
    for reason, n in truth.invalid_by_reason.items():
        assert reason in text.stdout and str(n) in text.stdout


def test_a_window_of_offsets_or_time_reads_only_that_window(make_pipeline) -> None:
    pl = make_pipeline(partitions=1)
    truth = routed(pl)
    first = errors_json(pl, "--offsets=0:0-100")
    assert first["records"] == 100 and first["ranges"] == {"0": [0, 100]}
    rest = errors_json(pl, "--offsets=0:100-")
    assert rest["records"] == truth.invalid - 100
    whole = Counter(first["by_reason"]) + Counter(rest["by_reason"])
    assert dict(whole) == dict(truth.invalid_by_reason)
    # Every error record was written within the last hour, none in the future.
    assert errors_json(pl, "--since=1h")["records"] == truth.invalid
    assert errors_json(pl, "--since=2999-01-01T00:00:00Z")["records"] == 0


def test_records_appended_while_reading_do_not_keep_it_going_and_bad_flags_exit_2(
    make_pipeline,
) -> None:
    pl = make_pipeline(partitions=1)
    before = routed(pl).invalid
    pl.service("generator", "generate", "--rate=500", f"--bad-share={BAD_SHARE}").start()
    # Each read ends at what the topic held when it began, though the topic keeps growing.
    wait_for("reads to see the topic grow", lambda: errors_json(pl)["records"] > before + 100, 60)
    for bad in ("--since=yesterday", "--offsets=zero", "--offsets=7:0-"):
        out = pl.run_cli("errors", bad)
        assert out.returncode == 2, (bad, out.stderr)
        assert "loginpipe errors: error:" in out.stderr, out.stderr
