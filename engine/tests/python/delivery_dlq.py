"""Dead-letter delivery with unmodified clients: a consumer that crashes
(closes without committing) on a poison record `shardline.dlq.max.deliveries`
times; the record lands in `<topic>.dlq` with the reason headers and the
group goes on past it.

Usage: delivery_dlq.py BOOTSTRAP CLIENT, CLIENT `confluent` or `kafka-python`.
Exits non-zero on the first failed check.
"""
import sys
import time

bootstrap, client = sys.argv[1], sys.argv[2]
MAX_DELIVERIES = 3
VALUES = ["r0", "r1", "r2", "poison", "r4", "r5", "r6"]
GOOD = [v for v in VALUES if v != "poison"]


class Confluent:
    def __init__(self):
        from confluent_kafka import Producer
        from confluent_kafka.admin import AdminClient, NewTopic
        self.topic, self.group = "ck-poison", "ck-poison-group"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics([NewTopic(self.topic, num_partitions=1, replication_factor=1,
                                                    config={"shardline.dlq.max.deliveries": str(MAX_DELIVERIES)})]).values():
            future.result(timeout=20)
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        for value in VALUES:
            producer.produce(self.topic, value=value)
            assert producer.flush(30) == 0

    def attempt(self, processed):
        """One consumer's life: commits each good record, crashes on the poison one. True if it crashed."""
        from confluent_kafka import Consumer
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": self.group, "enable.auto.commit": False,
                             "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
        consumer.subscribe([self.topic])
        deadline = time.time() + 40
        try:
            while time.time() < deadline and processed != GOOD:
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                if msg.value() == b"poison":
                    return True
                processed.append(msg.value().decode())
                consumer.commit(message=msg, asynchronous=False)
            return False
        finally:
            consumer.close()

    def dead_letters(self):
        from confluent_kafka import Consumer, TopicPartition
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "dlq-reader", "enable.auto.commit": False})
        consumer.assign([TopicPartition(self.topic + ".dlq", 0, 0)])
        got = []
        deadline = time.time() + 20
        while time.time() < deadline and not got:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                got.append((msg.value(), dict(msg.headers() or [])))
        consumer.close()
        return got


class KafkaPython:
    def __init__(self):
        from kafka import KafkaProducer
        from kafka.admin import KafkaAdminClient, NewTopic
        self.topic, self.group = "kp-poison", "kp-poison-group"
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic(self.topic, num_partitions=1, replication_factor=1,
                                      topic_configs={"shardline.dlq.max.deliveries": str(MAX_DELIVERIES)})])
        admin.close()
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        for value in VALUES:
            producer.send(self.topic, value=value.encode()).get(timeout=20)
        producer.close()

    def attempt(self, processed):
        from kafka import KafkaConsumer, TopicPartition
        from kafka.structs import OffsetAndMetadata
        consumer = KafkaConsumer(self.topic, bootstrap_servers=bootstrap, group_id=self.group,
                                 enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=1,
                                 session_timeout_ms=6000, heartbeat_interval_ms=1000)
        deadline = time.time() + 40
        try:
            while time.time() < deadline and processed != GOOD:
                for tp, records in consumer.poll(timeout_ms=500).items():
                    for record in records:
                        if record.value == b"poison":
                            return True
                        processed.append(record.value.decode())
                        consumer.commit({tp: OffsetAndMetadata(record.offset + 1, None, -1)})
            return False
        finally:
            consumer.close(autocommit=False)

    def dead_letters(self):
        from kafka import KafkaConsumer, TopicPartition
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
        consumer.assign([TopicPartition(self.topic + ".dlq", 0)])
        got = []
        deadline = time.time() + 20
        while time.time() < deadline and not got:
            for records in consumer.poll(timeout_ms=500).values():
                got.extend((r.value, dict(r.headers)) for r in records)
        consumer.close()
        return got


side = Confluent() if client == "confluent" else KafkaPython()
processed, crashes = [], 0
for _ in range(MAX_DELIVERIES + 2):
    if not side.attempt(processed):
        break
    crashes += 1
assert crashes == MAX_DELIVERIES, f"crashed {crashes} times on the poison record, expected {MAX_DELIVERIES}"
assert processed == GOOD, f"the group processed {processed}"
got = side.dead_letters()
assert len(got) == 1, got
value, headers = got[0]
assert value == b"poison", got
assert headers.get("shardline.dlq.source") == f"{side.topic}/0/3".encode(), headers
assert b"without a commit" in headers.get("shardline.dlq.reason", b""), headers
assert headers.get("shardline.dlq.group") == side.group.encode(), headers
print(f"{client}: ok")
