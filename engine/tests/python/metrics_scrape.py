"""Scrapes a Shardline engine's /metrics with prometheus_client's parsers
during a kafka-python produce / consume / group workload, and checks that
the values agree with what the clients did.

Usage: metrics_scrape.py BOOTSTRAP HTTP_ADDR SHARDS. Exits non-zero on the
first failed check, printing the scrape it failed on.

- N messages of V bytes are produced one per batch (each send waited for),
  so the RecordBatch v2 bytes the producer sent are known exactly; the
  produced-records and produced-bytes counters, the partitions' log end
  offsets, high watermarks and sizes on disk must match them.
- A consumer in a group reads all of them and commits: the group's
  committed offsets add up to N and its lag is 0 on every partition; after
  M more messages its lag adds up to M.
- Fetch and OffsetCommit were counted; every shard answered and has its
  shard label on the per-shard families; the Kafka bytes received cover
  what was produced.
- The same scrape parses as OpenMetrics (the strict parser) when asked for.
"""
import sys
import time
import urllib.request

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

bootstrap, http_addr, shards = sys.argv[1], sys.argv[2], int(sys.argv[3])
topic = "metrics-scrape"
group = "metrics-readers"
partitions = 2
count = 40  # N
more = 7  # M
value_bytes = 100  # V


def scrape(openmetrics=False):
    request = urllib.request.Request(f"http://{http_addr}/metrics")
    if openmetrics:
        request.add_header("Accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
    with urllib.request.urlopen(request, timeout=20) as response:
        text = response.read().decode()
        content_type = response.headers["Content-Type"]
    parse = parse_openmetrics if openmetrics else parse_prometheus
    samples = [sample for family in parse(text) for sample in family.samples]
    return text, content_type, samples


def values(samples, name, **labels):
    """Every sample named `name` whose labels include `labels`."""
    return [s for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def total(samples, name, **labels):
    return sum(s.value for s in values(samples, name, **labels))


def check(condition, message, text):
    if not condition:
        print(text)
        raise AssertionError(message)


def varint_bytes(value):
    """Bytes of a zigzag varint (Kafka record fields)."""
    zigzag = (value << 1) ^ (value >> 63)
    length = 1
    while zigzag >= 0x80:
        zigzag >>= 7
        length += 1
    return length


def single_record_batch_bytes(value_length):
    """A RecordBatch v2 holding one record with a null key, no headers and
    the batch's own timestamp and offset: the 61-byte batch header, then the
    record's length and body (attributes, timestamp delta, offset delta, key
    length -1, value length and value, header count)."""
    body = 1 + varint_bytes(0) + varint_bytes(0) + varint_bytes(-1) + varint_bytes(value_length) + value_length + varint_bytes(0)
    return 61 + varint_bytes(body) + body


admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=20000)
admin.create_topics([NewTopic(name=topic, num_partitions=partitions, replication_factor=1)])

text, content_type, samples = scrape()
check(content_type.startswith("text/plain; version=0.0.4"), content_type, text)
for shard in range(shards):
    check(values(samples, "shardline_shard_up", shard=str(shard))[0].value == 1, f"shard {shard} up", text)
before_received = total(samples, "shardline_network_received_bytes_total")

producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0, compression_type=None)
for i in range(count):
    # One record per batch: each send is waited for before the next.
    producer.send(topic, partition=i % partitions, value=bytes([65 + i % 26]) * value_bytes).get(timeout=30)
sent_bytes = count * single_record_batch_bytes(value_bytes)

