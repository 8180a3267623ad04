"""Tag invalidation: does invalidating a 10,000-key tag cost the same in a big database as in a small one?

Two redis-servers of our own (free loopback ports, temp dirs, no persistence; never the shared 6379) hold a tag
of `--tag-keys` entries (default 10,000) written the way `TaggedCache` writes them (the value with a TTL,
the key name in the set `tag:{bench:release}`). `RedisInvalidator.delete_tag` is timed `--repeat` times (the
tag written again before each) on two servers running side by side, one holding `--small-db` keys in all
(default 30,000), the other `--large-db` (default 3,000,000); the runs alternate between the two, so a busy
machine slows both alike. Target: the two medians within 1.5 x of each other. For contrast, the same 10,000
keys are also removed by pattern (`delete_pattern`, whose cost follows the size of the keyspace) in both
databases. Exit code 0 unless `--enforce`.

    .venv/bin/python benchmarks/redis_tag_invalidation.py
    .venv/bin/python benchmarks/redis_tag_invalidation.py --large-db 300000   # quick run
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
for entry in (ROOT, ROOT / "functions"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

import redis  # noqa: E402
from redis_pattern_invalidation import _cpu_model, load_note, populate  # noqa: E402

from invalidator.cache_tags import tag_set_key  # noqa: E402
from invalidator.redis_invalidation import RedisInvalidator  # noqa: E402
from tests.support.redis_cluster import REDIS_CLI, RedisServer  # noqa: E402

TARGET = 1.5
NAMESPACE = "bench"
TAG = "release"
TAGGED_PREFIX = "bench:tagged:"
FILLER_PREFIX = "bench:filler:"
TTL_S = 3600


def write_tag(port: int, count: int) -> None:
    """The tag's entries (SET ... EX) and its set (SADD in chunks), as TaggedCache leaves them."""
    set_key = tag_set_key(NAMESPACE, TAG).encode()
    parts: list[bytes] = []
    value = b"v" * 32
    for i in range(count):
        key = f"{TAGGED_PREFIX}{i}".encode()
        parts.append(b"*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$2\r\nEX\r\n$4\r\n%d\r\n"
                     % (len(key), key, len(value), value, TTL_S))
    for start in range(0, count, 1000):
        members = [f"{TAGGED_PREFIX}{i}".encode() for i in range(start, min(count, start + 1000))]
        parts.append(b"*%d\r\n$4\r\nSADD\r\n$%d\r\n%s\r\n" % (len(members) + 2, len(set_key), set_key))
        parts.extend(b"$%d\r\n%s\r\n" % (len(m), m) for m in members)
    parts.append(b"*3\r\n$6\r\nEXPIRE\r\n$%d\r\n%s\r\n$4\r\n%d\r\n" % (len(set_key), set_key, TTL_S + 60))
    result = subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), "--pipe"], input=b"".join(parts),
                            capture_output=True, check=False)
    if result.returncode != 0 or b"errors: 0" not in result.stdout:
        raise RuntimeError(f"writing the tag failed: {result.stdout[-300:]!r}")


def time_tag_once(client: redis.Redis, port: int, count: int) -> float:
    write_tag(port, count)
    invalidator = RedisInvalidator(client, tag_namespace=NAMESPACE)
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        report = invalidator.delete_tag(TAG)
        seconds = time.perf_counter() - started
    finally:
        gc.enable()
    if report.removed != count or client.exists(tag_set_key(NAMESPACE, TAG)):
        raise RuntimeError(f"tag invalidation removed {report.removed} of {count}")
    return seconds


def time_pattern(client: redis.Redis, port: int, count: int) -> float:
    write_tag(port, count)
    started = time.perf_counter()
    report = RedisInvalidator(client).delete_pattern(TAGGED_PREFIX + "*")
    seconds = time.perf_counter() - started
    if report.removed != count:
        raise RuntimeError("pattern invalidation missed keys")
    client.unlink(tag_set_key(NAMESPACE, TAG))
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag-keys", type=int, default=10_000)
    parser.add_argument("--small-db", type=int, default=30_000, help="keys in the small database, tag included")
    parser.add_argument("--large-db", type=int, default=3_000_000, help="keys in the large database, tag included")
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--enforce", action="store_true")
    args = parser.parse_args(argv)

    print(f"python {platform.python_version()}, nproc {os.cpu_count()}, {platform.system()} {platform.machine()}, "
          f"{_cpu_model()}; {load_note()}")
    sizes = {"small": args.small_db, "large": args.large_db}
    times: dict[str, list[float]] = {label: [] for label in sizes}
    pattern_ms: dict[str, float] = {}
    dbsize: dict[str, int] = {}
    with RedisServer() as small, RedisServer() as large:
        servers = {"small": small, "large": large}
        clients = {label: redis.Redis(host="127.0.0.1", port=srv.port, socket_timeout=30)
                   for label, srv in servers.items()}
        for label, srv in servers.items():
            started = time.perf_counter()
            fillers = sizes[label] - args.tag_keys - 1  # the tag's keys and its set make up the rest
            populate(srv.port, FILLER_PREFIX, fillers)
            print(f"{label}: {fillers:,} other keys written in {time.perf_counter() - started:.1f} s")
        time.sleep(2)  # let the large server finish growing its hash table
        # Alternate between the two servers, so whatever else the machine does hits both alike.
        for _ in range(args.repeat):
            for label, srv in servers.items():
                times[label].append(time_tag_once(clients[label], srv.port, args.tag_keys))
        for label, srv in servers.items():
            write_tag(srv.port, args.tag_keys)
            dbsize[label] = int(clients[label].dbsize())
            clients[label].unlink(tag_set_key(NAMESPACE, TAG))
            pattern_ms[label] = time_pattern(clients[label], srv.port, args.tag_keys) * 1000
            clients[label].close()

    print(f"\n{args.tag_keys:,}-key tag, {args.repeat} runs per database, alternating (the tag rewritten "
          "before each):\n")
    print("| database | keys in db | delete_tag median (ms) | min (ms) | max (ms) | same keys by pattern (ms) |")
    print("|---|---:|---:|---:|---:|---:|")
    for label in sizes:
        t = times[label]
        print(f"| {label} | {dbsize[label]:,} | {statistics.median(t) * 1000:.1f} | {min(t) * 1000:.1f} | "
              f"{max(t) * 1000:.1f} | {pattern_ms[label]:.0f} |")
    ratio = statistics.median(times["large"]) / statistics.median(times["small"])
    ok = max(ratio, 1 / ratio) <= TARGET
    print(f"\nlarge / small: delete_tag {ratio:.2f} x (target within {TARGET:g} x: {'met' if ok else 'NOT met'}); "
          f"by pattern {pattern_ms['large'] / pattern_ms['small']:.1f} x")
    print(f"after: {load_note()}")
    return 1 if args.enforce and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
