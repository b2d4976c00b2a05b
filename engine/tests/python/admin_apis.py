"""The Kafka admin APIs operators script, with kafka-python's KafkaAdminClient
and confluent-kafka's AdminClient, against a Shardline engine.

Usage: admin_apis.py BOOTSTRAP DATA_DIR before-restart|after-restart
Exits non-zero on the first failed check.

before-restart: topic configs altered incrementally (confluent-kafka) and
wholesale (kafka-python AlterConfigs), described back as dynamic topic
configs; invalid, unhonoured and broker configs refused; validate_only
changes nothing; retention.bytes lowered live frees segments without a
restart; DescribeLogDirs shows the data dir and partition sizes; records
deleted below an offset (kafka-python and confluent-kafka) are gone for a
consumer from the beginning; ElectLeaders answers ELECTION_NOT_NEEDED;
reassignments: none listed, the current assignment accepted, a move to an
unknown broker refused;
DescribeProducers shows the idempotent producer.
after-restart: the low watermarks and configs survived the restart.
"""
import sys
import time

from confluent_kafka import ElectionType as CElectionType, KafkaException, Producer, TopicPartition as CTopicPartition
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource as CResource,
                                   ConfigSource, ResourceType)
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import (ElectionNotNeededError, InvalidConfigurationError, InvalidReplicationAssignmentError,
                          KafkaError)

bootstrap, data_dir, phase = sys.argv[1], sys.argv[2], sys.argv[3]
topic = "admin-apis"
retained = "admin-retention"
records = 100


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def confluent_configs(admin, name):
    futures = admin.describe_configs([CResource(ResourceType.TOPIC, name)])
    return next(iter(futures.values())).result(timeout=20)


