"""Consumers of many partitions with incremental fetch sessions (KIP-227).

kafka-python opens a fetch session and then sends incremental fetches;
confluent-kafka (librdkafka) never asks for one and fetches in full. Both
must read every record of every partition exactly once, in order, while
records keep arriving. The caller checks on /metrics that incremental
fetches were served.

Usage: fetch_sessions.py BOOTSTRAP. Exits non-zero on the first failed check.
"""
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition as CkPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaConsumer, TopicPartition

bootstrap = sys.argv[1]
topic = "fetch-sessions"
partitions = 24
rounds = 3
per_round = 240

admin = AdminClient({"bootstrap.servers": bootstrap})
for future in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
    future.result(timeout=20)

errors = []
producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})


def produce(round_no):
    # Round r writes to a third of the partitions only, so most partitions
    # have nothing new in most fetches: the incremental answers leave them out.
    for i in range(per_round):
        partition = (i % (partitions // rounds)) * rounds + round_no
        producer.produce(topic, partition=partition, value=f"{round_no}-{i}",
                         on_delivery=lambda err, msg: errors.append(err) if err else None)
    assert producer.flush(30) == 0, "everything delivered"
    assert not errors, errors


def check(name, got):
    expected = sorted(f"{r}-{i}" for r in range(rounds) for i in range(per_round))
    values = sorted(v for (_, _, v) in got)
    assert values == expected, f"{name}: {len(values)} records, expected {len(expected)}"
    last = {}
    for (p, offset, _) in got:
        assert last.get(p, -1) + 1 == offset, f"{name}: partition {p} offset {offset} after {last.get(p)}"
        last[p] = offset


kp = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                   fetch_max_wait_ms=100, enable_incremental_fetch_sessions=True)
kp.assign([TopicPartition(topic, p) for p in range(partitions)])
ck = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False,
               "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100})
ck.assign([CkPartition(topic, p, 0) for p in range(partitions)])

got_kp, got_ck = [], []
for round_no in range(rounds):
    produce(round_no)
    want = per_round * (round_no + 1)
    deadline = time.time() + 30
    while (len(got_kp) < want or len(got_ck) < want) and time.time() < deadline:
        for records in kp.poll(timeout_ms=50).values():
            got_kp.extend((r.partition, r.offset, r.value.decode()) for r in records)
        for msg in ck.consume(num_messages=1000, timeout=0.05):
            if not msg.error():
                got_ck.append((msg.partition(), msg.offset(), msg.value().decode()))
    assert len(got_kp) == want, f"kafka-python: {len(got_kp)} of {want} after round {round_no}"
    assert len(got_ck) == want, f"confluent-kafka: {len(got_ck)} of {want} after round {round_no}"

# Nothing more arrives, whoever asks.
for records in kp.poll(timeout_ms=500).values():
    got_kp.extend((r.partition, r.offset, r.value.decode()) for r in records)
check("kafka-python", got_kp)
check("confluent-kafka", got_ck)
kp.close()
ck.close()
print("ok")
