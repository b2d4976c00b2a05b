"""ACLs and SCRAM users stored through the metadata group, with librdkafka.

Usage: acl_client.py BOOTSTRAP acls|scram-users

BOOTSTRAP is a SASL_PLAINTEXT listener whose users file holds
admin:admin-secret (and, for `acls`, alice:alice-secret).

acls (engine run with --authorizer acl --super-user User:admin): as admin
(librdkafka's admin client) it creates topics and ACLs letting alice write,
read and describe topics and read groups under the prefix `app-`; then, as
alice:
  - produces to and consumes from app-orders with group app-readers;
  - is refused (TOPIC_AUTHORIZATION_FAILED) producing to `secret`;
  - does not see `secret` in Metadata (librdkafka and kafka-python);
  - is refused (GROUP_AUTHORIZATION_FAILED) consuming with group `other`;
  - is refused writing app-denied once admin adds a deny (deny beats the
    prefix allow), and may again once admin deletes the deny;
and checks DescribeAcls filters (principal, MATCH).

scram-users (no authorizer, --auto-create-topics): as admin it adds dave
(SCRAM-SHA-512, 8192 iterations; the admin client salts the password
itself) with AlterUserScramCredentials and sees him with
DescribeUserScramCredentials; dave produces and consumes with
SCRAM-SHA-512; a wrong password is refused; once admin deletes dave's
credential, dave is refused too.

Every wait is bounded; prints what it saw; exits non-zero on the first
surprise.
"""
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType,
                                   AdminClient, NewTopic, ResourcePatternType, ResourceType,
                                   ScramCredentialInfo, ScramMechanism, UserScramCredentialDeletion,
                                   UserScramCredentialUpsertion)

TIMEOUT_S = 20
REFUSED_TIMEOUT_S = 8


def sasl(bootstrap, user, password, mechanism="SCRAM-SHA-256"):
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": user,
        "sasl.password": password,
    }


def wait_all(futures):
    for key, future in futures.items():
        future.result(timeout=TIMEOUT_S)


def produce(config, topic, count=5):
    """Produces `count` messages; returns the delivery errors' codes."""
    errors = []
    producer = Producer({**config, "acks": "all", "linger.ms": 5, "message.timeout.ms": 8000})
    for i in range(count):
        producer.produce(topic, value=f"v{i}",
                         on_delivery=lambda err, msg: errors.append(err.code()) if err else None)
        producer.poll(0)
    remaining = producer.flush(TIMEOUT_S)
    assert remaining == 0, f"{remaining} messages neither delivered nor failed"
    return errors


def consume(config, topic, group, want):
    """Consumes up to `want` messages; returns (values, error codes seen)."""
    consumer = Consumer({**config, "group.id": group, "auto.offset.reset": "earliest",
                         "enable.auto.commit": True})
    consumer.subscribe([topic])
    values, errors = [], []
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline and len(values) < want and not errors:
        message = consumer.poll(0.2)
        if message is None:
            continue
        if message.error():
            errors.append(message.error().code())
            continue
        values.append(message.value().decode())
    consumer.close()
    return values, errors


def binding(principal, kind, name, pattern, operation, permission=AclPermissionType.ALLOW):
    return AclBinding(kind, name, pattern, principal, "*", operation, permission)


