"""The loginpipe benchmark: throughput, cost and latency of loginpipe beside its peers.

``python -m bench [--quick]`` (``make bench``, ``make bench-quick``) runs every contender as
its own process on the local Kafka broker and Redis, on the same pre-filled topic, prints a
table and writes the figures to ``.bench/latest.json``. See the README, "Benchmark".
"""
