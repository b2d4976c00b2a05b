#!/usr/bin/env python3
"""Open-loop publish latency as an unmodified librdkafka client sees it (confluent-kafka).

What users see: the stock client, its own batching and its own threads, against a broker's default
configuration. Message n (1 partition) is meant to be sent at start + n / rate. The script calls
produce() at that intended time (at once if it is late, keeping the intended time), and between sends
it waits in producer.poll(timeout until the next send), so delivery callbacks run as soon as
librdkafka has the acknowledgement. Latency = the callback's time - the intended send time, so a
stall of the broker or of the client cannot hide (coordinated omission). Messages due in the warm-up
are sent but not recorded. Percentiles are exact: the nearest-rank value of the sorted samples (what
HdrHistogram's value_at_quantile approximates).

Prints bench's progress lines ("[   3.0s] measuring | ...") on stderr, which the perf harness's CPU
sampler reads, a table on stdout, and with --json the subset of `bench --json` (schema 1) that the
harness reads (publish latency is latency_ms.publish). Exits 1, writing no JSON, if a message failed
or was not acknowledged within the drain bound.

Bounds: rate x (warmup + duration) messages; topic set-up 10 s; sending stops 10 s after the last
intended send time; the drain ends 10 s after the last send.
"""

import argparse
import functools
import json
import math
import os
import socket
import sys
import time

import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic

# After the last intended send time, acknowledgements are awaited this long at most.
DRAIN_S_MAX = 10.0
# Topic creation and leader election are awaited this long at most.
SETUP_S_MAX = 10.0
# The schedule starts this long after set-up, so the first sends are not late by construction.
START_DELAY_S = 0.05
# Highest rate accepted: far above what one Python thread can produce.
RATE_MAX = 1_000_000
# Largest message accepted (librdkafka's default message.max.bytes is 1,000,000).
MESSAGE_BYTES_MAX = 900_000
QUANTILES = [("p50_ms", 0.5), ("p90_ms", 0.9), ("p99_ms", 0.99), ("p99_9_ms", 0.999), ("p99_99_ms", 0.9999)]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", default="127.0.0.1:9092", help="bootstrap servers")
    parser.add_argument("--topic", default="users")
    parser.add_argument("--rate", type=int, default=5000, help="messages/s, open loop")
    parser.add_argument("--message-size", type=int, default=1024, help="value bytes")
    parser.add_argument("--linger-ms", type=float, default=1.0)
    parser.add_argument("--acks", default="all")
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--json", help="write the result here")
    parser.add_argument("--broker-version", help="recorded as given")
    parser.add_argument("--shards", type=int, help="recorded as given")
    parser.add_argument("--fsync", help="recorded as given")
    args = parser.parse_args()
    if not 1 <= args.rate <= RATE_MAX:
        parser.error(f"--rate {args.rate}: use 1 to {RATE_MAX}")
    if not 1 <= args.message_size <= MESSAGE_BYTES_MAX:
        parser.error(f"--message-size {args.message_size}: use 1 to {MESSAGE_BYTES_MAX}")
    if not (0 <= args.warmup_s <= 3600 and 0 < args.duration_s <= 3600):
        parser.error("--warmup-s 0..3600, --duration-s above 0 and at most 3600")
    return args


def client_version():
    """"confluent-kafka X, librdkafka Y" (version() is a string in some releases, a tuple in others)."""
    version = confluent_kafka.version()
    version = version[0] if isinstance(version, tuple) else version
    return f"confluent-kafka {version}, librdkafka {confluent_kafka.libversion()[0]}"


def host():
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "hostname": socket.gethostname(),
        "kernel": os.uname().release,
        "cores": os.cpu_count(),
        "cpu_model": model,
    }


def ensure_topic(brokers, topic):
    """Creates the 1-partition topic if it is missing and waits until partition 0 has a leader."""
    admin = AdminClient({"bootstrap.servers": brokers})
    deadline = time.monotonic() + SETUP_S_MAX
    metadata = admin.list_topics(timeout=SETUP_S_MAX)
    created = False
    if topic not in metadata.topics or metadata.topics[topic].error is not None:
        futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        futures[topic].result(timeout=SETUP_S_MAX)
        created = True
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"topic {topic}: partition 0 has no leader after {SETUP_S_MAX} s")
        partitions = admin.list_topics(topic, timeout=remaining).topics[topic].partitions
        if 0 in partitions and partitions[0].leader >= 0:
            if len(partitions) != 1:
                raise RuntimeError(f"topic {topic} has {len(partitions)} partitions; this measures 1")
            return created
        time.sleep(0.1)


