"""Transactions with confluent-kafka (librdkafka 2.16) against a real engine.

Usage: confluent_transactions.py <bootstrap>. Exits non-zero (with a
traceback) on any failure; every wait is bounded.
"""

import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BOOTSTRAP = sys.argv[1]
TIMEOUT_S = 30


def create_topics(*names):
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    futures = admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1) for name in names])
    for future in futures.values():
        future.result(timeout=TIMEOUT_S)


def producer(transactional_id):
    p = Producer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "transactional.id": transactional_id,
            "transaction.timeout.ms": 60000,
            "linger.ms": 5,
        }
    )
    p.init_transactions(TIMEOUT_S)
    return p


def transaction(p, topic, values, commit):
    p.begin_transaction()
    for i, value in enumerate(values):
        p.produce(topic, value=value.encode(), partition=i % 2)
    if commit:
        p.commit_transaction(TIMEOUT_S)
    else:
        p.flush(TIMEOUT_S)  # stored first: an abort drops records not yet sent
        p.abort_transaction(TIMEOUT_S)


def read(topic, isolation, expected):
    """Values of `topic` read from the start until `expected` arrived, then 0.5 s more."""
    c = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": "py-txn-readers",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    c.assign([TopicPartition(topic, p, 0) for p in range(2)])
    values = []
    deadline = time.monotonic() + TIMEOUT_S
    settle = None
    while True:
        assert time.monotonic() < deadline, f"read {values} before the timeout"
        if settle is None and len(values) >= expected:
            settle = time.monotonic() + 0.5
        if settle is not None and time.monotonic() >= settle:
            break
        message = c.poll(0.1)
        if message is None:
            continue
        assert message.error() is None, message.error()
        values.append(message.value().decode())
    c.close()
    return sorted(values)


def commit_and_abort():
    p = producer("py-basic")
    transaction(p, "py-txn", ["c1", "c2", "c3"], True)
    transaction(p, "py-txn", ["a1", "a2", "a3"], False)
    transaction(p, "py-txn", ["c4"], True)
    assert read("py-txn", "read_committed", 4) == ["c1", "c2", "c3", "c4"]
    assert len(read("py-txn", "read_uncommitted", 7)) == 7


def fencing():
    zombie = producer("py-shared")
    zombie.begin_transaction()
    zombie.produce("py-fence", value=b"zombie", partition=0)
    zombie.flush(TIMEOUT_S)
    successor = producer("py-shared")
    try:
        zombie.commit_transaction(TIMEOUT_S)
    except KafkaException as e:
        assert e.args[0].fatal(), e
    else:
        raise AssertionError("the zombie committed")
    transaction(successor, "py-fence", ["successor"], True)
    assert read("py-fence", "read_committed", 1) == ["successor"]


def consume_transform_produce():
    feeder = producer("py-feeder")
    transaction(feeder, "py-in", [f"in-{i}" for i in range(6)], True)
    c = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": "py-ctp",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    c.subscribe(["py-in"])
    p = producer("py-processor")
    seen = []
    deadline = time.monotonic() + TIMEOUT_S
    while len(seen) < 6:
        assert time.monotonic() < deadline, f"consumed {seen}"
        message = c.poll(0.1)
        if message is None or message.error() is not None:
            continue
        seen.append(message)
    p.begin_transaction()
    for message in seen:
        p.produce("py-out", value=b"out-" + message.value(), partition=message.partition())
    positions = c.position(c.assignment())
    p.send_offsets_to_transaction(positions, c.consumer_group_metadata(), TIMEOUT_S)
    p.commit_transaction(TIMEOUT_S)
    assert read("py-out", "read_committed", 6) == sorted(f"out-in-{i}" for i in range(6))
    # The positions sent with the transaction are now the group's (each
    # past its partition's 3 records, and past the marker if it was read).
    committed = c.committed([TopicPartition("py-in", 0), TopicPartition("py-in", 1)], timeout=TIMEOUT_S)
    wanted = {(tp.partition, tp.offset) for tp in positions}
    assert {(tp.partition, tp.offset) for tp in committed} == wanted, (committed, positions)
    assert all(tp.offset >= 3 for tp in committed), committed
    c.close()


create_topics("py-txn", "py-fence", "py-in", "py-out")
commit_and_abort()
fencing()
consume_transform_produce()
print("ok")
