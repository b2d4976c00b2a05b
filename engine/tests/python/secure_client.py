"""A Kafka client on a secured listener (SSL, SASL_PLAINTEXT, SASL_SSL).

Usage: secure_client.py CLIENT BOOTSTRAP EXPECT [KEY=VALUE ...]

CLIENT   confluent (librdkafka) or kafka-python.
EXPECT   roundtrip: produce 50 messages to a new topic and consume them back
                    (the engine runs with --auto-create-topics);
         slow-roundtrip: as roundtrip, one message every 150 ms (over a
                    broker's session lifetime: librdkafka re-authenticates);
         refused:   connecting must fail; exits 0 if it did, 1 if it worked.
KEY=VALUE are librdkafka settings (security.protocol, ssl.ca.location,
ssl.certificate.location, ssl.key.location, sasl.mechanism, sasl.username,
sasl.password); the kafka-python run translates them.

Also: secure_client.py peer-cert HOST:PORT CA_FILE prints the subject CN of
the certificate the server presents.
Every wait is bounded; prints what it saw.
"""
import socket
import time
import ssl
import sys
import uuid

COUNT = 50
TIMEOUT_S = 20
REFUSED_TIMEOUT_S = 8

KAFKA_PYTHON_NAMES = {
    "security.protocol": "security_protocol",
    "ssl.ca.location": "ssl_cafile",
    "ssl.certificate.location": "ssl_certfile",
    "ssl.key.location": "ssl_keyfile",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.username": "sasl_plain_username",
    "sasl.password": "sasl_plain_password",
}


def peer_cert(address, ca_file):
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=host) as tls:
            subject = dict(item[0] for item in tls.getpeercert()["subject"])
            print(subject["commonName"])


def confluent(bootstrap, expect, settings):
    from confluent_kafka import Consumer, KafkaException, Producer
    from confluent_kafka.admin import AdminClient

    config = {"bootstrap.servers": bootstrap, **settings}
    if expect == "refused":
        admin = AdminClient(config)
        try:
            metadata = admin.list_topics(timeout=REFUSED_TIMEOUT_S)
        except KafkaException as error:
            print("refused:", error)
            return 0
        print("connected, but should have been refused:", metadata.brokers)
        return 1
    topic = "secure-" + uuid.uuid4().hex[:8]
    errors = []
    producer = Producer({**config, "acks": "all", "linger.ms": 5})
    for i in range(COUNT):
        producer.produce(topic, key=str(i), value=f"value-{i}",
                         on_delivery=lambda err, msg: errors.append(err) if err else None)
        producer.poll(0)
        if expect == "slow-roundtrip":
            producer.flush(TIMEOUT_S)
            time.sleep(0.15)
    assert producer.flush(TIMEOUT_S) == 0, "everything delivered"
    assert not errors, errors
    consumer = Consumer({**config, "group.id": "secure-" + topic, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False})
    consumer.subscribe([topic])
    seen = []
    for _ in range(TIMEOUT_S * 10):
        if len(seen) == COUNT:
            break
        message = consumer.poll(0.1)
        if message is None:
            continue
        assert message.error() is None, message.error()
        seen.append(message.value().decode())
    consumer.close()
    assert sorted(seen) == sorted(f"value-{i}" for i in range(COUNT)), seen
    print("roundtrip ok:", len(seen))
    return 0


def kafka_python(bootstrap, expect, settings):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    config = {KAFKA_PYTHON_NAMES[key]: value for key, value in settings.items()}
    config["bootstrap_servers"] = bootstrap
    if expect == "refused":
        try:
            admin = KafkaAdminClient(**config, request_timeout_ms=REFUSED_TIMEOUT_S * 1000)
            topics = admin.list_topics()
        except (KafkaError, OSError, ssl.SSLError) as error:
            print("refused:", repr(error))
            return 0
        print("connected, but should have been refused:", topics)
        return 1
    topic = "secure-" + uuid.uuid4().hex[:8]
    producer = KafkaProducer(**config, acks="all", linger_ms=5)
    futures = [producer.send(topic, key=str(i).encode(), value=f"value-{i}".encode()) for i in range(COUNT)]
    for future in futures:
        future.get(timeout=TIMEOUT_S)
    producer.close()
    consumer = KafkaConsumer(topic, **config, group_id="secure-" + topic, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=TIMEOUT_S * 1000)
    seen = []
    for message in consumer:
        seen.append(message.value.decode())
        if len(seen) == COUNT:
            break
    consumer.close()
    assert sorted(seen) == sorted(f"value-{i}" for i in range(COUNT)), seen
    print("roundtrip ok:", len(seen))
    return 0


def main():
    if sys.argv[1] == "peer-cert":
        peer_cert(sys.argv[2], sys.argv[3])
        return 0
    client, bootstrap, expect = sys.argv[1:4]
    settings = dict(arg.split("=", 1) for arg in sys.argv[4:])
    if client == "confluent":
        return confluent(bootstrap, expect, settings)
    return kafka_python(bootstrap, expect, settings)


sys.exit(main())
