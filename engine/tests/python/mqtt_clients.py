"""paho-mqtt (3.1.1 and 5.0) and kafka-python against one engine.

Usage: mqtt_clients.py MQTT_HOST:PORT KAFKA_BOOTSTRAP

Checks, each bounded in time:
- 3.1.1 and 5.0 subscribers with `+` and `#` filters get QoS 0, 1 and 2
  messages from 3.1.1 and 5.0 publishers, each at the lower of the
  published and the granted QoS (a QoS 2 subscriber gets QoS 2 messages
  through PUBREC / PUBREL / PUBCOMP); `#` does not match `$SYS/...`;
- a v5 subscription with Retain As Published sees the RETAIN flag of a
  live retained publication, one without it does not;
- a QoS 1 publish is acknowledged (PUBACK) and then readable by a Kafka
  consumer of the mapped topic `mqtt`, with the MQTT topic in the
  `mqtt.topic` header and the key;
- a record a Kafka producer writes to `mqtt` with an `mqtt.topic` header
  reaches the MQTT subscribers of a matching filter;
- an unsubscribed filter gets nothing more;
- persistent sessions (3.1.1 clean session 0, 5.0 clean start 0 with a
  Session Expiry Interval): messages published while the client is away
  arrive after it reconnects, with session present and no new SUBSCRIBE;
- v5 message properties (user properties, content type, response topic,
  correlation data, payload format, message expiry) reach a v5
  subscriber with its subscription identifier; a Kafka record's headers
  arrive as user properties; No Local keeps a client's own messages from
  it; a topic alias stands for its topic; a message that expired while a
  session was away is not delivered.
"""

import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

WAIT_S = 20


def host_port(address):
    host, port = address.rsplit(":", 1)
    return host, int(port)


class Recorder:
    """Collects (topic, payload, qos) of received messages."""

    def __init__(self):
        self.lock = threading.Lock()
        self.messages = []
        self.retained = []
        self.properties = []
        self.subscribed = threading.Event()

    def on_message(self, client, userdata, message):
        with self.lock:
            self.messages.append((message.topic, bytes(message.payload), message.qos))
            self.properties.append(getattr(message, "properties", None))
            if message.retain:
                self.retained.append((message.topic, bytes(message.payload)))

    def on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self.subscribed.set()

    def got(self):
        with self.lock:
            return list(self.messages)

    def wait_for(self, expected):
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            got = self.got()
            if all(item in got for item in expected):
                return got
            time.sleep(0.05)
        raise AssertionError(f"expected {expected}, got {self.got()}")


def client(protocol, name, recorder=None):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{uuid.uuid4().hex[:8]}", protocol=protocol)
    connected = threading.Event()
    result = {}

    def on_connect(cl, userdata, flags, reason_code, properties):
        result["rc"] = reason_code
        connected.set()

    c.on_connect = on_connect
    if recorder is not None:
        c.on_message = recorder.on_message
        c.on_subscribe = recorder.on_subscribe
    host, port = host_port(MQTT)
    c.connect(host, port, keepalive=30)
    c.loop_start()
    assert connected.wait(WAIT_S), f"{name}: no CONNACK"
    assert not result["rc"].is_failure, f"{name}: CONNACK {result['rc']}"
    return c


def persistent_client(protocol, client_id, recorder):
    """Connects with a session that outlives the connection; returns the
    client and the CONNACK's session-present flag."""
    if protocol == mqtt.MQTTv5:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    else:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, clean_session=False)
    connected = threading.Event()
    result = {}

    def on_connect(cl, userdata, flags, reason_code, properties):
        result["rc"] = reason_code
        result["present"] = flags.session_present
        connected.set()

    c.on_connect = on_connect
    c.on_message = recorder.on_message
    c.on_subscribe = recorder.on_subscribe
    host, port = host_port(MQTT)
    if protocol == mqtt.MQTTv5:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 300
        c.connect(host, port, keepalive=30, clean_start=False, properties=properties)
    else:
        c.connect(host, port, keepalive=30)
    c.loop_start()
    assert connected.wait(WAIT_S), f"{client_id}: no CONNACK"
    assert not result["rc"].is_failure, f"{client_id}: CONNACK {result['rc']}"
    return c, result["present"]