def first_offset(tp):
    """The offset a consumer from the beginning reads first (None if it reads nothing)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    deadline = time.time() + 20
    try:
        while time.time() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                if batch:
                    return batch[0].offset
        return None
    finally:
        consumer.close()


kp = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20000)
cf = AdminClient({"bootstrap.servers": bootstrap})
tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)

if phase == "before-restart":
    kp.create_topics([NewTopic(name=topic, num_partitions=2, replication_factor=1),
                      NewTopic(name=retained, num_partitions=1, replication_factor=1)])

    # Idempotent produce: 100 records of ~6 KiB to each partition (the engine
    # runs --segment-bytes 65536, so each partition has several segments).
    # Batches of at most 16 KiB: a batch must fit a 64 KiB segment.
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5,
                         "batch.size": 16384})
    failures = []

    def delivered(error, message):
        if error is not None:
            failures.append(error)

    for i in range(records):
        for name, p in ((topic, 0), (topic, 1), (retained, 0)):
            producer.produce(name, value=b"x" * 6000, key=str(i).encode(), partition=p, on_delivery=delivered)
    check(producer.flush(30) == 0 and not failures, f"every record delivered: {failures[:3]}")

    # IncrementalAlterConfigs (confluent-kafka), then DescribeConfigs.
    resource = CResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "86400000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("max.message.bytes", "2000000", incremental_operation=AlterConfigOpType.SET),
    ])
    next(iter(cf.incremental_alter_configs([resource]).values())).result(timeout=20)
    configs = confluent_configs(cf, topic)
    check(configs["retention.ms"].value == "86400000", configs["retention.ms"])
    check(configs["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, configs["retention.ms"])
    check(configs["segment.bytes"].source == ConfigSource.DEFAULT_CONFIG.value, configs["segment.bytes"])

    # DELETE goes back to the default.
    resource = CResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.message.bytes", None, incremental_operation=AlterConfigOpType.DELETE)])
    next(iter(cf.incremental_alter_configs([resource]).values())).result(timeout=20)
    check(confluent_configs(cf, topic)["max.message.bytes"].source == ConfigSource.DEFAULT_CONFIG.value,
          "a deleted config is back to its default")

    # Invalid and unhonoured values: INVALID_CONFIG, nothing changed.
    for key, value in [("retention.ms", "soon"), ("message.timestamp.type", "Now"),
                       ("cleanup.policy", "shred"), ("min.cleanable.dirty.ratio", "2"),
                       ("no.such.config", "1")]:
        resource = CResource(ResourceType.TOPIC, topic, incremental_configs=[
            ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)])
        try:
            next(iter(cf.incremental_alter_configs([resource]).values())).result(timeout=20)
            check(False, f"{key}={value} accepted")
        except KafkaException as e:
            check(e.args[0].code() == 40, f"{key}={value}: {e}")  # INVALID_CONFIG
    check(confluent_configs(cf, topic)["retention.ms"].value == "86400000", "refusals change nothing")

    # validate_only changes nothing.
    resource = CResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])
    next(iter(cf.incremental_alter_configs([resource], validate_only=True).values())).result(timeout=20)
    check(confluent_configs(cf, topic)["retention.ms"].value == "86400000", "validate_only changes nothing")

    # Broker configs are flags: a clear refusal.
    resource = CResource(ResourceType.BROKER, "1", incremental_configs=[
        ConfigEntry("num.partitions", "3", incremental_operation=AlterConfigOpType.SET)])
    try:
        next(iter(cf.incremental_alter_configs([resource]).values())).result(timeout=20)
        check(False, "a broker config was accepted")
    except KafkaException as e:
        check("flags" in str(e), str(e))

    # AlterConfigs (kafka-python, legacy): the named keys are the new set.
    result = kp.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                              configs={"retention.ms": "7200000"})],
                              incremental=False)
    check(result["topic"][topic] == "OK", result)
    described = repr(kp.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)]))
    check("7200000" in described, described)
    result = kp.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={"segment.bytes": "1"})],
                              incremental=False, raise_on_unknown=False)
    check("InvalidConfiguration" in str(result["topic"][topic]), result)

    # DescribeLogDirs: the data dir, every partition with its size.
    dirs = kp.describe_log_dirs()
    check(len(dirs) >= 1, dirs)
    sizes = {}
    for broker in dirs:
        for log_dir in broker["log_dirs"]:
            check(log_dir["log_dir"].rstrip("/") == data_dir.rstrip("/"), log_dir["log_dir"])
            for t in log_dir["topics"]:
                if t["name"] == topic:
                    for p in t["partitions"]:
                        sizes[p["partition_index"]] = p["partition_size"]
                        check(p["offset_lag"] == 0, p)
    check(sorted(sizes) == [0, 1] and min(sizes.values()) > records * 6000, sizes)

    # retention.bytes lowered live: segments go without a restart.
    def size_of(name):
        return sum(p["partition_size"] for b in kp.describe_log_dirs({name: [0]}) for d in b["log_dirs"]
                   for t in d["topics"] if t["name"] == name for p in t["partitions"])

    before = size_of(retained)
    check(before > records * 6000, before)
    resource = CResource(ResourceType.TOPIC, retained, incremental_configs=[
        ConfigEntry("retention.bytes", "100000", incremental_operation=AlterConfigOpType.SET)])
    next(iter(cf.incremental_alter_configs([resource]).values())).result(timeout=20)
    deadline = time.time() + 20
    while size_of(retained) >= before // 2 and time.time() < deadline:
        time.sleep(0.2)
    check(size_of(retained) < before // 2, f"retention freed {retained}: {before} -> {size_of(retained)}")
    check(first_offset(TopicPartition(retained, 0)) > 0, "retention moved the log start")

    # DeleteRecords: kafka-python on partition 0, then confluent-kafka.
    deleted = kp.delete_records({tp0: 40})
    check(deleted[tp0]["low_watermark"] == 40, deleted)
    check(first_offset(tp0) == 40, "a consumer from the beginning starts at the low watermark")
    futures = cf.delete_records([CTopicPartition(topic, 0, 55)])
    check(next(iter(futures.values())).result(timeout=20).low_watermark == 55, "confluent delete_records")
    try:
        kp.delete_records({tp0: 10_000})
        check(False, "deleting past the high watermark was accepted")
    except KafkaError as e:
        check("OffsetOutOfRange" in type(e).__name__, repr(e))

    # ElectLeaders: the preferred replica leads already.
    try:
        kp.elect_leaders(0, {topic: [0]})
    except ElectionNotNeededError:
        pass
    result = cf.elect_leaders(CElectionType.PREFERRED, [CTopicPartition(topic, 0)]).result(timeout=20)
    error = result[CTopicPartition(topic, 0)]
    check(error is not None and error.code() == 84, f"ELECTION_NOT_NEEDED: {error}")

    # Reassignments: none in progress; the current assignment is accepted;
    # a move elsewhere is refused saying why.
    check(kp.list_partition_reassignments() == {}, "no reassignment in progress")
    leader = kp.describe_topics([topic])[0]["partitions"][0]["replica_nodes"]
    check(kp.alter_partition_reassignments({tp0: leader})[tp0] is None, "the current replicas are accepted")
    refused = kp.alter_partition_reassignments({tp0: [leader[0] + 7]})[tp0]
    check(refused is InvalidReplicationAssignmentError, refused)

    # DescribeProducers: the idempotent producer, with its last sequence.
    states = kp.describe_producers([tp0])
    producers = states[tp0].active_producers
    check(len(producers) == 1, producers)
    check(producers[0].producer_id >= 0 and producers[0].last_sequence == records - 1, producers)
    print("admin APIs before restart: ok")
elif phase == "after-restart":
    check(first_offset(tp0) == 55, "the low watermark survives a restart")
    earliest = KafkaConsumer(bootstrap_servers=bootstrap).beginning_offsets([tp0])
    check(earliest[tp0] == 55, earliest)
    configs = confluent_configs(cf, topic)
    check(configs["retention.ms"].value == "7200000", configs["retention.ms"])
    check(confluent_configs(cf, retained)["retention.bytes"].value == "100000", "retention.bytes kept")
    print("admin APIs after restart: ok")
else:
    raise SystemExit(f"unknown phase {phase}")