def percentiles(samples_ns):
    """{count, min_ms, mean_ms, p50_ms, ..., max_ms}: nearest-rank percentiles of the samples."""
    keys = ["min_ms", "mean_ms"] + [key for key, _ in QUANTILES] + ["max_ms"]
    if not samples_ns:
        return dict({"count": 0}, **{key: None for key in keys})
    ordered = sorted(samples_ns)
    count = len(ordered)

    def at(quantile):
        rank = min(count, max(1, math.ceil(quantile * count)))
        return ordered[rank - 1] / 1e6

    result = {"count": count, "min_ms": ordered[0] / 1e6, "mean_ms": sum(ordered) / count / 1e6}
    result.update({key: at(quantile) for key, quantile in QUANTILES})
    result["max_ms"] = ordered[-1] / 1e6
    return result


class Run:
    """The schedule and what came back."""

    def __init__(self, args):
        self.args = args
        self.interval_ns = 1e9 / args.rate
        self.warmup_ns = int(args.warmup_s * 1e9)
        self.window_end_ns = self.warmup_ns + int(args.duration_s * 1e9)
        self.total = int(args.rate * (args.warmup_s + args.duration_s))
        self.start_ns = 0
        self.samples_ns = []
        self.delivered = 0
        self.delivered_in_window = 0
        self.failed = 0
        self.first_error = None

    def on_delivery(self, offset_ns, err, _msg):
        """Delivery callback, bound to the message's intended time (ns after the schedule's start)."""
        now = time.perf_counter_ns()
        if err is not None:
            self.failed += 1
            self.first_error = self.first_error or str(err)
            return
        self.delivered += 1
        if self.warmup_ns <= offset_ns < self.window_end_ns:
            self.delivered_in_window += 1
            self.samples_ns.append(now - (self.start_ns + offset_ns))


class Progress:
    """bench's progress line, once a second: "[   3.0s] measuring | produce 5000 msg/s | ..."."""

    def __init__(self, run):
        self.run = run
        self.next_ns = run.start_ns + 1_000_000_000
        self.last = (0, 0)

    def tick(self, now_ns, sent):
        if now_ns < self.next_ns:
            return
        run = self.run
        elapsed_ns = now_ns - run.start_ns
        if elapsed_ns < run.warmup_ns:
            phase = "warm-up"
        elif elapsed_ns < run.window_end_ns:
            phase = "measuring"
        else:
            phase = "draining"
        print(
            f"[{elapsed_ns / 1e9:6.1f}s] {phase:<9} | produce {sent - self.last[0]:8d} msg/s | delivered "
            f"{run.delivered - self.last[1]:8d} msg/s",
            file=sys.stderr,
            flush=True,
        )
        self.last = (sent, run.delivered)
        self.next_ns += 1_000_000_000


def produce_all(run, producer, topic):
    """The open-loop send loop; serves callbacks while it waits for the next intended time. Returns
    (messages never handed to librdkafka, messages still unacknowledged after the drain)."""
    value = bytes(run.args.message_size)
    run.start_ns = time.perf_counter_ns() + int(START_DELAY_S * 1e9)
    # A client that falls this far behind (librdkafka's queue full for good) stops sending.
    give_up_ns = run.start_ns + run.window_end_ns + int(DRAIN_S_MAX * 1e9)
    progress = Progress(run)
    sequence = 0
    while sequence < run.total:
        offset_ns = int(sequence * run.interval_ns)
        now = time.perf_counter_ns()
        if now >= give_up_ns:
            break
        progress.tick(now, sequence)
        due_ns = run.start_ns + offset_ns
        if now < due_ns:
            producer.poll((min(due_ns, progress.next_ns) - now) / 1e9)
            continue
        try:
            producer.produce(
                topic, value=value, partition=0, on_delivery=functools.partial(run.on_delivery, offset_ns)
            )
        except BufferError:
            # librdkafka's local queue is full: serve callbacks briefly and retry, keeping the time.
            producer.poll(0.001)
            continue
        producer.poll(0)
        sequence += 1
    # Drain, bounded, still printing progress so the sampler sees the phase change.
    drain_end_ns = time.perf_counter_ns() + int(DRAIN_S_MAX * 1e9)
    while len(producer) > 0 and time.perf_counter_ns() < drain_end_ns:
        producer.poll(0.1)
        progress.tick(time.perf_counter_ns(), sequence)
    return run.total - sequence, len(producer)


