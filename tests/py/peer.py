"""A py-libp2p peer for meshtalk's interop tests.

It speaks what PROTOCOL.md asks of another implementation and uses nothing
of meshtalk's code: TCP and WebSocket with Noise and Yamux, QUIC v1 and
WebRTC-direct, gossipsub (or floodsub) with strict signing, and room
messages encoded and decoded by Python's protobuf library from code that
protoc generates from
crates/protocol/proto/meshtalk.proto. It is the Python twin of
tests/js/node-peer.mjs and takes the same flags and JSON lines:

    python peer.py --room R --nick N [--dial ADDR]... [--listen ADDR]...
                   [--pubsub gossipsub|floodsub]

stdout, one JSON object a line:
    {"type":"ready","peer":ID,"addrs":[...]}       listening, every --dial done
    {"type":"connected","peer":ID,"addr":A}         a connection opened
    {"type":"message","from":ID,"nick":N,"text":T}  a room line (nick may be null)
    {"type":"nick","from":ID,"nick":N}              an UPDATE_PEER
    {"type":"rejected","from":ID,"error":E}         a room message that did not decode
    {"type":"error","error":E}                      a command failed
stdin, one line a command: `/nick NAME`, `/dial ADDR`, or text to say.
EOF on stdin stops the peer (exit 0). A bad flag or address, a failed
--listen or --dial, is one line on stderr and exit 1.

The code for meshtalk.proto is generated on first use into $MESHTALK_PY_GEN
(default: a folder in the system's temp directory), so `pip install -r
requirements.txt` is the only setup. py-libp2p's own logs are off unless
LIBP2P_DEBUG is set (e.g. LIBP2P_DEBUG=DEBUG, or pubsub.gossipsub:DEBUG).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
from pathlib import Path
import secrets
import sys
import tempfile
import time
from types import ModuleType
from typing import Any

import multiaddr
import trio

from libp2p import generate_new_ed25519_identity, new_host
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.host.basic_host import BasicHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub import floodsub, gossipsub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import (
    PROTOCOL_ID as NOISE_PROTOCOL_ID,
    Transport as NoiseTransport,
)
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID, Yamux
from libp2p.tools.anyio_service import background_trio_service

PROTO = Path(__file__).resolve().parents[2] / "crates/protocol/proto/meshtalk.proto"

# How long a --dial or /dial may take.
DIAL_TIMEOUT = 30.0
# PROTOCOL.md: announce again for a newcomer at most once per 2 seconds.
ANNOUNCE_INTERVAL = 2.0
# How long a publish waits for a peer to hear it (see Room.wait_for_audience).
AUDIENCE_TIMEOUT = 10.0


class StartupError(Exception):
    """A failure before the peer is ready: one line on stderr, exit 1."""


def reason(err: BaseException) -> str:
    """What went wrong, from the innermost of the errors py-libp2p wraps
    one in another (a failed dial: "unable to connect ... (with exceptions)"
    around "fail to open connection" around the socket's error)."""
    while True:
        wrapped = getattr(err, "errors", None) or getattr(err, "exceptions", None) or ()
        inner = err.__cause__ or next(iter(wrapped), None)
        if inner is None:
            return str(err) or type(err).__name__
        err = inner


def emit(event: dict[str, Any]) -> None:
    """Writes one JSON line on stdout."""
    sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
    sys.stdout.flush()


# --- meshtalk.proto ---------------------------------------------------------


def load_meshtalk_pb2() -> ModuleType:
    """Imports meshtalk_pb2, generating it with protoc first if needed.

    The module goes in a folder named after a hash of the .proto file, so an
    edited .proto gets fresh code. protoc writes into a private temporary
    folder and the result is renamed into place, so peers that start at the
    same time never read a half-written file.
    """
    source = PROTO.read_bytes()
    default_root = Path(tempfile.gettempdir()) / "meshtalk-py-gen"
    root = Path(os.environ.get("MESHTALK_PY_GEN") or default_root)
    folder = root / hashlib.sha256(source).hexdigest()[:16]
    module_path = folder / "meshtalk_pb2.py"
    if not module_path.exists():
        # grpc_tools.protoc is what `python -m grpc_tools.protoc` runs: protoc
        # built into a Python package, no system protoc needed.
        from grpc_tools import protoc

        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as scratch:
            status = protoc.main(
                ["protoc", f"-I{PROTO.parent}", f"--python_out={scratch}", str(PROTO)]
            )
            if status != 0:
                raise StartupError(f"protoc failed on {PROTO} (exit status {status})")
            os.replace(Path(scratch) / "meshtalk_pb2.py", module_path)
    spec = importlib.util.spec_from_file_location("meshtalk_pb2", module_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- command line -----------------------------------------------------------


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line and exit 1, like every other startup error.
        raise StartupError(message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(prog="peer.py", description=__doc__.splitlines()[0])
    parser.add_argument("--room", default="lobby")
    parser.add_argument("--nick", default="")
    parser.add_argument("--dial", action="append", default=[], metavar="ADDR")
    parser.add_argument("--listen", action="append", default=[], metavar="ADDR")
    parser.add_argument("--pubsub", choices=["gossipsub", "floodsub"], default="gossipsub")
    return parser.parse_args(argv)


# --- the peer ---------------------------------------------------------------


def parse_addr(text: str) -> multiaddr.Multiaddr:
    try:
        return multiaddr.Multiaddr(text)
    except Exception as err:
        raise ValueError(f"bad multiaddr {text!r}: {err}") from err


class ConnectionPrinter(INotifee):
    """Prints a `connected` line for every connection the swarm opens.

    The address is null on WebSocket connections: py-libp2p 0.8.1 does not
    know their remote address (its WebSocket connection's
    get_remote_address is a stub that returns None), nor on a
    WebRTC-direct connection it accepts.
    """

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        addrs = conn.get_transport_addresses()
        emit(
            {
                "type": "connected",
                "peer": str(conn.muxed_conn.peer_id),
                "addr": str(addrs[0]) if addrs else None,
            }
        )

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        pass

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        pass

    async def listen(self, network: INetwork, addr: multiaddr.Multiaddr) -> None:
        pass

    async def listen_close(self, network: INetwork, addr: multiaddr.Multiaddr) -> None:
        pass


class RoomPubsub(Pubsub):
    """py-libp2p's Pubsub, telling `on_subscribe` when a peer subscribes.

    Pubsub has no event for remote subscriptions (js-libp2p's
    `subscription-change`); this hook is how the peer learns of a newcomer
    that is connected to it directly.
    """

    on_subscribe: Any = None

    def handle_subscription(self, origin_id: ID, sub_message: rpc_pb2.RPC.SubOpts) -> None:
        topic = sub_message.topicid
        # A peer may repeat a subscription (its hello and a later announce);
        # only the first one is news.
        known = origin_id in self.peer_topics.get(topic, ())
        super().handle_subscription(origin_id, sub_message)
        if sub_message.subscribe and not known and self.on_subscribe is not None:
            self.on_subscribe(origin_id, topic)


def make_router(kind: str) -> gossipsub.GossipSub | floodsub.FloodSub:
    if kind == "floodsub":
        return floodsub.FloodSub([floodsub.PROTOCOL_ID])
    return gossipsub.GossipSub(
        # The versions meshtalk speaks (rust-libp2p's gossipsub 0.50 offers
        # /meshsub/1.3.0 down to 1.0.0), newest first: multistream-select
        # tries them in this order when we open the stream, and the first
        # the other side knows wins. py-libp2p also has 1.4.0 and 2.0.0.
        protocols=[
            gossipsub.PROTOCOL_ID_V13,
            gossipsub.PROTOCOL_ID_V12,
            gossipsub.PROTOCOL_ID_V11,
            gossipsub.PROTOCOL_ID,
        ],
        # Gossipsub's usual mesh degrees (D, D_lo, D_hi), as rust-libp2p's.
        degree=6,
        degree_low=5,
        degree_high=12,
        # py-libp2p's default heartbeat is 120 s; a mesh that a GRAFT did
        # not fill, gossip (IHAVE) and fanout all wait for it. 1 s, as
        # gossipsub's spec (meshtalk: 0.7 s).
        heartbeat_interval=1,
        heartbeat_initial_delay=0.1,
        # py-libp2p's spam protection forwards at most 10 messages a second
        # per topic from one peer, ourselves included: the 11th line typed
        # within a second would silently never leave, and neither would the
        # 11th message a second that a relay hands us for our other peers.
        spam_protection_enabled=False,
    )


class Room:
    """One meshtalk room: its topic, nicknames, announces and chat lines."""

    def __init__(self, pb2: ModuleType, host: BasicHost, pubsub: RoomPubsub, room: str, nick: str):
        self.pb2 = pb2
        self.pubsub = pubsub
        self.topic = f"meshtalk/room/{room}"
        self.nick = nick
        self.me = host.get_id()
        self.nicks: dict[str, str] = {}
        self.members: set[str] = set()
        self.last_announce = 0.0
        self.announce_pending = False
        self.nursery: trio.Nursery | None = None

    # Decoding and validation

    def decode(self, data: bytes) -> Any:
        """Decodes a room message, raising ValueError if it is not one.

        protobuf's ParseFromString checks proto2's required fields, so a
        Request without `type`, or a SendMessage without `id`, fails here.
        """
        request = self.pb2.Request()
        try:
            request.ParseFromString(data)
        except Exception as err:
            raise ValueError(str(err) or type(err).__name__) from err
        Request = self.pb2.Request
        if request.type == Request.SEND_MESSAGE:
            if not request.HasField("sendMessage"):
                raise ValueError("SEND_MESSAGE without sendMessage")
            request.sendMessage.data.decode("utf-8")
        elif request.type == Request.UPDATE_PEER:
            if not request.HasField("updatePeer"):
                raise ValueError("UPDATE_PEER without updatePeer")
            request.updatePeer.userHandle.decode("utf-8")
        else:
            raise ValueError(f"unknown type {request.type}")
        return request

    def validate(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """Pubsub's topic validator: a message that does not decode is
        reported and rejected, so it is neither delivered nor forwarded."""
        try:
            self.decode(msg.data)
        except (ValueError, UnicodeDecodeError) as err:
            emit({"type": "rejected", "from": str(ID(msg.from_id)), "error": str(err)})
            return False
        return True

    # Publishing

    def has_audience(self) -> bool:
        """True when a published message will reach some peer right away."""
        router = self.pubsub.router
        if isinstance(router, gossipsub.GossipSub):
            # Gossipsub sends our own messages to the topic's mesh only.
            return bool(router.mesh.get(self.topic))
        return bool(self.pubsub.peer_topics.get(self.topic))

    async def wait_for_audience(self) -> None:
        """Waits, for AUDIENCE_TIMEOUT at most, until a peer will hear us.

        Right after a connection opens, gossipsub has the peer's subscription
        but not yet a mesh with it; py-libp2p would then drop a message that
        js-libp2p (allowPublishToZeroTopicPeers) sends to the topic's peers.
        """
        with trio.move_on_after(AUDIENCE_TIMEOUT):
            while not self.has_audience():
                await trio.sleep(0.05)

    async def publish(self, request: Any) -> None:
        await self.wait_for_audience()
        await self.pubsub.publish(self.topic, request.SerializeToString())

    async def say(self, text: str) -> None:
        request = self.pb2.Request(type=self.pb2.Request.SEND_MESSAGE)
        request.sendMessage.data = text.encode("utf-8")
        request.sendMessage.created = int(time.time() * 1000)
        request.sendMessage.id = secrets.token_bytes(16)
        await self.publish(request)

    async def announce(self) -> None:
        """UPDATE_PEER with our nickname: on joining, and for newcomers."""
        request = self.pb2.Request(type=self.pb2.Request.UPDATE_PEER)
        request.updatePeer.userHandle = self.nick.encode("utf-8")
        await self.publish(request)
        self.last_announce = time.monotonic()

    def announce_soon(self) -> None:
        """Announces again for a newcomer: at once, or 2 s after the last
        announce; several newcomers in that time share one announce."""
        if self.announce_pending or self.nursery is None:
            return
        self.announce_pending = True

        async def later() -> None:
            try:
                wait = self.last_announce + ANNOUNCE_INTERVAL - time.monotonic()
                await trio.sleep(max(0.0, wait))
                await run_command(self.announce())
            finally:
                # Only now: a newcomer seen while the announce waited for an
                # audience hears this one.
                self.announce_pending = False

        self.nursery.start_soon(later)

    def on_subscribe(self, peer: ID, topic: str) -> None:
        if topic == self.topic:
            self.announce_soon()

    # Receiving

    async def receive(self, subscription: Any) -> None:
        while True:
            msg = await subscription.get()
            source = ID(msg.from_id)
            if source == self.me:
                # Pubsub hands us our own messages too.
                continue
            sender = str(source)
            if sender not in self.members:
                self.members.add(sender)
                self.announce_soon()
            # The validator let it through, so it decodes.
            request = self.decode(msg.data)
            if request.type == self.pb2.Request.UPDATE_PEER:
                nick = request.updatePeer.userHandle.decode("utf-8")
                self.nicks[sender] = nick
                emit({"type": "nick", "from": sender, "nick": nick})
            else:
                text = request.sendMessage.data.decode("utf-8")
                nick = self.nicks.get(sender)
                emit({"type": "message", "from": sender, "nick": nick, "text": text})


async def run_command(work: Any) -> None:
    """Runs a command's coroutine; a failure is an `error` line, not a crash."""
    try:
        await work
    except Exception as err:
        emit({"type": "error", "error": reason(err)})


def peer_info(text: str) -> PeerInfo:
    """The peer id and address in a multiaddr that ends with /p2p/ID."""
    addr = parse_addr(text)
    if addr.get_peer_id() is None:
        raise ValueError(f"{text} does not end with /p2p/PEER_ID")
    return info_from_p2p_addr(addr)


async def dial(host: BasicHost, text: str) -> None:
    info = peer_info(text)
    try:
        with trio.fail_after(DIAL_TIMEOUT):
            await host.connect(info)
    except trio.TooSlowError:
        raise TimeoutError(f"no connection within {DIAL_TIMEOUT:g} s") from None


async def read_commands(room: Room, host: BasicHost, nursery: trio.Nursery) -> None:
    """Reads stdin until EOF, one command a line.

    Lines are said one after the other, so they go out in the order they
    were typed (trio runs tasks started together in no fixed order); a dial
    runs on its own, since it may take a while.
    """
    async for raw in trio.wrap_file(sys.stdin):
        line = raw.rstrip("\r\n")
        if line.startswith("/nick "):
            room.nick = line[len("/nick "):]
            await run_command(room.announce())
        elif line.startswith("/dial "):
            nursery.start_soon(run_command, dial(host, line[len("/dial "):]))
        elif line:
            await run_command(room.say(line))


async def run(args: argparse.Namespace) -> None:
    if not os.environ.get("LIBP2P_DEBUG"):
        # With no handler of its own, py-libp2p's warnings and errors (a
        # refused dial alone logs four) would go to stderr through logging's
        # last-resort handler.
        logging.getLogger("libp2p").addHandler(logging.NullHandler())
    pb2 = load_meshtalk_pb2()
    try:
        listen = [parse_addr(a) for a in args.listen]
        # Checked before the host exists, so a typo fails at once.
        for addr in args.dial:
            peer_info(addr)
    except Exception as err:
        raise StartupError(str(err)) from err

    # An Ed25519 identity, as meshtalk's. By default py-libp2p would also
    # offer TLS, SECIO and plaintext, and Mplex; meshtalk speaks Noise and
    # Yamux, and so does this peer. Noise needs a static X25519 key of its own.
    key_pair = generate_new_ed25519_identity()
    noise = NoiseTransport(key_pair, noise_privkey=new_x25519_key_pair().private_key)
    host = new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={YAMUX_PROTOCOL_ID: Yamux},
        # TCP, WebSocket, QUIC v1 and WebRTC-direct, for dialing and
        # listening alike. (Given listen_addrs, new_host would make only the
        # transports those addresses need, and a /ws address could not be
        # dialed from a peer that listens on TCP; the addresses go to
        # host.run instead.) QUIC brings its own libp2p TLS, not the Noise
        # above; WebRTC-direct needs aiortc (libp2p's `webrtc` extra).
        enable_tcp=True,
        enable_websocket=True,
        enable_quic=True,
        enable_webrtc=True,
    )
    assert isinstance(host, BasicHost)
    host.get_network().register_notifee(ConnectionPrinter())

    router = make_router(args.pubsub)
    pubsub = RoomPubsub(host, router, strict_signing=True)
    room = Room(pb2, host, pubsub, args.room, args.nick)
    pubsub.on_subscribe = room.on_subscribe
    pubsub.set_topic_validator(room.topic, room.validate, is_async_validator=False)

    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(host.run(listen_addrs=[]))
        # One address at a time: the swarm reports success if any address
        # worked, and only logs why one failed.
        for addr in listen:
            if not await host.get_network().listen(addr):
                raise StartupError(f"cannot listen on {addr}")
        await stack.enter_async_context(background_trio_service(pubsub))
        if isinstance(router, gossipsub.GossipSub):
            # Gossipsub's heartbeat is a service of its own; floodsub has none.
            await stack.enter_async_context(background_trio_service(router))
        nursery = await stack.enter_async_context(trio.open_nursery())

        await pubsub.wait_until_ready()
        subscription = await pubsub.subscribe(room.topic)
        room.nursery = nursery
        nursery.start_soon(room.receive, subscription)

        for addr in args.dial:
            try:
                await dial(host, addr)
            except Exception as err:
                raise StartupError(f"cannot dial {addr}: {reason(err)}") from err

        addrs = [str(a) for a in host.get_addrs()] if listen else []
        emit({"type": "ready", "peer": str(room.me), "addrs": addrs})
        room.announce_soon()

        await read_commands(room, host, nursery)
        nursery.cancel_scope.cancel()


def startup_error(exc: BaseException) -> StartupError | None:
    """The StartupError in `exc`: trio wraps what a task raises inside a
    nursery in an ExceptionGroup (nested once per nursery it crosses)."""
    if isinstance(exc, StartupError):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = startup_error(inner)
        if found is not None:
            return found
    return None


def main() -> int:
    # UTF-8 both ways whatever the locale (the tests may run with LANG=C).
    sys.stdin.reconfigure(encoding="utf-8", errors="replace")  # type: ignore[union-attr]
    sys.stdout.reconfigure(encoding="utf-8")  # type: ignore[union-attr]
    try:
        trio.run(run, parse_args(sys.argv[1:]))
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        err = startup_error(exc)
        if err is None:
            raise
        print(f"peer.py: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
