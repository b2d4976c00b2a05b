"""kafka-python group consumer with auto-commit against a Shardline engine.

Usage: kafka_python_group.py BOOTSTRAP. Exits non-zero on the first failed check.
A consumer in a group (subscribe, auto-commit every 200 ms) reads every
message; its commits are read back through the admin client and a second
consumer of the same group finds nothing left to read.
"""
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

bootstrap = sys.argv[1]
topic = "kp-group"
group = "kp-readers"
count = 150
partitions = 3

admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20000)
admin.create_topics([NewTopic(name=topic, num_partitions=partitions, replication_factor=1)])
assert "__consumer_offsets" not in admin.list_topics(), "the internal topic is hidden"

producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
for i in range(count):
    producer.send(topic, partition=i % partitions, value=f"v{i}".encode())
producer.flush(timeout=30)

consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                         enable_auto_commit=True, auto_commit_interval_ms=200,
                         auto_offset_reset="earliest", session_timeout_ms=10000,
                         heartbeat_interval_ms=1000)
got = []
deadline = time.time() + 60
while len(got) < count and time.time() < deadline:
    for batch in consumer.poll(timeout_ms=500).values():
        got.extend(batch)
assert len(got) == count, f"consumed {len(got)} of {count}"
assert sorted(int(m.value[1:]) for m in got) == list(range(count)), "every value exactly once"
assert consumer.assignment() == {TopicPartition(topic, p) for p in range(partitions)}, consumer.assignment()

# Auto-commit catches up with what was consumed.
ends = consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
deadline = time.time() + 20
while time.time() < deadline:
    consumer.poll(timeout_ms=200)
    committed = {p: consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    if all(committed[p] == ends[TopicPartition(topic, p)] for p in range(partitions)):
        break
else:
    raise AssertionError(f"auto-commit never reached the end: {committed} vs {ends}")

groups = [g["group_id"] for g in admin.list_groups()]
assert group in groups, groups
described = admin.describe_groups([group])[group]
assert described["group_state"] == "Stable", described
assert len(described["members"]) == 1, described
consumer.close()

# Same group again: it resumes at the commits, so there is nothing to read.
again = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                      enable_auto_commit=False, auto_offset_reset="earliest",
                      session_timeout_ms=10000, heartbeat_interval_ms=1000)
leftover = []
deadline = time.time() + 8
while time.time() < deadline:
    for batch in again.poll(timeout_ms=500).values():
        leftover.extend(batch)
    if again.assignment():
        positions = {p: again.position(TopicPartition(topic, p)) for p in range(partitions)}
        if all(positions[p] == count // partitions for p in range(partitions)):
            break
assert not leftover, f"re-read {len(leftover)} committed messages"
for p in range(partitions):
    assert again.committed(TopicPartition(topic, p)) == count // partitions
again.close()

# An empty group can be deleted; then it is gone.
result = admin.delete_groups([group])
print("delete_groups:", result)
groups = [g["group_id"] for g in admin.list_groups()]
assert group not in groups, groups
print("kafka-python group: ok")
