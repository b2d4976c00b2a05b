"""Retained messages with v5 properties, set over MQTT or by a Kafka
producer, and server topic aliases, with paho-mqtt, kafka-python and
confluent-kafka. Each step is one command, so the test can restart the
engine between steps.

Usage:
  mqtt_retained.py publish MQTT TOPIC PAYLOAD EXPIRY_S
      paho v5 publishes PAYLOAD retained at QoS 1 with user properties
      site=north and site=south, content type text/plain, response topic
      reply/to, correlation data "c1" and a Message Expiry of EXPIRY_S
  mqtt_retained.py produce KAFKA TOPIC PAYLOAD [confluent]
      kafka-python (or confluent-kafka) produces PAYLOAD (empty: a null
      value; key TOPIC) to `mqtt` with headers mqtt.topic=TOPIC, mqtt.retain=1,
      mqtt.qos=1 and a header of its own, color=blue; acks=all
  mqtt_retained.py retained MQTT FILTER
      a new paho v5 subscriber of FILTER prints, one line each, the
      messages it gets within 3 s:
      topic|payload|retain|expiry or -|content type or -|user properties
  mqtt_retained.py aliases MQTT
      a paho v5 subscriber announcing Topic Alias Maximum 2 gets 3 rounds
      of messages on 4 topics, each with its full topic, in order per topic
"""

import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

WAIT_S = 20
LISTEN_S = 3


def host_port(address):
    host, port = address.rsplit(":", 1)
    return host, int(port)


def client(address, name, on_message=None, connect_properties=None):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5)
    connected = threading.Event()
    subscribed = threading.Event()
    result = {}

    def on_connect(cl, userdata, flags, reason_code, properties):
        result["rc"] = reason_code
        connected.set()

    c.on_connect = on_connect
    c.on_subscribe = lambda *args: subscribed.set()
    if on_message is not None:
        c.on_message = on_message
    host, port = host_port(address)
    c.connect(host, port, keepalive=30, properties=connect_properties)
    c.loop_start()
    assert connected.wait(WAIT_S), f"{name}: no CONNACK"
    assert not result["rc"].is_failure, f"{name}: CONNACK {result['rc']}"
    return c, subscribed


def publish(address, topic, payload, expiry_s):
    c, _ = client(address, "retainer")
    properties = Properties(PacketTypes.PUBLISH)
    properties.UserProperty = [("site", "north"), ("site", "south")]
    properties.ContentType = "text/plain"
    properties.ResponseTopic = "reply/to"
    properties.CorrelationData = b"c1"
    properties.MessageExpiryInterval = int(expiry_s)
    info = c.publish(topic, payload.encode(), qos=1, retain=True, properties=properties)
    info.wait_for_publish(WAIT_S)
    assert info.is_published(), f"{topic} not acknowledged"
    c.disconnect()
    c.loop_stop()


def produce(bootstrap, topic, payload, flavour):
    headers = [("mqtt.topic", topic.encode()), ("mqtt.retain", b"1"), ("mqtt.qos", b"1"), ("color", b"blue")]
    value = payload.encode() if payload else None
    if flavour == "confluent":
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "compression.type": "none"})
        errors = []
        producer.produce("mqtt", key=topic.encode(), value=value, headers=headers, on_delivery=lambda err, msg: err and errors.append(err))
        assert producer.flush(WAIT_S) == 0, "not delivered in time"
        assert not errors, f"delivery failed: {errors}"
    else:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        producer.send("mqtt", key=topic.encode(), value=value, headers=headers).get(timeout=WAIT_S)
        producer.close()


def retained(address, topic_filter):
    lines = []
    lock = threading.Lock()

    def on_message(cl, userdata, message):
        props = getattr(message, "properties", None)
        expiry = getattr(props, "MessageExpiryInterval", None)
        content_type = getattr(props, "ContentType", None)
        user = getattr(props, "UserProperty", None) or []
        with lock:
            lines.append(
                "|".join(
                    [
                        message.topic,
                        bytes(message.payload).decode(),
                        "1" if message.retain else "0",
                        "-" if expiry is None else str(expiry),
                        content_type or "-",
                        ",".join(f"{name}={value}" for name, value in user),
                    ]
                )
            )

    c, subscribed = client(address, "late", on_message)
    c.subscribe(topic_filter, qos=1)
    assert subscribed.wait(WAIT_S), f"no SUBACK for {topic_filter}"
    time.sleep(LISTEN_S)
    c.disconnect()
    c.loop_stop()
    with lock:
        for line in lines:
            print(line)


def aliases(address):
    got = []
    lock = threading.Lock()

    def on_message(cl, userdata, message):
        with lock:
            got.append((message.topic, bytes(message.payload)))

    connect_properties = Properties(PacketTypes.CONNECT)
    connect_properties.TopicAliasMaximum = 2
    subscriber, subscribed = client(address, "aliased", on_message, connect_properties)
    subscriber.subscribe("alias/#", qos=1)
    assert subscribed.wait(WAIT_S), "no SUBACK"
    publisher, _ = client(address, "alias-publisher")
    expected = []
    for round_ in range(3):
        for topic in ["alias/a", "alias/b", "alias/c", "alias/a/long/er"]:
            payload = f"{topic}:{round_}".encode()
            info = publisher.publish(topic, payload, qos=1)
            info.wait_for_publish(WAIT_S)
            assert info.is_published(), f"{topic} not acknowledged"
            expected.append((topic, payload))
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        with lock:
            if len(got) >= len(expected):
                break
        time.sleep(0.05)
    with lock:
        # Topics may sit in different partitions: order holds per topic.
        assert sorted(got) == sorted(expected), f"expected {expected}, got {got}"
        for topic in {t for t, _ in expected}:
            assert [m for m in got if m[0] == topic] == [m for m in expected if m[0] == topic], f"{topic} out of order"
    print(f"aliases: {len(got)} messages, each with its full topic")


COMMANDS = {
    "publish": lambda args: publish(*args),
    "produce": lambda args: produce(args[0], args[1], args[2], args[3] if len(args) > 3 else "kafka-python"),
    "retained": lambda args: retained(*args),
    "aliases": lambda args: aliases(*args),
}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](sys.argv[2:])
