"""Delayed delivery with confluent-kafka (librdkafka), no client change.

Usage: delivery_confluent.py BOOTSTRAP PHASE, PHASE one of:
  topic-delay   records of a delayed topic arrive in order, none before its time
  header-delay  a `shardline.deliver.at` header holds back its record and
                those after it; bad header times are refused INVALID_RECORD
  before-restart / after-restart
                records produced before an engine restart stay pending
                through it
Exits non-zero on the first failed check.
"""
import sys
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

bootstrap, phase = sys.argv[1], sys.argv[2]
admin = AdminClient({"bootstrap.servers": bootstrap})


def now_ms():
    return int(time.time() * 1000)


def create(topic, partitions, configs):
    for future in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1,
                                                config=configs)]).values():
        future.result(timeout=20)
    described = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)])
    entries = list(described.values())[0].result(timeout=20)
    for key, value in configs.items():
        assert entries[key].value == value, (key, entries[key].value)


def produce(topic, records):
    """Each (key, value, headers) as its own batch; returns the delivery errors."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "enable.idempotence": False,
                         "retries": 0})
    errors = []
    for key, value, headers in records:
        producer.produce(topic, key=key, value=value, headers=headers,
                         on_delivery=lambda err, msg: errors.append(err))
        assert producer.flush(30) == 0
    return errors


def consume(topic, partitions, count, timeout_s):
    """(value, partition, timestamp ms, received ms) of `count` records, in arrival order."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got = []
    deadline = time.time() + timeout_s
    while len(got) < count and time.time() < deadline:
        msg = consumer.poll(0.2)
        if msg is None or msg.error():
            continue
        got.append((msg.value().decode(), msg.partition(), msg.timestamp()[1], now_ms()))
    consumer.close()
    assert len(got) == count, f"consumed {len(got)} of {count}: {got}"
    return got


def not_before(got, delay_ms):
    for value, _, timestamp_ms, received_ms in got:
        assert received_ms >= timestamp_ms + delay_ms, f"{value} at {received_ms}, due {timestamp_ms + delay_ms}"


if phase == "topic-delay":
    topic, delay_ms, count = "ck-delayed", 3000, 20
    create(topic, 2, {"shardline.delivery.delay.ms": str(delay_ms)})
    assert not [e for e in produce(topic, [(str(i % 4), f"v{i}", None) for i in range(count)]) if e]
    got = consume(topic, 2, count, 60)
    not_before(got, delay_ms)
    for partition in range(2):
        values = [int(v[1:]) for v, p, _, _ in got if p == partition]
        assert values == sorted(values), f"partition {partition} out of order: {values}"
elif phase == "header-delay":
    topic, hold_ms = "ck-deliver-at", 3000
    create(topic, 1, {"shardline.delivery.delay.max.ms": "60000"})
    at_ms = now_ms() + hold_ms
    errors = produce(topic, [
        (b"k", "first", None),
        (b"k", "held", [("shardline.deliver.at", str(at_ms).encode())]),
        (b"other", "behind", None),
        (b"k", "last", None),
    ])
    assert not [e for e in errors if e], errors
    refused = produce(topic, [
        (b"k", "too-far", [("shardline.deliver.at", str(now_ms() + 600_000).encode())]),
        (b"k", "not-a-time", [("shardline.deliver.at", b"soon")]),
    ])
    assert [e.code() if e else None for e in refused] == [KafkaError.INVALID_RECORD] * 2, refused
    got = consume(topic, 1, 4, 60)
    assert [v for v, _, _, _ in got] == ["first", "held", "behind", "last"], got
    for value, _, _, received_ms in got[1:]:
        assert received_ms >= at_ms, f"{value} at {received_ms}, held until {at_ms}"
elif phase == "before-restart":
    topic = "ck-pending"
    create(topic, 1, {"shardline.delivery.delay.ms": "20000"})
    assert not [e for e in produce(topic, [(None, f"p{i}", None) for i in range(5)]) if e]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "early", "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    early = consumer.poll(2.0)
    assert early is None or early.error(), f"read before its time: {early.value()}"
    _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    assert high == 0, f"latest offset {high} shows pending records"
    consumer.close()
elif phase == "after-restart":
    topic, delay_ms = "ck-pending", 20000
    started_ms = now_ms()
    got = consume(topic, 1, 5, 60)
    assert [v for v, _, _, _ in got] == [f"p{i}" for i in range(5)], got
    first_due_ms = min(t for _, _, t, _ in got) + delay_ms
    assert started_ms < first_due_ms, "the engine restarted after the records were due: nothing was checked"
    not_before(got, delay_ms)
else:
    sys.exit(f"unknown phase {phase}")
print(f"{phase}: ok")
