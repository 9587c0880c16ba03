"""The aggregator's state in Redis: one hash per counts key, holding counts and positions.

Layout: the hash ``<prefix>device_counts`` has one field per device type (``android``,
``ios``: the login counts) and one field per partition of the processed topic,
``offset:<topic>:<partition>`` (the next offset to count, the aggregator's position). Counts
and positions live in one key so that

- one script touches one key, hence one slot: it runs on Redis Cluster as on a single Redis;
- they cannot part: deleting or evicting the key drops both together (a recount from the
  log's start, never a recount on top of kept counts).

Readers that want only the counts use ``read_counts`` (or ``HMGET`` of the device fields).
"""

from __future__ import annotations

import logging
import ssl
import time
from typing import Any

import redis
from redis.cluster import RedisCluster

from loginpipe.exceptions import ConfigError, DependencyUnavailable
from loginpipe.runtime import Stopper
from loginpipe.settings import RedisSettings, mask_url
from loginpipe.validation import DEVICE_TYPES

log = logging.getLogger(__name__)

POSITION_PREFIX = "offset:"

# Eviction policies that may drop a key without a TTL: the counts would vanish.
_EVICTING = ("allkeys-lru", "allkeys-lfu", "allkeys-random")

# KEYS[1] the hash of counts and positions.
# ARGV: number of partitions, then for each: its position field, the position this aggregator
# expects to find stored ('' for none), first offset, next offset, number of (field,
# increment) pairs, the pairs. A partition's increments are applied, and its position moved
# to the next offset, only if the stored position is the expected one (compare-and-set) and
# the batch does not start before it. Every counter is checked to be an integer before any
# is changed, so a script error leaves nothing half-applied. Returns {per partition 'ok' or
# the stored position ('' for none)} and the whole hash as field, value, ...
APPLY_BATCH_LUA = """
local n = tonumber(ARGV[1])
local i = 2
for _ = 1, n do
  local nf = tonumber(ARGV[i + 4])
  for j = 0, nf - 1 do
    local f = ARGV[i + 5 + 2 * j]
    local v = redis.call('HGET', KEYS[1], f)
    if v and not string.match(v, '^%-?%d+$') then
      return redis.error_reply('counter ' .. f .. ' in ' .. KEYS[1] .. ' is not an integer: ' .. v)
    end
  end
  i = i + 5 + 2 * nf
end
i = 2
local out = {}
for _ = 1, n do
  local field, expected = ARGV[i], ARGV[i + 1]
  local first, nxt, nf = tonumber(ARGV[i + 2]), ARGV[i + 3], tonumber(ARGV[i + 4])
  local stored = redis.call('HGET', KEYS[1], field) or ''
  if stored == expected and (expected == '' or first >= tonumber(expected)) then
    for j = 0, nf - 1 do
      redis.call('HINCRBY', KEYS[1], ARGV[i + 5 + 2 * j], ARGV[i + 6 + 2 * j])
    end
    redis.call('HSET', KEYS[1], field, nxt)
    out[#out + 1] = 'ok'
  else
    out[#out + 1] = stored
  end
  i = i + 5 + 2 * nf
end
return {out, redis.call('HGETALL', KEYS[1])}
"""

# Moves positions from the layout before one hash (KEYS[2], field = partition) into KEYS[1],
# unless KEYS[1] already has positions of that topic (ARGV[1] = their field prefix). Returns
# the number moved. Only run when KEYS[2] exists, which can only be on a single Redis: the
# old layout never worked on Redis Cluster.
MIGRATE_LUA = """
local old = redis.call('HGETALL', KEYS[2])
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(f, 1, string.len(ARGV[1])) == ARGV[1] then return -1 end
end
for j = 1, #old, 2 do
  redis.call('HSET', KEYS[1], ARGV[1] .. old[j], old[j + 1])
end
redis.call('DEL', KEYS[2])
return #old / 2
"""


def position_field(topic: str, partition: int) -> str:
    return f"{POSITION_PREFIX}{topic}:{partition}"


def split_hash(flat: dict[str, str]) -> tuple[dict[str, int], dict[str, dict[int, int]]]:
    """The hash's fields as (counts, positions per topic and partition). Pure."""
    counts = {d: 0 for d in DEVICE_TYPES}
    positions: dict[str, dict[int, int]] = {}
    for k, v in flat.items():
        if k.startswith(POSITION_PREFIX):
            topic, _, p = k[len(POSITION_PREFIX) :].rpartition(":")
            positions.setdefault(topic, {})[int(p)] = int(v)
        else:
            counts[k] = int(v)
    return counts, positions


def decode_flat(flat: list[bytes]) -> dict[str, str]:
    return {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}


def redis_client(s: RedisSettings, timeout: float = 5.0) -> redis.Redis | RedisCluster:
    kwargs: dict[str, Any] = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    if s.redis_ssl_ca_location:
        kwargs["ssl_ca_certs"] = s.redis_ssl_ca_location
    if s.redis_username:
        kwargs["username"] = s.redis_username
    if s.redis_password:
        kwargs["password"] = s.redis_password.reveal()
    if s.redis_cluster:
        return RedisCluster.from_url(s.redis_url, **kwargs)
    return redis.Redis.from_url(s.redis_url, **kwargs)


