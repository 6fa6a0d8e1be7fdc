#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/corpus/<target>/seed-*.

Seeds are small valid inputs the fuzzer starts from: STUN/TURN messages as a
browser sends them (RFC 8489/8656: Binding, Allocate, Refresh,
CreatePermission, ChannelBind, Send indications, ChannelData, TCP-framed), the
signaling frames of docs/signaling-protocol.md, and signaling sessions in the
operation layout of signaling_session.rs. Run it again after changing an input
layout; it replaces every seed-* file and leaves other corpus files alone.

    python3 fuzz/make_corpus.py
"""

import hashlib
import hmac
import ipaddress
import struct
import zlib
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"

# ---------------------------------------------------------------------------
# STUN / TURN
# ---------------------------------------------------------------------------

COOKIE = 0x2112A442
USER, REALM, PASSWORD = "alice", "duet", "pw"
NONCE = "AAAAAAAAAAAA"  # well-formed, not minted by the server: exercises the 401/438 path
PEER_V4 = ("192.0.2.55", 7000)
PEER_V6 = ("2001:db8:3::55", 7000)

BINDING, ALLOCATE, REFRESH, SEND, CREATE_PERMISSION, CHANNEL_BIND = 0x001, 0x003, 0x004, 0x006, 0x008, 0x009
REQUEST, INDICATION = 0b00, 0b01


def message_type(method, klass):
    return (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | ((klass & 1) << 4) | ((klass & 2) << 7)


def attribute(kind, value):
    padding = b"\0" * (-len(value) % 4)
    return struct.pack("!HH", kind, len(value)) + value + padding


def xor_address(kind, address, port, transaction):
    ip = ipaddress.ip_address(address)
    xport = port ^ (COOKIE >> 16)
    if ip.version == 4:
        value = struct.pack("!BBHI", 0, 1, xport, int(ip) ^ COOKIE)
    else:
        mask = int.from_bytes(struct.pack("!I", COOKIE) + transaction, "big")
        value = struct.pack("!BBH", 0, 2, xport) + (int(ip) ^ mask).to_bytes(16, "big")
    return attribute(kind, value)


class Stun:
    """A STUN message built attribute by attribute, signed on demand."""

    def __init__(self, method, klass=REQUEST, transaction=b"duet-seed-tx"):
        self.kind = message_type(method, klass)
        self.transaction = transaction
        self.body = b""

    def add(self, kind, value):
        self.body += attribute(kind, value)
        return self

    def peer(self, address, port):
        self.body += xor_address(0x0012, address, port, self.transaction)
        return self

    def header(self, extra):
        return struct.pack("!HHI", self.kind, len(self.body) + extra, COOKIE) + self.transaction

    def signed(self, sha256=False, nonce=NONCE):
        self.add(0x0006, USER.encode()).add(0x0014, REALM.encode()).add(0x0015, nonce.encode())
        # The long-term key: MD5 of user:realm:password, SHA-256 of it for
        # MESSAGE-INTEGRITY-SHA256 (as the stun-types codec the server uses does).
        secret = f"{USER}:{REALM}:{PASSWORD}".encode()
        key = hashlib.sha256(secret).digest() if sha256 else hashlib.md5(secret).digest()
        if sha256:
            mac = hmac.new(key, self.header(36) + self.body, hashlib.sha256).digest()
            self.add(0x001C, mac)
        else:
            mac = hmac.new(key, self.header(24) + self.body, hashlib.sha1).digest()
            self.add(0x0008, mac)
        return self

    def bytes(self, fingerprint=True):
        if fingerprint:
            crc = zlib.crc32(self.header(8) + self.body) ^ 0x5354554E
            self.add(0x8028, struct.pack("!I", crc))
        return self.header(0) + self.body


def transaction(n):
    return struct.pack("!III", 0x64756574, 0, n)  # "duet", then a counter


def channel_data(channel, payload, tcp):
    framed = struct.pack("!HH", channel, len(payload)) + payload
    return framed + b"\0" * (-len(framed) % 4) if tcp else framed


def requested_transport():
    return struct.pack("!B3x", 17)


def stun_messages(peer=PEER_V4):
    """Every request and indication a TURN client sends, in the order of a call."""
    return {
        "binding": Stun(BINDING, transaction=transaction(1)).bytes(fingerprint=False),
        "binding-fingerprint": Stun(BINDING, transaction=transaction(2)).bytes(),
        "allocate-unauthenticated": Stun(ALLOCATE, transaction=transaction(3)).add(0x0019, requested_transport()).bytes(fingerprint=False),
        "allocate-signed": Stun(ALLOCATE, transaction=transaction(4)).add(0x0019, requested_transport()).add(0x000D, struct.pack("!I", 600)).signed().bytes(),
        "allocate-sha256": Stun(ALLOCATE, transaction=transaction(5)).add(0x0019, requested_transport()).signed(sha256=True).bytes(),
        "allocate-tcp-relay": Stun(ALLOCATE, transaction=transaction(6)).add(0x0019, struct.pack("!B3x", 6)).signed().bytes(),
        "refresh-delete": Stun(REFRESH, transaction=transaction(7)).add(0x000D, struct.pack("!I", 0)).signed().bytes(),
        "create-permission": Stun(CREATE_PERMISSION, transaction=transaction(8)).peer(*peer).signed().bytes(),
        "channel-bind": Stun(CHANNEL_BIND, transaction=transaction(9)).peer(*peer).add(0x000C, struct.pack("!H2x", 0x4000)).signed().bytes(),
        "send-indication": Stun(SEND, INDICATION, transaction(10)).peer(*peer).add(0x0013, b"hello peer").bytes(fingerprint=False),
        "unknown-required-attribute": Stun(BINDING, transaction=transaction(11)).add(0x0030, b"\0\0\0\0").bytes(),
    }


def turn_client_input():
    seeds = dict(stun_messages())
    seeds["channel-data"] = channel_data(0x4000, b"media", tcp=False)
    seeds["channel-data-empty"] = channel_data(0x7FFF, b"", tcp=False)
    return seeds


def tcp_stream(setup, seconds, chunk_sizes, stream):
    """The turn_tcp_stream layout: setup, seconds per chunk, chunk sizes, the stream."""
    return bytes([setup, seconds, len(chunk_sizes)]) + bytes(size - 1 for size in chunk_sizes) + stream


def turn_tcp_stream():
    m = stun_messages()
    m6 = stun_messages(PEER_V6)
    data = channel_data(0x4000, b"media over tcp", tcp=True)
    big = channel_data(0x4000, bytes(range(256)) * 5, tcp=True)
    return {
        "control-whole": tcp_stream(0, 0, [], m["binding"] + m["allocate-unauthenticated"] + m["refresh-delete"]),
        "control-byte-by-byte": tcp_stream(0, 0, [1] * 40, m["binding-fingerprint"] + m["allocate-signed"]),
        "allocated-channel-data": tcp_stream(1, 0, [], data * 3 + m["send-indication"]),
        "allocated-split-across-reads": tcp_stream(1, 1, [3, 5, 2, 17, 1], data + m["send-indication"] + data),
        "allocated-large-channel-data": tcp_stream(1, 0, [256] * 5, big),
        "allocated-ipv6": tcp_stream(3, 0, [7], m6["send-indication"] + data + m6["create-permission"]),
        "allocated-until-expiry": tcp_stream(1, 250, [len(data)] * 4, data * 4),
        "partial-message-at-end": tcp_stream(0, 0, [], m["binding"] + m["allocate-signed"][:30]),
        "garbage-after-message": tcp_stream(0, 0, [], m["binding"] + b"\xff\x00\x00\x00junk"),
        "channel-bind-then-data": tcp_stream(1, 0, [], m["channel-bind"] + data + m["refresh-delete"]),
    }


# ---------------------------------------------------------------------------
# Signaling
# ---------------------------------------------------------------------------

TOKEN = "0123456789abcdef0123456789abcdef"

FRAMES = {
    "join": '{"type":"join","room":"demo"}',
    "join-resume": '{"type":"join","room":"demo","resume":"%s"}' % TOKEN,
    "join-resume-null": '{"type":"join","room":"demo-2_x","resume":null}',
    "leave": '{"type":"leave"}',
    "message-offer": '{"type":"message","data":{"kind":"description","description":{"type":"offer","sdp":"v=0\\r\\no=- 1 2 IN IP4 127.0.0.1\\r\\n"}}}',
    "message-candidate": '{"type":"message","data":{"kind":"candidate","candidate":{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 54400 typ host","sdpMid":"0","sdpMLineIndex":0}}}',
    "message-chat": '{"type":"message","data":{"kind":"chat","text":"h\\u00e9llo","n":[1,2.5,null,true]}}',
    "ping": '{"type":"ping","extra":[1,2]}',
    # One frame per error code the parser gives.
    "bad-json": '{"type":"join"',
    "bad-message-array": "[1,2]",
    "bad-message-type": '{"type":7}',
    "bad-message-duplicate-key": '{"type":"join","type":"join","room":"r"}',
    "unknown-type": '{"type":"dance"}',
    "bad-room": '{"type":"join","room":"a b"}',
    "bad-resume": '{"type":"join","room":"r","resume":12}',
    "message-without-data": '{"type":"message"}',
    # The `cmd` dialect of the classic course variant (crates/signaling/src/cmd.rs).
    "cmd-join": '{"cmd":"join","roomId":"r1","uid":"alice"}',
    "cmd-offer": '{"cmd":"offer","roomId":"r1","uid":"alice","remoteUid":"mate","msg":"{\\"type\\":\\"offer\\",\\"sdp\\":\\"v=0\\"}"}',
    "cmd-leave": '{"cmd":"leave","roomId":"r1","uid":"alice"}',
    "cmd-candidate": '{"cmd":"candidate","msg":"{\\"candidate\\":\\"c\\",\\"sdpMid\\":\\"0\\"}"}',
}


def signaling_frame():
    return {name: text.encode() for name, text in FRAMES.items()}


class Session:
    """The signaling_session layout: a config byte, then one byte per field."""

    def __init__(self, variant):
        self.bytes = bytearray([variant])

    def connect(self, count=1):
        self.bytes += bytes([0]) * count
        return self

    def text(self, who, text):
        raw = text.encode()
        assert len(raw) < 256
        self.bytes += bytes([1, who, len(raw)]) + raw
        return self

    def join(self, who, room, resume_from=None):
        self.bytes += bytes([2, who, room, 0 if resume_from is None else resume_from + 1])
        return self

    def leave(self, who):
        self.bytes += bytes([3, who])
        return self

    def message(self, who, size=1):
        self.bytes += bytes([4, who, size])
        return self

    def ping(self, who):
        self.bytes += bytes([5, who])
        return self

    def binary(self, who):
        self.bytes += bytes([6, who])
        return self

    def activity(self, who):
        self.bytes += bytes([7, who])
        return self

    def disconnect(self, who, lost):
        self.bytes += bytes([8, who, 1 if lost else 0])
        return self

    def advance(self, ticks):
        self.bytes += bytes([9, ticks])
        return self


DEFAULT, TIGHT, NO_GRACE = 0, 1, 2


def signaling_session():
    def pair(variant):
        return Session(variant).connect(2).join(0, 0).join(1, 0)

    seeds = {
        "call": pair(DEFAULT).message(0).message(1).ping(0).activity(1).leave(0).leave(1),
        "every-frame-as-text": Session(DEFAULT).connect(2).text(0, FRAMES["join"]).text(1, FRAMES["join"])
        .text(0, FRAMES["message-chat"]).text(1, FRAMES["ping"]).text(0, FRAMES["bad-json"])
        .text(1, FRAMES["unknown-type"]).binary(0).text(0, FRAMES["leave"]),
        "room-full": pair(DEFAULT).connect().join(2, 0),
        "lost-and-resumed": pair(DEFAULT).disconnect(0, lost=True).message(1).message(1).advance(4)
        .connect().join(2, 0, resume_from=0).message(2),
        "resume-replaces-open-connection": pair(DEFAULT).connect().join(2, 0, resume_from=0).message(1),
        "grace-runs-out": pair(DEFAULT).disconnect(0, lost=True).advance(100).connect().join(2, 0, resume_from=0),
        "silence-timeout": pair(DEFAULT).activity(0).advance(100).advance(100),
        "closed-tab": pair(DEFAULT).disconnect(1, lost=False).message(0),
        "second-room-refused": Session(DEFAULT).connect().join(0, 0).join(0, 1).join(0, 0).leave(0).leave(0),
        "rate-limited": Session(TIGHT).connect().join(0, 0).ping(0).ping(0).ping(0).ping(0).ping(0).ping(0).ping(0).ping(0),
        "away-queue-overflow": pair(TIGHT).disconnect(0, lost=True).message(1).message(1).message(1)
        .advance(2).message(1).advance(2).message(1),
        "away-queue-bytes": pair(TIGHT).disconnect(0, lost=True).advance(2).message(1, size=40),
        "too-many-rooms": Session(TIGHT).connect(3).join(0, 0).join(1, 1).join(2, 2),
        "no-grace": pair(NO_GRACE).disconnect(0, lost=True).message(1).connect().join(2, 0, resume_from=0),
    }
    return {name: bytes(session.bytes) for name, session in seeds.items()}


# ---------------------------------------------------------------------------

TARGETS = {
    "turn_client_input": turn_client_input,
    "turn_tcp_stream": turn_tcp_stream,
    "signaling_frame": signaling_frame,
    "signaling_session": signaling_session,
}


def main():
    for target, make in TARGETS.items():
        directory = CORPUS / target
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("seed-*"):
            old.unlink()
        seeds = make()
        for name, data in seeds.items():
            (directory / f"seed-{name}").write_bytes(data)
        print(f"{target}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
