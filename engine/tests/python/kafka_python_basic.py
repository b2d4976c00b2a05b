"""kafka-python (pure Python) against a Shardline engine: admin, produce, consume.

Usage: kafka_python_basic.py BOOTSTRAP. Exits non-zero on the first failed check.
"""
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic

bootstrap = sys.argv[1]
topic = "kp-basic"
count = 200

admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20000)
admin.create_topics([NewTopic(name=topic, num_partitions=3, replication_factor=1,
                              topic_configs={"retention.ms": "3600000"})])
assert topic in admin.list_topics(), "created topic is listed"

configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
text = repr(configs)
assert "retention.ms" in text and "3600000" in text, text

producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
futures = [producer.send(topic, key=f"k{i % 7}".encode(), value=f"v{i}".encode()) for i in range(count)]
producer.flush(timeout=30)
metas = [f.get(timeout=30) for f in futures]
assert len(metas) == count

consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                         auto_offset_reset="earliest", consumer_timeout_ms=10000)
consumer.assign([TopicPartition(topic, p) for p in range(3)])
consumer.seek_to_beginning()
got = []
deadline = time.time() + 30
while len(got) < count and time.time() < deadline:
    for batch in consumer.poll(timeout_ms=500).values():
        got.extend(batch)
assert len(got) == count, f"consumed {len(got)} of {count}"
values = sorted(int(m.value[1:]) for m in got)
assert values == list(range(count)), "every value exactly once"

admin.create_partitions({topic: NewPartitions(total_count=5)})
cluster = admin.describe_cluster()
# One broker per shard (the test engine runs 2), each on its own port.
assert sorted(b["broker_id"] for b in cluster["brokers"]) == [1, 1001], cluster
assert len({b["port"] for b in cluster["brokers"]}) == 2, cluster
admin.delete_topics([topic])
deadline = time.time() + 10
while topic in admin.list_topics() and time.time() < deadline:
    time.sleep(0.1)
assert topic not in admin.list_topics(), "deleted topic is gone"
print("kafka-python: ok")
