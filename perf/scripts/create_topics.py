"""Idle topics for perf-idle.

    create_topics.py BOOTSTRAP TOPICS PARTITIONS_PER_TOPIC          create idle-000 ... (kafka-python admin)
    create_topics.py BOOTSTRAP TOPICS PARTITIONS_PER_TOPIC touch    then one 1 KiB message to each partition

Creating: one CreateTopics request per topic (replication factor 1), then checks that every topic
is described with its partition count. Touching: one record per partition with acks=all, flushed.
Prints one line (what was done, seconds taken); exits non-zero if a topic or a send is missing.
"""
import sys
import time

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic

bootstrap, topics, per_topic = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
touch = len(sys.argv) > 4 and sys.argv[4] == "touch"
names = [f"idle-{i:03d}" for i in range(topics)]
started = time.monotonic()

if not touch:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=60000)
    for name in names:
        admin.create_topics([NewTopic(name=name, num_partitions=per_topic, replication_factor=1)])
    described = admin.describe_topics(names)
    partitions = sum(len(t["partitions"]) for t in described if t.get("error_code", 0) == 0)
    admin.close()
    print(f"created {len(names)} topics, {partitions} partitions in {time.monotonic() - started:.1f} s")
    sys.exit(0 if partitions == topics * per_topic else 1)

producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, request_timeout_ms=30000)
value = b"x" * 1024
futures = [producer.send(name, value=value, partition=p) for name in names for p in range(per_topic)]
producer.flush(timeout=60)
sent = sum(1 for f in futures if f.succeeded())
producer.close()
print(f"wrote one 1 KiB record to each of {sent} partitions in {time.monotonic() - started:.1f} s")
sys.exit(0 if sent == topics * per_topic else 1)
