"""MQTT 5.0 enhanced authentication (AUTH) with SCRAM, over a raw socket.

Usage: mqtt_scram.py MQTT_HOST:PORT USER PASSWORD

The SCRAM client side is written here from RFC 5802 with hashlib and
hmac (no MQTT or SASL library does SCRAM over MQTT AUTH). Checks, each
bounded in time:
- SCRAM-SHA-256 and SCRAM-SHA-512: CONNECT (method, client-first) →
  AUTH 0x18 (server-first) → AUTH 0x18 (client-final) → CONNACK 0x00 with
  the method echoed and server-final, whose signature checks; the
  connection then publishes (PUBACK 0x00) and re-authenticates (AUTH 0x19
  → 0x18 → 0x18 → AUTH 0x00 with a server-final that checks);
- a wrong password gets CONNACK 0x86 and the close;
- an unknown method gets CONNACK 0x8C;
- an AUTH naming another method mid-exchange gets CONNACK 0x82;
- an AUTH before CONNECT is closed without an answer.
"""

import base64
import hashlib
import hmac
import os
import socket
import sys

WAIT_S = 15
HOST, PORT = sys.argv[1].rsplit(":", 1)
USER, PASSWORD = sys.argv[2], sys.argv[3]

AUTH_METHOD = 0x15
AUTH_DATA = 0x16


def varint(n):
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def string(b):
    return len(b).to_bytes(2, "big") + b


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def properties(method, data):
    block = bytes([AUTH_METHOD]) + string(method.encode())
    if data is not None:
        block += bytes([AUTH_DATA]) + string(data)
    return varint(len(block)) + block


def connect(client_id, method, data):
    body = string(b"MQTT") + bytes([5, 0x02]) + (60).to_bytes(2, "big")
    body += properties(method, data) + string(client_id.encode())
    return packet(0x10, body)


def auth(reason, method, data):
    return packet(0xF0, bytes([reason]) + properties(method, data))


def read_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError(f"closed after {out!r}")
        out += chunk
    return out


def read_packet(sock):
    first = read_exact(sock, 1)[0]
    length, shift = 0, 0
    for _ in range(4):
        byte = read_exact(sock, 1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first, read_exact(sock, length)


def read_varint(data, at):
    value, shift = 0, 0
    for _ in range(4):
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return value, at


def auth_properties(data, at):
    """The Authentication Method and Data of a property block at `at`."""
    length, at = read_varint(data, at)
    end = at + length
    method, value = None, None
    while at < end:
        ident = data[at]
        at += 1
        if ident in (AUTH_METHOD, AUTH_DATA, 0x12, 0x1F):
            size = int.from_bytes(data[at : at + 2], "big")
            field = data[at + 2 : at + 2 + size]
            at += 2 + size
            if ident == AUTH_METHOD:
                method = field.decode()
            elif ident == AUTH_DATA:
                value = field
        elif ident in (0x24, 0x25, 0x28, 0x29, 0x2A, 0x17, 0x19, 0x01):
            at += 1
        elif ident in (0x13, 0x21, 0x22):
            at += 2
        elif ident in (0x11, 0x27, 0x02):
            at += 4
        elif ident == 0x26:
            for _ in range(2):
                size = int.from_bytes(data[at : at + 2], "big")
                at += 2 + size
        else:
            raise ValueError(f"property {ident:#x} not expected")
    return method, value


def connected_socket():
    sock = socket.create_connection((HOST, int(PORT)), timeout=WAIT_S)
    sock.settimeout(WAIT_S)
    return sock


class Scram:
    """The client side of one SCRAM exchange (RFC 5802, no channel binding)."""

    def __init__(self, method, password):
        self.hash = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}[method]
        self.name = self.hash().name
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n={USER},r={self.nonce}"

    def client_first(self):
        return ("n,," + self.first_bare).encode()

    def client_final(self, server_first):
        server_first = server_first.decode()
        fields = dict(part.split("=", 1) for part in server_first.split(","))
        assert fields["r"].startswith(self.nonce), server_first
        salted = hashlib.pbkdf2_hmac(self.name, self.password, base64.b64decode(fields["s"]), int(fields["i"]))
        client_key = hmac.new(salted, b"Client Key", self.hash).digest()
        stored_key = self.hash(client_key).digest()
        without_proof = f"c={base64.b64encode(b'n,,').decode()},r={fields['r']}"
        self.auth_message = f"{self.first_bare},{server_first},{without_proof}".encode()
        signature = hmac.new(stored_key, self.auth_message, self.hash).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", self.hash).digest()
        self.server_signature = hmac.new(server_key, self.auth_message, self.hash).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def check_server_final(self, server_final):
        expected = b"v=" + base64.b64encode(self.server_signature)
        assert server_final == expected, f"server-final {server_final!r}, expected {expected!r}"