def auth_error(s: RedisSettings, exc: Exception) -> ConfigError:
    """Wrong credentials or missing rights: retrying cannot help, the operator must act."""
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return ConfigError(
            f"Redis at {mask_url(s.redis_url)} refused a command ({exc}): give the Redis user "
            f"{s.redis_username or 'default'!r} (LOGINPIPE_REDIS_USERNAME) the rules that "
            "`loginpipe redis-acl aggregator` prints (`reader` for the counts command), on the "
            "keys under LOGINPIPE_REDIS_KEY_PREFIX"
        )
    return ConfigError(
        f"Redis at {mask_url(s.redis_url)} refused the credentials ({exc}): set "
        "LOGINPIPE_REDIS_USERNAME and LOGINPIPE_REDIS_PASSWORD (or the user and password in "
        "LOGINPIPE_REDIS_URL) to the right ones"
    )


AUTH_ERRORS = (redis.AuthenticationError, redis.exceptions.NoPermissionError)


def check_redis(
    s: RedisSettings, timeout: float, stopper: Stopper | None = None
) -> redis.Redis | RedisCluster:
    """A client whose Redis answers; exit 2 at once on bad credentials, 3 if unreachable."""
    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        try:
            client = redis_client(s)  # RedisCluster connects (reads the slots) right here
            client.ping()
            return client
        except AUTH_ERRORS as exc:
            raise auth_error(s, exc) from None
        except redis.RedisError as exc:
            if _untrusted_certificate(exc):
                raise ConfigError(
                    f"Redis at {mask_url(s.redis_url)} presented a certificate this service does "
                    f"not trust ({exc}): set LOGINPIPE_REDIS_SSL_CA_LOCATION to the CA bundle "
                    "that signs it"
                ) from None
            if time.monotonic() + delay > deadline or (stopper and stopper.stopping):
                hint = " (LOGINPIPE_REDIS_CLUSTER=true needs a Redis Cluster)" * s.redis_cluster
                raise DependencyUnavailable(
                    f"cannot reach Redis at {mask_url(s.redis_url)} within {timeout:g}s ({exc}): "
                    f"check that Redis is up and that LOGINPIPE_REDIS_URL points at it{hint}"
                ) from None
            log.info("waiting for Redis", extra={"error": str(exc)})
            (stopper.wait if stopper else time.sleep)(delay)
            delay = min(delay * 2, 2.0)


def _untrusted_certificate(exc: BaseException) -> bool:
    """Whether a connection failed on the server's certificate (waiting cannot mend it)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def eviction_policies(client: redis.Redis | RedisCluster) -> set[str]:
    """Each node's maxmemory-policy (from INFO, which managed Redis services allow)."""
    if isinstance(client, RedisCluster):
        infos = client.info("memory", target_nodes=RedisCluster.PRIMARIES)
        return {str(i.get("maxmemory_policy", "")) for i in infos.values()}
    return {str(client.info("memory").get("maxmemory_policy", ""))}


def check_eviction(s: RedisSettings, client: redis.Redis | RedisCluster) -> None:
    """Refuse a Redis that may evict the counts (a key without a TTL) to make room."""
    try:
        policies = eviction_policies(client)
    except redis.ResponseError as exc:  # INFO refused (an ACL, a renamed command)
        log.warning(
            "cannot read Redis' maxmemory-policy; it must not be allkeys-*",
            extra={"error": str(exc)},
        )
        return
    evicting = sorted(policies & set(_EVICTING))
    if evicting:
        raise ConfigError(
            f"Redis at {mask_url(s.redis_url)} has maxmemory-policy {', '.join(evicting)}: it may "
            "evict the aggregator's counts to make room. Set maxmemory-policy to noeviction (or a "
            "volatile-* policy, which only evicts keys with a TTL), or use another Redis for "
            "LOGINPIPE_REDIS_URL"
        )


def migrate_positions(s: RedisSettings, client: redis.Redis | RedisCluster, topic: str) -> None:
    """Move positions kept in the layout before one hash into the counts hash, once."""
    legacy = f"{s.redis_key_prefix}offsets:{topic}"
    if not client.exists(legacy):
        return
    moved = client.eval(MIGRATE_LUA, 2, s.counts_key, legacy, f"{POSITION_PREFIX}{topic}:")
    if moved == -1:
        log.warning(
            "both layouts hold positions; the counts hash's win", extra={"legacy_key": legacy}
        )
    else:
        log.info("positions moved into the counts hash", extra={"from": legacy, "n": moved})


def read_hash(
    client: redis.Redis | RedisCluster, key: str
) -> tuple[dict[str, int], dict[str, dict[int, int]]]:
    """The counts hash as (counts, positions per topic and partition)."""
    raw: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
    return split_hash({k.decode(): v.decode() for k, v in raw.items()})


def read_counts(client: redis.Redis | RedisCluster, key: str) -> dict[str, int]:
    return read_hash(client, key)[0]