def subscribe(c, recorder, filters):
    recorder.subscribed.clear()
    c.subscribe(filters)
    assert recorder.subscribed.wait(WAIT_S), f"no SUBACK for {filters}"


def publish(c, topic, payload, qos):
    info = c.publish(topic, payload, qos=qos)
    info.wait_for_publish(WAIT_S)
    assert info.is_published(), f"{topic} not acknowledged"


MQTT = sys.argv[1]
KAFKA = sys.argv[2]

v311_messages = Recorder()
v5_messages = Recorder()
all_messages = Recorder()
sys_messages = Recorder()
sub311 = client(mqtt.MQTTv311, "sub311", v311_messages)
sub5 = client(mqtt.MQTTv5, "sub5", v5_messages)
sub_all = client(mqtt.MQTTv311, "suball", all_messages)
sub_sys = client(mqtt.MQTTv5, "subsys", sys_messages)
q2_messages = Recorder()
sub_q2 = client(mqtt.MQTTv5, "subq2", q2_messages)
subscribe(sub_q2, q2_messages, [("dev/#", mqtt.SubscribeOptions(qos=2, retainAsPublished=True))])
subscribe(sub311, v311_messages, [("dev/+/temp", 1)])
subscribe(sub5, v5_messages, [("dev/#", 1)])
subscribe(sub_all, all_messages, [("#", 0)])
subscribe(sub_sys, sys_messages, [("$SYS/#", 0)])

pub311 = client(mqtt.MQTTv311, "pub311")
pub5 = client(mqtt.MQTTv5, "pub5")
publish(pub311, "dev/a/temp", b"21.5", 1)
publish(pub311, "dev/a/temp", b"21.6", 0)
publish(pub5, "dev/b/hum", b"40", 1)
publish(pub5, "dev/b/temp", b"19.0", 0)
publish(pub5, "dev/b/hum", b"41", 2)
publish(pub311, "dev/c/temp", b"18.0", 2)
publish(pub5, "$SYS/uptime", b"1", 0)

v311_messages.wait_for(
    [("dev/a/temp", b"21.5", 1), ("dev/a/temp", b"21.6", 0), ("dev/b/temp", b"19.0", 0), ("dev/c/temp", b"18.0", 1)]
)
got = v311_messages.got()
assert not any(topic == "dev/b/hum" for topic, _, _ in got), f"dev/+/temp matched dev/b/hum: {got}"
v5_messages.wait_for(
    [
        ("dev/a/temp", b"21.5", 1),
        ("dev/a/temp", b"21.6", 0),
        ("dev/b/hum", b"40", 1),
        ("dev/b/temp", b"19.0", 0),
        ("dev/b/hum", b"41", 1),
    ]
)
q2_messages.wait_for(
    [
        ("dev/a/temp", b"21.5", 1),
        ("dev/a/temp", b"21.6", 0),
        ("dev/b/hum", b"41", 2),
        ("dev/c/temp", b"18.0", 2),
    ]
)
sys_messages.wait_for([("$SYS/uptime", b"1", 0)])

# Retain As Published: the live delivery of a retained publication keeps
# RETAIN for sub_q2 only.
info = pub5.publish("dev/r/state", b"on", qos=1, retain=True)
info.wait_for_publish(WAIT_S)
q2_messages.wait_for([("dev/r/state", b"on", 1)])
v5_messages.wait_for([("dev/r/state", b"on", 1)])
assert ("dev/r/state", b"on") in q2_messages.retained, q2_messages.retained
assert not v5_messages.retained, v5_messages.retained
# By now "#" has seen everything published before "$SYS/uptime"'s partition
# moved on; it must never see the $SYS topic.
all_messages.wait_for([("dev/a/temp", b"21.5", 0), ("dev/b/hum", b"40", 0)])
assert not any(topic.startswith("$SYS") for topic, _, _ in all_messages.got()), all_messages.got()

