"""Shared subscriptions with paho-mqtt (3.1.1 and 5.0) against one engine.

Usage: mqtt_shared.py MQTT_HOST:PORT

Checks, each bounded in time:
- three members of `$share/workers/jobs/#` (two 5.0, one 3.1.1, spread
  over the engine's shards by the kernel) get every message published to
  `jobs/...` exactly once between them, and each gets a share of them;
- an ordinary subscriber of `jobs/#` beside them gets every message;
- after one member disconnects, the two left get every later message
  exactly once between them.
"""

import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

WAIT_S = 20
MQTT = sys.argv[1]


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.payloads = []
        self.subscribed = threading.Event()

    def on_message(self, client, userdata, message):
        with self.lock:
            self.payloads.append(bytes(message.payload))

    def on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self.subscribed.set()

    def got(self):
        with self.lock:
            return list(self.payloads)


def client(protocol, name, recorder=None):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{uuid.uuid4().hex[:8]}", protocol=protocol)
    connected = threading.Event()
    c.on_connect = lambda *args: connected.set()
    if recorder is not None:
        c.on_message = recorder.on_message
        c.on_subscribe = recorder.on_subscribe
    host, port = MQTT.rsplit(":", 1)
    c.connect(host, int(port), keepalive=30)
    c.loop_start()
    assert connected.wait(WAIT_S), f"{name}: no CONNACK"
    return c


def subscribe(c, recorder, topic_filter, qos):
    recorder.subscribed.clear()
    c.subscribe(topic_filter, qos)
    assert recorder.subscribed.wait(WAIT_S), f"no SUBACK for {topic_filter}"


def wait_until(check, what):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(what())


def publish_all(publisher, payloads):
    for payload in payloads:
        info = publisher.publish(f"jobs/{int(payload.split(b'-')[1]) % 5}", payload, qos=1)
        info.wait_for_publish(WAIT_S)
        assert info.is_published(), payload


members = [Recorder(), Recorder(), Recorder()]
clients = [
    client(mqtt.MQTTv5, "w0", members[0]),
    client(mqtt.MQTTv5, "w1", members[1]),
    client(mqtt.MQTTv311, "w2", members[2]),
]
for c, r in zip(clients, members):
    subscribe(c, r, "$share/workers/jobs/#", 1)
watcher = Recorder()
watching = client(mqtt.MQTTv5, "watcher", watcher)
subscribe(watching, watcher, "jobs/#", 1)
publisher = client(mqtt.MQTTv5, "producer")

first = [f"job-{i}".encode() for i in range(60)]
publish_all(publisher, first)


def shared_got(recorders):
    return sorted(p for r in recorders for p in r.got())


wait_until(lambda: len(shared_got(members)) >= len(first), lambda: f"the share got {shared_got(members)}")
wait_until(lambda: len(watcher.got()) >= len(first), lambda: f"the watcher got {watcher.got()}")
time.sleep(0.3)  # nothing more may come
assert shared_got(members) == sorted(first), f"each message once: {shared_got(members)}"
assert sorted(watcher.got()) == sorted(first), watcher.got()
counts = [len(r.got()) for r in members]
assert all(n > 0 for n in counts), f"every member gets a share: {counts}"

# One member leaves: the two others share what comes next.
clients[0].disconnect()
clients[0].loop_stop()
time.sleep(0.3)
before = [len(r.got()) for r in members]
second = [f"job-{i}".encode() for i in range(60, 90)]
publish_all(publisher, second)
later = members[1:]
wait_until(
    lambda: len(shared_got(later)) - sum(before[1:]) >= len(second),
    lambda: f"the two left got {shared_got(later)}",
)
time.sleep(0.3)
assert len(members[0].got()) == before[0], "a member that left gets nothing"
new = sorted(p for r in later for p in r.got()[before[members.index(r)]:])
assert new == sorted(second), f"each later message once: {new}"

for c in clients[1:] + [watching, publisher]:
    c.disconnect()
    c.loop_stop()
print(f"mqtt shared subscriptions ok: {counts}")