def acls(bootstrap):
    admin_config = sasl(bootstrap, "admin", "admin-secret", "PLAIN")
    alice = sasl(bootstrap, "alice", "alice-secret")
    admin = AdminClient(admin_config)

    wait_all(admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)
                                  for name in ("app-orders", "app-denied", "secret")]))
    prefix = ResourcePatternType.PREFIXED
    grants = [binding("User:alice", ResourceType.TOPIC, "app-", prefix, operation)
              for operation in (AclOperation.WRITE, AclOperation.READ, AclOperation.DESCRIBE)]
    grants.append(binding("User:alice", ResourceType.GROUP, "app-", prefix, AclOperation.READ))
    wait_all(admin.create_acls(grants))
    print("admin created topics and", len(grants), "ACLs")

    errors = produce(alice, "app-orders")
    assert errors == [], f"alice writes app-orders: {errors}"
    values, errors = consume(alice, "app-orders", "app-readers", 5)
    assert errors == [] and len(values) == 5, f"alice reads app-orders: {values} {errors}"
    print("alice produced and consumed app-orders")

    errors = produce(alice, "secret")
    assert errors and all(code == KafkaError.TOPIC_AUTHORIZATION_FAILED for code in errors), errors
    print("alice refused on secret:", set(errors))

    topics = set(AdminClient(alice).list_topics(timeout=TIMEOUT_S).topics)
    assert "app-orders" in topics and "secret" not in topics, topics
    from kafka import KafkaConsumer
    kafka_python = KafkaConsumer(bootstrap_servers=bootstrap, security_protocol="SASL_PLAINTEXT",
                                 sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="alice",
                                 sasl_plain_password="alice-secret")
    seen = kafka_python.topics()
    kafka_python.close()
    assert "app-orders" in seen and "secret" not in seen, seen
    print("alice's metadata (librdkafka, kafka-python):", sorted(topics), sorted(seen))

    values, errors = consume(alice, "app-orders", "other", 1)
    assert errors and errors[0] == KafkaError.GROUP_AUTHORIZATION_FAILED, (values, errors)
    print("alice refused in group other:", errors[0])

    deny = binding("User:alice", ResourceType.TOPIC, "app-denied", ResourcePatternType.LITERAL,
                   AclOperation.WRITE, AclPermissionType.DENY)
    wait_all(admin.create_acls([deny]))
    errors = produce(alice, "app-denied")
    assert errors and all(code == KafkaError.TOPIC_AUTHORIZATION_FAILED for code in errors), errors
    print("deny beats the prefix allow:", set(errors))

    mine = admin.describe_acls(AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, "User:alice",
                                                None, AclOperation.ANY, AclPermissionType.ANY))
    mine = mine.result(timeout=TIMEOUT_S)
    assert len(mine) == 5, mine
    applying = admin.describe_acls(AclBindingFilter(ResourceType.TOPIC, "app-denied", ResourcePatternType.MATCH,
                                                    None, None, AclOperation.ANY, AclPermissionType.ANY))
    applying = applying.result(timeout=TIMEOUT_S)
    assert len(applying) == 4, applying
    print("DescribeAcls: alice has", len(mine), "; app-denied is covered by", len(applying))

    deleted = admin.delete_acls([AclBindingFilter(ResourceType.TOPIC, "app-denied", ResourcePatternType.LITERAL,
                                                  None, None, AclOperation.ANY, AclPermissionType.DENY)])
    for future in deleted.values():
        assert len(future.result(timeout=TIMEOUT_S)) == 1
    errors = produce(alice, "app-denied")
    assert errors == [], f"alice writes app-denied once the deny is gone: {errors}"
    print("acl scenario ok")
    return 0


def refused(config):
    """Why connecting with `config` failed, or None if it worked."""
    try:
        AdminClient(config).list_topics(timeout=REFUSED_TIMEOUT_S)
    except KafkaException as error:
        return str(error)
    return None


def scram_users(bootstrap):
    admin = AdminClient(sasl(bootstrap, "admin", "admin-secret"))
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192)
    for future in admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion("dave", info, b"dave-secret")]).values():
        future.result(timeout=TIMEOUT_S)
    described = admin.describe_user_scram_credentials(["dave"])["dave"].result(timeout=TIMEOUT_S)
    infos = [(i.mechanism, i.iterations) for i in described.scram_credential_infos]
    assert infos == [(ScramMechanism.SCRAM_SHA_512, 8192)], infos
    print("admin stored dave:", infos)

    dave = sasl(bootstrap, "dave", "dave-secret", "SCRAM-SHA-512")
    errors = produce(dave, "dave-topic", 10)
    assert errors == [], errors
    values, errors = consume(dave, "dave-topic", "dave-group", 10)
    assert errors == [] and len(values) == 10, (values, errors)
    print("dave produced and consumed with SCRAM-SHA-512")

    assert refused(sasl(bootstrap, "dave", "wrong", "SCRAM-SHA-512")) is not None, "a wrong password"
    for future in admin.alter_user_scram_credentials(
            [UserScramCredentialDeletion("dave", ScramMechanism.SCRAM_SHA_512)]).values():
        future.result(timeout=TIMEOUT_S)
    why = refused(dave)
    assert why is not None, "dave is refused once deleted"
    print("dave refused once deleted:", why)
    print("scram users ok")
    return 0


def main():
    bootstrap, scenario = sys.argv[1:3]
    return {"acls": acls, "scram-users": scram_users}[scenario](bootstrap)


sys.exit(main())