def result_json(args, run, created, started_unix_ms, elapsed_s, not_sent, pending):
    return {
        "schema": 1,
        "tool": "librdkafka_latency.py",
        "tool_version": client_version(),
        "started_at_unix_ms": started_unix_ms,
        "host": host(),
        "broker": {
            "bootstrap": args.brokers,
            "version": args.broker_version,
            "shards": args.shards,
            "fsync": args.fsync,
        },
        "flags": {
            "brokers": args.brokers,
            "topic": args.topic,
            "rate": args.rate,
            "message_size": args.message_size,
            "linger_ms": args.linger_ms,
            "acks": args.acks,
            "warmup_s": args.warmup_s,
            "duration_s": args.duration_s,
        },
        "workload": "produce",
        "topic": {"name": args.topic, "partitions": 1, "created": created},
        "window": {"warmup_s": args.warmup_s, "measured_s": args.duration_s, "elapsed_s": elapsed_s},
        "produce": {
            "messages_sent": run.total,
            "messages_acknowledged": run.delivered,
            "messages_acknowledged_in_window": run.delivered_in_window,
            "bytes_acknowledged_in_window": run.delivered_in_window * args.message_size,
            "messages_per_s": run.delivered_in_window / args.duration_s,
            "mb_per_s": run.delivered_in_window * args.message_size / args.duration_s / 1e6,
            "requests": None,
            "messages_not_sent": not_sent,
            "messages_unacknowledged": pending,
            "messages_failed": run.failed,
        },
        "consume": None,
        "latency_ms": {"publish": percentiles(run.samples_ns), "end_to_end": None, "send_delay": None},
        "fsync_probe": None,
    }


def main():
    args = parse_args()
    started_unix_ms = int(time.time() * 1000)
    created = ensure_topic(args.brokers, args.topic)
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": args.brokers, "acks": args.acks, "linger.ms": args.linger_ms}
    )
    # Connect to the partition's leader before the schedule starts.
    producer.list_topics(args.topic, timeout=SETUP_S_MAX)
    run = Run(args)
    started = time.monotonic()
    not_sent, pending = produce_all(run, producer, args.topic)
    elapsed_s = time.monotonic() - started
    summary = percentiles(run.samples_ns)
    print(
        f"{client_version()} -> {args.brokers} topic {args.topic}: {args.rate} msg/s, "
        f"{args.message_size} B, acks {args.acks}, linger {args.linger_ms} ms; measured {args.duration_s} s after "
        f"{args.warmup_s} s warm-up"
    )
    print("           count      p50      p90      p99    p99.9   p99.99      max   (latency ms)")
    if summary["count"]:
        print(
            f"publish {summary['count']:8d} "
            + " ".join(f"{summary[key]:8.3f}" for key in ["p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "p99_99_ms"])
            + f" {summary['max_ms']:8.3f}"
        )
    print(
        f"delivered {run.delivered} of {run.total}; failed {run.failed}; not sent {not_sent}; "
        f"unacknowledged {pending}"
    )
    if run.failed or not_sent or pending:
        print(
            f"librdkafka_latency: error: {run.failed} failed (first: {run.first_error}), {not_sent} not sent, "
            f"{pending} unacknowledged",
            file=sys.stderr,
        )
        return 1
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(result_json(args, run, created, started_unix_ms, elapsed_s, not_sent, pending), out, indent=2)
            out.write("\n")
        print(f"librdkafka_latency: wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (confluent_kafka.KafkaException, RuntimeError) as error:
        print(f"librdkafka_latency: error: {error}", file=sys.stderr)
        sys.exit(1)