# MQTT -> Kafka: a Kafka consumer reads what the devices published.
consumer = KafkaConsumer(bootstrap_servers=KAFKA, consumer_timeout_ms=2000, auto_offset_reset="earliest")
partitions = consumer.partitions_for_topic("mqtt")
assert partitions, "the mapped topic exists"
consumer.assign([TopicPartition("mqtt", p) for p in partitions])
seen = []
deadline = time.monotonic() + WAIT_S
while time.monotonic() < deadline and not any(v == b"21.5" for _, v, _ in seen):
    for record in consumer:
        headers = dict(record.headers)
        seen.append((headers.get("mqtt.topic"), record.value, record.key))
assert (b"dev/a/temp", b"21.5", b"dev/a/temp") in seen, seen
assert (b"dev/b/hum", b"40", b"dev/b/hum") in seen, seen
consumer.close()

# Kafka -> MQTT: a record with the header reaches matching subscribers.
producer = KafkaProducer(bootstrap_servers=KAFKA, acks="all")
producer.send("mqtt", value=b"from-kafka", headers=[("mqtt.topic", b"dev/k/temp")]).get(timeout=WAIT_S)
producer.flush()
producer.close()
v311_messages.wait_for([("dev/k/temp", b"from-kafka", 1)])
v5_messages.wait_for([("dev/k/temp", b"from-kafka", 1)])

# Unsubscribe: nothing more for that filter.
unsubscribed = threading.Event()
sub5.on_unsubscribe = lambda *args: unsubscribed.set()
sub5.unsubscribe("dev/#")
assert unsubscribed.wait(WAIT_S), "no UNSUBACK"
before = len(v5_messages.got())
publish(pub311, "dev/z/temp", b"after", 1)
v311_messages.wait_for([("dev/z/temp", b"after", 1)])
assert len(v5_messages.got()) == before, v5_messages.got()[before:]

# Persistent sessions: subscribe, go away, get what was published meanwhile.
session_id = uuid.uuid4().hex[:8]
for protocol, name, qos in ((mqtt.MQTTv311, "keep311", 1), (mqtt.MQTTv5, "keep5", 2)):
    client_id = f"{name}-{session_id}"
    first = Recorder()
    c, present = persistent_client(protocol, client_id, first)
    assert not present, f"{name}: a new session"
    subscribe(c, first, [(f"away/{name}/#", qos)])
    c.disconnect()
    c.loop_stop()
    publish(pub311, f"away/{name}/a", b"while-away-1", 1)
    publish(pub5, f"away/{name}/b", b"while-away-2", 2)
    publish(pub5, f"elsewhere/{name}", b"unmatched", 1)
    back = Recorder()
    c, present = persistent_client(protocol, client_id, back)
    assert present, f"{name}: the session is resumed"
    back.wait_for([(f"away/{name}/a", b"while-away-1", 1), (f"away/{name}/b", b"while-away-2", qos)])
    publish(pub311, f"away/{name}/a", b"live", 1)
    back.wait_for([(f"away/{name}/a", b"live", 1)])
    assert len(back.got()) == 3, f"{name}: {back.got()}"
    c.disconnect()
    c.loop_stop()

