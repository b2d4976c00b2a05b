"""kafka-python and confluent-kafka against a three-node Shardline cluster.

Usage: cluster_clients.py BOOTSTRAP (every node, comma-separated). Exits
non-zero on the first failed check. A topic replicated on all three nodes
(min.insync.replicas=2) is written by a kafka-python acks=all producer and a
confluent-kafka idempotent producer, whose requests go to whichever node leads
each partition; a kafka-python group consumer (its coordinator is the leader
of the group's __consumer_offsets partition, wherever that is) reads every
message once and commits; the commits are read back.
"""
import sys
import time

from confluent_kafka import Producer
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

bootstrap = sys.argv[1]
topic = "py-cluster"
group = "py-cluster-readers"
partitions = 3
per_client = 60

admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20000)
admin.create_topics([NewTopic(name=topic, num_partitions=partitions, replication_factor=3,
                              topic_configs={"min.insync.replicas": "2"})])
# Every shard of a node is a broker of its own (id = node + 1000 x shard):
# the test runs 3 nodes of 2 shards.
def node(broker_id):
    return broker_id % 1000

cluster = admin.describe_cluster()
assert sorted(b["broker_id"] for b in cluster["brokers"]) == [1, 2, 3, 1001, 1002, 1003], cluster
described = admin.describe_topics([topic])[0]
assert described["error_code"] == 0, described
leaders = set()
for p in described["partitions"]:
    assert sorted(map(node, p["replica_nodes"])) == [1, 2, 3], p
    assert sorted(map(node, p["isr_nodes"])) == [1, 2, 3], p
    leaders.add(node(p["leader_id"]))
assert len(leaders) > 1, f"leaders spread over nodes: {described['partitions']}"

producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
for i in range(per_client):
    producer.send(topic, partition=i % partitions, value=f"k{i}".encode())
producer.flush(timeout=30)

delivered = []
confluent = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
for i in range(per_client):
    confluent.produce(topic, value=f"c{i}".encode(), partition=i % partitions,
                      on_delivery=lambda err, msg: delivered.append(err))
assert confluent.flush(30) == 0, "confluent-kafka delivered everything"
assert delivered == [None] * per_client, delivered

consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                         auto_offset_reset="earliest", session_timeout_ms=10000, heartbeat_interval_ms=1000)
got = []
deadline = time.time() + 60
while len(got) < 2 * per_client and time.time() < deadline:
    for batch in consumer.poll(timeout_ms=500).values():
        got.extend(batch)
values = sorted(m.value.decode() for m in got)
expected = sorted([f"k{i}" for i in range(per_client)] + [f"c{i}" for i in range(per_client)])
assert values == expected, f"consumed {len(got)} of {2 * per_client}"
consumer.commit()
committed = {p: consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
assert sum(committed.values()) == 2 * per_client, committed
consumer.close()
print("ok: 3 nodes of 2 shards, leaders on nodes", sorted(leaders), ",", len(got), "messages read back once, offsets committed")