text, _, samples = scrape()
check(total(samples, "shardline_produced_records_total") == count, f"produced records = {count}", text)
check(total(samples, "shardline_produced_bytes_total") == sent_bytes, f"produced bytes = {sent_bytes}", text)
for p in range(partitions):
    end = values(samples, "shardline_partition_log_end_offset", topic=topic, partition=str(p))
    check(len(end) == 1 and end[0].value == count // partitions, f"partition {p} ends at {count // partitions}", text)
    hw = values(samples, "shardline_partition_high_watermark", topic=topic, partition=str(p))
    check(hw[0].value == count // partitions, f"partition {p} high watermark", text)
    check(values(samples, "shardline_partition_log_start_offset", topic=topic, partition=str(p))[0].value == 0,
          "log start 0", text)
    check(values(samples, "shardline_partition_under_replicated", topic=topic, partition=str(p))[0].value == 0,
          "a one-replica partition is fully replicated", text)
check(total(samples, "shardline_partition_size_bytes", topic=topic) == sent_bytes,
      "the batches are stored as sent", text)
check(total(samples, "shardline_network_received_bytes_total") - before_received > sent_bytes,
      "the produce requests' bytes were received", text)
check(total(samples, "shardline_requests_total", api="Produce") >= count, "Produce requests counted", text)
check(values(samples, "shardline_request_latency_seconds_count", api="Produce"), "produce latency", text)
# Partitions are spread over the shards: with own shard ports, each shard
# served its own partitions' produce requests.
shards_with_partitions = {s.labels["shard"] for s in values(samples, "shardline_partition_log_end_offset", topic=topic)}
check(len(shards_with_partitions) == min(shards, partitions), f"partitions on {shards_with_partitions}", text)

consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                         auto_offset_reset="earliest", session_timeout_ms=10000, heartbeat_interval_ms=1000)
got = 0
deadline = time.time() + 60
while got < count and time.time() < deadline:
    for batch in consumer.poll(timeout_ms=500).values():
        got += len(batch)
check(got == count, f"consumed {got} of {count}", "")
consumer.commit()
committed = [consumer.committed(TopicPartition(topic, p)) for p in range(partitions)]
check(sum(committed) == count, f"committed {committed}", "")

text, _, samples = scrape()
check(total(samples, "shardline_requests_total", api="Fetch") > 0, "Fetch requests counted", text)
check(total(samples, "shardline_requests_total", api="OffsetCommit") >= 1, "OffsetCommit counted", text)
check(total(samples, "shardline_log_read_bytes_total") >= sent_bytes, "the consumer's reads were counted", text)
offsets = values(samples, "shardline_consumer_group_committed_offset", group=group, topic=topic)
check(sorted(s.value for s in offsets) == sorted(committed), f"committed offsets {offsets}", text)
lags = values(samples, "shardline_consumer_group_lag", group=group, topic=topic)
check(len(lags) == partitions and all(s.value == 0 for s in lags), f"lag 0 after the commit: {lags}", text)

for i in range(more):
    producer.send(topic, partition=i % partitions, value=b"x" * value_bytes).get(timeout=30)
producer.flush()
text, _, samples = scrape()
lags = values(samples, "shardline_consumer_group_lag", group=group, topic=topic)
check(sum(s.value for s in lags) == more, f"lag {more} after {more} more messages: {lags}", text)
check(total(samples, "shardline_produced_records_total") == count + more, "produced records", text)
check(total(samples, "shardline_partition_log_end_offset", topic=topic) == count + more, "log ends", text)

# Every per-shard family names every shard.
for family in ["shardline_requests_in_flight", "shardline_connections_open", "shardline_connections_accepted_total",
               "shardline_network_sent_bytes_total", "shardline_log_fsync_seconds_count",
               "shardline_cross_shard_round_trip_seconds_count", "shardline_metadata_applied_epoch"]:
    labelled = {s.labels.get("shard") for s in values(samples, family)}
    check(labelled == {str(k) for k in range(shards)}, f"{family} has shards {labelled}", text)
check(total(samples, "shardline_connections_accepted_total") >= 2, "the clients' connections", text)
check(total(samples, "shardline_log_fsync_seconds_count") >= count, "fsync always: a sync per produce", text)
check(values(samples, "shardline_raft_leader")[0].value == 1, "node 1 leads the metadata group", text)
check(values(samples, "shardline_raft_apply_lag")[0].value == 0, "nothing left to apply", text)
check(values(samples, "process_resident_memory_bytes")[0].value > 0, "resident memory", text)
check(values(samples, "process_open_fds")[0].value > 0, "open descriptors", text)

# An error answered to a client is counted under its API and code.
try:
    admin.create_topics([NewTopic(name=topic, num_partitions=1, replication_factor=1)])
except Exception as error:  # TopicAlreadyExistsError
    print("expected:", repr(error))
text, _, samples = scrape()
exists = values(samples, "shardline_request_errors_total", api="CreateTopics", code="36")
check(exists and exists[0].labels["error"] == "TopicAlreadyExists", "TOPIC_ALREADY_EXISTS counted", text)

text, content_type, samples = scrape(openmetrics=True)
check(content_type.startswith("application/openmetrics-text"), content_type, text)
check(text.endswith("# EOF\n"), "OpenMetrics ends with # EOF", text)
check(total(samples, "shardline_produced_records_total") == count + more, "the same values", text)

consumer.close()
producer.close()
admin.close()
print("metrics agree with the clients")
