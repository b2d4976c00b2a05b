"""SCRAM users stored through the metadata group, with librdkafka.

Usage: scram_users.py BOOTSTRAP

BOOTSTRAP is a SASL_PLAINTEXT listener of an engine (no authorizer,
--auto-create-topics) whose users file holds admin:admin-secret. As admin,
librdkafka's admin client adds dave (SCRAM-SHA-512, 8192 iterations; it
salts the password itself) with AlterUserScramCredentials and sees him with
DescribeUserScramCredentials; dave then produces and consumes with
SCRAM-SHA-512; a wrong password is refused; once admin deletes dave's
credential, dave is refused too. Every wait is bounded; prints what it saw.
"""
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialDeletion, UserScramCredentialUpsertion)

TIMEOUT_S = 20
REFUSED_TIMEOUT_S = 8


def sasl(bootstrap, user, password, mechanism):
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": user,
        "sasl.password": password,
    }


def refused(config):
    try:
        AdminClient(config).list_topics(timeout=REFUSED_TIMEOUT_S)
    except KafkaException as error:
        return str(error)
    return None


def main():
    bootstrap = sys.argv[1]
    admin = AdminClient(sasl(bootstrap, "admin", "admin-secret", "SCRAM-SHA-256"))
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    for future in admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion("dave", info, b"dave-secret")]).values():
        future.result(timeout=TIMEOUT_S)
    described = admin.describe_user_scram_credentials(["dave"])["dave"].result(timeout=TIMEOUT_S)
    infos = [(i.mechanism, i.iterations) for i in described.scram_credential_infos]
    assert infos == [(ScramMechanism.SCRAM_SHA_512, 8192)], infos
    print("admin stored dave:", infos)

    dave = sasl(bootstrap, "dave", "dave-secret", "SCRAM-SHA-512")
    topic = "dave-" + uuid.uuid4().hex[:8]
    errors = []
    producer = Producer({**dave, "acks": "all", "linger.ms": 5})
    for i in range(10):
        producer.produce(topic, value=f"v{i}", on_delivery=lambda err, msg: errors.append(err) if err else None)
    assert producer.flush(TIMEOUT_S) == 0 and not errors, errors
    consumer = Consumer({**dave, "group.id": topic, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    seen = []
    deadline = time.monotonic() + TIMEOUT_S
    while len(seen) < 10 and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            seen.append(message.value())
    consumer.close()
    assert len(seen) == 10, seen
    print("dave produced and consumed with SCRAM-SHA-512")

    why = refused(sasl(bootstrap, "dave", "wrong", "SCRAM-SHA-512"))
    assert why is not None, "a wrong password is refused"
    for future in admin.alter_user_scram_credentials(
            [UserScramCredentialDeletion("dave", ScramMechanism.SCRAM_SHA_512)]).values():
        future.result(timeout=TIMEOUT_S)
    why = refused(dave)
    assert why is not None, "dave is refused once deleted"
    print("dave refused once deleted:", why)
    print("scram users ok")
    return 0


sys.exit(main())
