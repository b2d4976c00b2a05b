"""confluent-kafka (bundled librdkafka 2.16) against a Shardline engine.

Usage: confluent_basic.py BOOTSTRAP. Exits non-zero on the first failed check.
"""
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap = sys.argv[1]
topic = "ck-basic"
count = 500

admin = AdminClient({"bootstrap.servers": bootstrap})
for future in admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)]).values():
    future.result(timeout=20)

errors = []
producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                     "compression.type": "zstd", "linger.ms": 5})
for i in range(count):
    producer.produce(topic, key=str(i % 5), value=f"value-{i}",
                     on_delivery=lambda err, msg: errors.append(err) if err else None)
    producer.poll(0)
assert producer.flush(30) == 0, "everything delivered"
assert not errors, errors

consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False,
                     "auto.offset.reset": "earliest"})
consumer.assign([TopicPartition(topic, p, 0) for p in range(2)])
got = []
deadline = time.time() + 30
while len(got) < count and time.time() < deadline:
    msg = consumer.poll(0.5)
    if msg is None or msg.error():
        continue
    got.append(msg.value().decode())
assert len(got) == count, f"consumed {len(got)} of {count}"
assert sorted(got) == sorted(f"value-{i}" for i in range(count))
low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
assert low == 0 and high > 0, (low, high)
consumer.close()

# A group consumer (subscribe) with the cooperative-sticky assignor: reads
# everything, commits synchronously, and the commits read back.
grouped = Consumer({"bootstrap.servers": bootstrap, "group.id": "ck-readers", "enable.auto.commit": False,
                    "auto.offset.reset": "earliest", "partition.assignment.strategy": "cooperative-sticky",
                    "session.timeout.ms": 10000})
grouped.subscribe([topic])
got = []
deadline = time.time() + 60
while len(got) < count and time.time() < deadline:
    msg = grouped.poll(0.5)
    if msg is None or msg.error():
        continue
    got.append(msg)
assert len(got) == count, f"group consumer read {len(got)} of {count}"
assert sorted(p.partition for p in grouped.assignment()) == [0, 1], grouped.assignment()
grouped.commit(asynchronous=False)
committed = grouped.committed([TopicPartition(topic, p) for p in range(2)], timeout=10)
ends = [grouped.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(2)]
assert [c.offset for c in committed] == ends, (committed, ends)
grouped.close()
print("confluent-kafka: ok")