# v5 properties end to end, with a subscription identifier.
props_messages = Recorder()
sub_props = client(mqtt.MQTTv5, "subprops", props_messages)
subscribe_properties = Properties(PacketTypes.SUBSCRIBE)
subscribe_properties.SubscriptionIdentifier = 77
props_messages.subscribed.clear()
sub_props.subscribe([("props/#", 1)], properties=subscribe_properties)
assert props_messages.subscribed.wait(WAIT_S), "no SUBACK for props/#"
publish_properties = Properties(PacketTypes.PUBLISH)
publish_properties.UserProperty = [("site", "north"), ("mqtt.qos", "user's own")]
publish_properties.ContentType = "application/json"
publish_properties.ResponseTopic = "replies/42"
publish_properties.CorrelationData = b"req-42"
publish_properties.PayloadFormatIndicator = 1
publish_properties.MessageExpiryInterval = 3600
pub5.publish("props/a", b"{}", qos=1, properties=publish_properties).wait_for_publish(WAIT_S)
props_messages.wait_for([("props/a", b"{}", 1)])
got = props_messages.properties[0]
assert got.UserProperty == [("site", "north"), ("mqtt.qos", "user's own")], got
assert got.ContentType == "application/json", got
assert got.ResponseTopic == "replies/42" and got.CorrelationData == b"req-42", got
assert got.PayloadFormatIndicator == 1, got
assert 3590 <= got.MessageExpiryInterval <= 3600, got
assert got.SubscriptionIdentifier == [77], got

# Kafka -> MQTT: the record's other headers are user properties.
producer = KafkaProducer(bootstrap_servers=KAFKA, acks="all")
producer.send("mqtt", value=b"hdr", headers=[("mqtt.topic", b"props/k"), ("trace", b"t-1")]).get(timeout=WAIT_S)
producer.close()
props_messages.wait_for([("props/k", b"hdr", 1)])
got = props_messages.properties[1]
assert got.UserProperty == [("trace", "t-1")], got

# Topic alias: the second PUBLISH has an empty topic and the alias.
alias_properties = Properties(PacketTypes.PUBLISH)
alias_properties.TopicAlias = 5
pub5.publish("props/aliased", b"first", qos=1, properties=alias_properties).wait_for_publish(WAIT_S)
pub5.publish("", b"second", qos=1, properties=alias_properties).wait_for_publish(WAIT_S)
props_messages.wait_for([("props/aliased", b"first", 1), ("props/aliased", b"second", 1)])

# No Local: a client's own messages do not come back to it.
local_messages = Recorder()
local = client(mqtt.MQTTv5, "local", local_messages)
local_messages.subscribed.clear()
local.subscribe([("nl/#", mqtt.SubscribeOptions(qos=1, noLocal=True))])
assert local_messages.subscribed.wait(WAIT_S), "no SUBACK for nl/#"
publish(local, "nl/own", b"mine", 1)
publish(pub5, "nl/other", b"theirs", 1)
local_messages.wait_for([("nl/other", b"theirs", 1)])
time.sleep(0.3)
assert ("nl/own", b"mine", 1) not in local_messages.got(), local_messages.got()
local.disconnect()
local.loop_stop()

# Message expiry: a message that expires while a session is away is not
# delivered when it comes back; one that has not expired is.
away = Recorder()
expiring_id = f"expiring-{session_id}"
c, _ = persistent_client(mqtt.MQTTv5, expiring_id, away)
subscribe(c, away, [("exp/#", 1)])
c.disconnect()
c.loop_stop()
short = Properties(PacketTypes.PUBLISH)
short.MessageExpiryInterval = 1
pub5.publish("exp/a", b"short-lived", qos=1, properties=short).wait_for_publish(WAIT_S)
publish(pub5, "exp/a", b"lasting", 1)
time.sleep(2.2)
back = Recorder()
c, present = persistent_client(mqtt.MQTTv5, expiring_id, back)
assert present
back.wait_for([("exp/a", b"lasting", 1)])
assert ("exp/a", b"short-lived", 1) not in back.got(), back.got()
c.disconnect()
c.loop_stop()

for c in (sub311, sub5, sub_all, sub_sys, sub_q2, sub_props, pub311, pub5):
    c.disconnect()
    c.loop_stop()
print("mqtt clients ok")
