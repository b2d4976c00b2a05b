"""Transactions with kafka-python against a real engine.

Usage: kafka_python_transactions.py <bootstrap>. Exits non-zero (with a
traceback) on any failure; every wait is bounded.
"""

import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

BOOTSTRAP = sys.argv[1]
TOPIC = "kp-txn"

admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
admin.create_topics([NewTopic(TOPIC, num_partitions=2, replication_factor=1)])
admin.close()

producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, transactional_id="kp-producer")
producer.init_transactions()
producer.begin_transaction()
for i in range(4):
    producer.send(TOPIC, value=f"committed-{i}".encode(), partition=i % 2)
producer.commit_transaction()
producer.begin_transaction()
for i in range(4):
    producer.send(TOPIC, value=f"aborted-{i}".encode(), partition=i % 2)
producer.flush()
producer.abort_transaction()
producer.begin_transaction()
producer.send(TOPIC, value=b"committed-4", partition=0)
producer.commit_transaction()
producer.close()


def read(isolation, expected):
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, isolation_level=isolation, enable_auto_commit=False)
    consumer.assign([TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)])
    consumer.seek_to_beginning()
    values = []
    deadline = time.monotonic() + 30
    settle = None
    while True:
        assert time.monotonic() < deadline, f"read {values} before the timeout"
        if settle is None and len(values) >= expected:
            settle = time.monotonic() + 0.5
        if settle is not None and time.monotonic() >= settle:
            break
        for records in consumer.poll(timeout_ms=100).values():
            values.extend(r.value.decode() for r in records)
    consumer.close()
    return sorted(values)


assert read("read_committed", 5) == [f"committed-{i}" for i in range(5)]
assert len(read("read_uncommitted", 9)) == 9
print("kafka-python transactions: ok")