def exchange(sock, method, scram, first_packet):
    """Sends `first_packet` (CONNECT or AUTH 0x19), answers the challenge;
    returns the last packet (CONNACK or AUTH) as (first byte, body)."""
    sock.sendall(first_packet)
    kind, body = read_packet(sock)
    assert kind == 0xF0 and body[0] == 0x18, f"AUTH 0x18 expected: {kind:#x} {body!r}"
    got_method, server_first = auth_properties(body, 1)
    assert got_method == method, got_method
    sock.sendall(auth(0x18, method, scram.client_final(server_first)))
    return read_packet(sock)


def login(method, password, client_id):
    """Connects with SCRAM; returns the socket and the CONNACK (kind, body)."""
    sock = connected_socket()
    scram = Scram(method, password)
    kind, body = exchange(sock, method, scram, connect(client_id, method, scram.client_first()))
    return sock, scram, kind, body


def closed(sock):
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def main():
    for method in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        sock, scram, kind, body = login(method, PASSWORD, "scram-" + method[-3:])
        assert kind == 0x20 and body[1] == 0x00, f"{method}: CONNACK 0 expected: {kind:#x} {body!r}"
        got_method, server_final = auth_properties(body, 2)
        assert got_method == method, f"{method}: method echoed: {got_method}"
        scram.check_server_final(server_final)
        # The connection serves: PUBLISH QoS 1 "scram/t", id 1 → PUBACK 0.
        sock.sendall(packet(0x32, string(b"scram/t") + (1).to_bytes(2, "big") + b"\x00" + b"x"))
        kind, body = read_packet(sock)
        assert kind == 0x40 and (len(body) == 2 or body[2] == 0), f"PUBACK: {kind:#x} {body!r}"
        # Re-authentication on the same connection.
        again = Scram(method, PASSWORD)
        kind, body = exchange(sock, method, again, auth(0x19, method, again.client_first()))
        assert kind == 0xF0 and body[0] == 0x00, f"{method}: AUTH 0x00 expected: {kind:#x} {body!r}"
        got_method, server_final = auth_properties(body, 1)
        assert got_method == method, got_method
        again.check_server_final(server_final)
        sock.sendall(b"\xc0\x00")
        assert read_packet(sock) == (0xD0, b""), "PINGRESP after re-authentication"
        sock.close()
        print(f"{method}: connected, published, re-authenticated")

    sock, _, kind, body = login("SCRAM-SHA-256", PASSWORD + "-wrong", "scram-bad")
    assert (kind, body[1]) == (0x20, 0x86), f"wrong password: {kind:#x} {body!r}"
    assert closed(sock), "closed after CONNACK 0x86"
    print("wrong password: CONNACK 0x86")

    sock = connected_socket()
    sock.sendall(connect("scram-unknown", "SCRAM-MD5", b"n,,n=x,r=abc"))
    kind, body = read_packet(sock)
    assert (kind, body[1]) == (0x20, 0x8C), f"unknown method: {kind:#x} {body!r}"
    assert closed(sock)
    print("unknown method: CONNACK 0x8C")

    sock = connected_socket()
    scram = Scram("SCRAM-SHA-256", PASSWORD)
    sock.sendall(connect("scram-switch", "SCRAM-SHA-256", scram.client_first()))
    kind, body = read_packet(sock)
    assert kind == 0xF0, f"AUTH expected: {kind:#x}"
    sock.sendall(auth(0x18, "SCRAM-SHA-512", b"c=biws,r=x,p=eA=="))
    kind, body = read_packet(sock)
    assert (kind, body[1]) == (0x20, 0x82), f"another method: {kind:#x} {body!r}"
    print("another method mid-exchange: CONNACK 0x82")

    sock = connected_socket()
    sock.sendall(auth(0x18, "SCRAM-SHA-256", b"x"))
    assert closed(sock), "AUTH before CONNECT: closed without an answer"
    print("AUTH before CONNECT: closed")


if __name__ == "__main__":
    main()
