#!/usr/bin/env python3
"""Start-up time of an engine whose __consumer_offsets holds many commits,
before and after compaction (issue 17 section 2).

One engine (release binary, 1 shard, its defaults otherwise) takes COMMITS
offset commits from one group: a confluent-kafka consumer commits offsets
for PARTITIONS partitions at a time, COMMITS / PARTITIONS times, pipelined
(each commit request is one record batch of PARTITIONS entries in the
group's __consumer_offsets partition). Then, on that one data directory:

  before  the engine restarted with the cleaner off (a backoff of ~30
          years): the replay reads every commit;
  clean   restarted with the cleaner on (--log-cleaner-backoff-ms 500),
          left until a pass has run and none has for 3 s, then stopped;
  after   restarted again: the replay reads the compacted log.

Start-up time: from the spawn of the process to the first OffsetFetch
that returns the group's last committed offsets (a client's view), and
the coordinator's own "coordinator partition loaded" line (entries
replayed). Every restart is a graceful SIGTERM stop, then a start.

Usage: offsets_startup.py ENGINE_BINARY DATA_DIR COMMITS [PARTITIONS (default 500)]
Prints one JSON object per phase.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TOPIC = "committed"
GROUP = "startup-bench"
CLEANER_OFF_MS = str(10**12)
# Commit requests in flight at most while loading (see the load loop).
IN_FLIGHT_MAX = 200


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Engine:
    def __init__(self, binary, data_dir, log_path, extra):
        self.port = free_port()
        self.log_path = log_path
        self.started = time.monotonic()
        log = open(log_path, "w")
        env = dict(os.environ, RUST_LOG="info")
        self.process = subprocess.Popen(
            [binary, "--listen", f"127.0.0.1:{self.port}", "--data-dir", data_dir, "--shards", "1", *extra],
            stdout=log, stderr=subprocess.STDOUT, env=env)

    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=120)

    def log(self):
        with open(self.log_path) as f:
            return f.read()


def consumer(engine):
    return Consumer({"bootstrap.servers": engine.bootstrap(), "group.id": GROUP,
                     "enable.auto.commit": False, "socket.timeout.ms": 2000})


def wait_for_offsets(engine, partitions, expected):
    """Seconds from the spawn until OffsetFetch returns `expected` for every partition."""
    while True:
        try:
            c = consumer(engine)
            got = c.committed([TopicPartition(TOPIC, p) for p in range(partitions)], timeout=5)
            c.close()
            if all(tp.error is None and tp.offset == expected for tp in got):
                return time.monotonic() - engine.started
        except Exception:  # not up yet: refused, timed out, coordinator loading
            pass
        if engine.process.poll() is not None:
            raise SystemExit(f"engine exited:\n{engine.log()}")
        time.sleep(0.05)


def log_time(line):
    """Seconds since the epoch of a log line's RFC 3339 stamp."""
    stamp = line.split()[0].rstrip("Z")
    whole, _, fraction = stamp.partition(".")
    return time.mktime(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) - time.timezone + float("0." + (fraction or "0"))


def loaded(engine):
    """(entries, batches, seconds from the engine's first log line to its
    last "coordinator partition loaded") of the coordinator's replays."""
    entries = batches = 0
    lines = engine.log().splitlines()
    first = log_time(lines[0])
    done = first
    for line in lines:
        if "coordinator partition loaded" in line:
            entries += int(re.search(r"entries=(\d+)", line).group(1))
            batches += int(re.search(r"batches=(\d+)", line).group(1))
            done = log_time(line)
    return entries, batches, done - first


def directory_bytes(path):
    """Bytes allocated on disk (segments are sparse files of their full size)."""
    return sum(os.stat(os.path.join(root, f)).st_blocks * 512 for root, _, files in os.walk(path) for f in files)


def offsets_bytes(data_dir):
    partitions = os.path.join(data_dir, "partitions")
    return sum(directory_bytes(os.path.join(partitions, d)) for d in os.listdir(partitions)
               if d.startswith("__consumer_offsets-"))


def main():
    binary, data_dir, commits = sys.argv[1], sys.argv[2], int(sys.argv[3])
    partitions = int(sys.argv[4]) if len(sys.argv) > 4 else 500
    rounds = commits // partitions
    os.makedirs(data_dir, exist_ok=True)
    log_dir = data_dir.rstrip("/") + "-logs"
    os.makedirs(log_dir, exist_ok=True)

    engine = Engine(binary, data_dir, f"{log_dir}/load.log", ["--log-cleaner-backoff-ms", CLEANER_OFF_MS])
    admin = None
    while admin is None:
        try:
            admin = AdminClient({"bootstrap.servers": engine.bootstrap()})
            admin.create_topics([NewTopic(TOPIC, partitions, 1)])[TOPIC].result(timeout=10)
        except Exception:
            admin = None
            time.sleep(0.1)
    c = consumer(engine)
    started = time.monotonic()
    for offset in range(1, rounds + 1):
        # Asynchronous commits pipelined on one connection (the engine
        # shares fsyncs among them), and every IN_FLIGHT_MAX-th one
        # synchronous: it waits for those before it, which bounds what
        # librdkafka holds (unbounded, its results pile up in memory).
        offsets = [TopicPartition(TOPIC, p, offset) for p in range(partitions)]
        c.commit(offsets=offsets, asynchronous=offset % IN_FLIGHT_MAX != 0)
    c.commit(offsets=[TopicPartition(TOPIC, p, rounds) for p in range(partitions)], asynchronous=False)
    load_s = time.monotonic() - started
    c.close()
    engine.stop()
    print(json.dumps({"phase": "load", "commits": rounds * partitions, "requests": rounds,
                      "seconds": round(load_s, 1), "offsets_bytes": offsets_bytes(data_dir)}), flush=True)

    for phase, extra in [("before", ["--log-cleaner-backoff-ms", CLEANER_OFF_MS]),
                         ("clean", ["--log-cleaner-backoff-ms", "500"]),
                         ("after", ["--log-cleaner-backoff-ms", CLEANER_OFF_MS])]:
        engine = Engine(binary, data_dir, f"{log_dir}/{phase}.log", extra)
        startup_s = wait_for_offsets(engine, partitions, rounds)
        entries, batches, loaded_s = loaded(engine)
        if phase == "clean":
            # Until a pass has finished and none has for 3 s since (passes
            # run every 0.5 s; one that finds nothing to do logs nothing).
            seen, quiet_since = 0, time.monotonic()
            while seen == 0 or time.monotonic() - quiet_since < 3:
                count = engine.log().count("log cleaned")
                if count != seen:
                    seen, quiet_since = count, time.monotonic()
                time.sleep(0.2)
        engine.stop()
        print(json.dumps({"phase": phase, "startup_s": round(startup_s, 3), "engine_loaded_s": round(loaded_s, 3),
                          "entries_replayed": entries,
                          "batches_replayed": batches, "offsets_bytes": offsets_bytes(data_dir)}), flush=True)


if __name__ == "__main__":
    main()
