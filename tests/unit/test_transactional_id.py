"""Transactional ids: unique among live consumers on one host, stable across a restart."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from loginpipe.exceptions import ConfigError
from loginpipe.kafka_io import TransactionalIdClaim


def base() -> str:
    return f"loginpipe-consumer-test-{uuid.uuid4().hex[:8]}"


def test_consumers_side_by_side_get_distinct_default_ids() -> None:
    b = base()
    first, second, third = (TransactionalIdClaim("", b) for _ in range(3))
    try:
        assert [c.transactional_id for c in (first, second, third)] == [b, f"{b}-1", f"{b}-2"]
    finally:
        for c in (first, second, third):
            c.release()


def test_a_restarted_consumer_gets_its_old_id_back() -> None:
    b = base()
    first = TransactionalIdClaim("", b)
    second = TransactionalIdClaim("", b)
    first.release()  # the first process is gone
    again = TransactionalIdClaim("", b)
    try:
        assert again.transactional_id == b
    finally:
        second.release()
        again.release()


def test_a_dead_process_releases_its_id_without_cleanup() -> None:
    b = base()
    # A child claims the id and is killed with SIGKILL: the kernel drops the claim.
    code = (
        "import os, signal, sys; from loginpipe.kafka_io import TransactionalIdClaim; "
        f"c = TransactionalIdClaim('', {b!r}); print(c.transactional_id, flush=True); "
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == b
    claim = TransactionalIdClaim("", b)
    try:
        assert claim.transactional_id == b
    finally:
        claim.release()


def test_an_explicit_id_held_by_another_consumer_is_refused_naming_the_setting() -> None:
    explicit = base()
    holder = TransactionalIdClaim(explicit, "unused")
    try:
        with pytest.raises(ConfigError, match="LOGINPIPE_CONSUMER_TRANSACTIONAL_ID"):
            TransactionalIdClaim(explicit, "unused")
    finally:
        holder.release()
    TransactionalIdClaim(explicit, "unused").release()
