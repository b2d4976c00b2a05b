"""Delayed delivery with kafka-python, no client change: a delay set on a
topic through AlterConfigs, and a `shardline.deliver.at` header.

Usage: delivery_kafka_python.py BOOTSTRAP. Exits non-zero on the first failed check.
"""
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import InvalidRecordError

bootstrap = sys.argv[1]
admin = KafkaAdminClient(bootstrap_servers=bootstrap)


def now_ms():
    return int(time.time() * 1000)


def consume(topic, count, timeout_s):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                             fetch_max_wait_ms=500)
    consumer.assign([TopicPartition(topic, 0)])
    got = []
    deadline = time.time() + timeout_s
    while len(got) < count and time.time() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            got.extend((r.value.decode(), r.timestamp, now_ms()) for r in records)
    consumer.close()
    assert len(got) == count, f"consumed {len(got)} of {count}: {got}"
    return got


# A topic delay set after creation (AlterConfigs), shown by DescribeConfigs.
topic, delay_ms = "kp-delayed", 3000
admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                    configs={"shardline.delivery.delay.ms": str(delay_ms)})])
described = repr(admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)]))
assert "shardline.delivery.delay.ms" in described and f"'{delay_ms}'" in described, described
# AlterConfigs answers once every shard has applied the change.
producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, retries=0)
for i in range(10):
    producer.send(topic, value=f"v{i}".encode()).get(timeout=20)
got = consume(topic, 10, 60)
assert [v for v, _, _ in got] == [f"v{i}" for i in range(10)], got
for value, timestamp_ms, received_ms in got:
    assert received_ms >= timestamp_ms + delay_ms, f"{value} at {received_ms}, due {timestamp_ms + delay_ms}"

# A header holds back its record and those after it.
topic, hold_ms = "kp-deliver-at", 3000
admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1,
                              topic_configs={"shardline.delivery.delay.max.ms": "60000"})])
at_ms = now_ms() + hold_ms
producer.send(topic, value=b"first").get(timeout=20)
producer.send(topic, value=b"held", headers=[("shardline.deliver.at", str(at_ms).encode())]).get(timeout=20)
producer.send(topic, value=b"behind").get(timeout=20)
try:
    producer.send(topic, value=b"bad", headers=[("shardline.deliver.at", b"\x00\x00\x01")]).get(timeout=20)
    raise AssertionError("a header time that is not decimal was accepted")
except InvalidRecordError:
    pass
got = consume(topic, 3, 60)
assert [v for v, _, _ in got] == ["first", "held", "behind"], got
for value, _, received_ms in got[1:]:
    assert received_ms >= at_ms, f"{value} at {received_ms}, held until {at_ms}"
producer.close()
admin.close()
print("ok")
