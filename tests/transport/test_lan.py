"""LAN discovery on loopback: who answers, about what, and what is ignored; where a member asks
(from interface entries as the system lists them); what a survey of the rooms finds. Nothing
here sends beyond 127.0.0.1 and ::1: ``test_lan_netns.py`` plays rooms across real networks."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from matchlock.app.hosting import RoomHost
from matchlock.core.client import ClientProtocol
from matchlock.tools.testing import insecure_key, pinned, signed_room
from matchlock.transport import Connection
from matchlock.transport.discovery import (
    MAX_DATAGRAM_BYTES,
    MIN_LIST_QUERY_BYTES,
    Announcement,
    Asked,
    decode_datagram,
    list_lan_rooms,
    list_query,
)
from matchlock.transport.interfaces import (
    IPV6_ALL_NODES,
    LIMITED_BROADCAST,
    Target,
    interface_of,
    targets_of,
)
from matchlock.transport.lan import LanServer, NoHostFound, discover, serve_lan
from matchlock.transport.tcp import connect_tcp
from tests.transport.contract import Accepting, closes


@pytest.fixture
async def lan(tmp_path: Path) -> AsyncIterator[tuple[RoomHost, LanServer]]:
    host = RoomHost(tmp_path)
    await host.start()
    server = await serve_lan(host, "127.0.0.1", 0, announce=("announced",), discovery_port=0)
    try:
        yield host, server
    finally:
        await host.stop()
        await server.close()


class Datagrams(asyncio.DatagramProtocol):
    """A raw UDP socket's received datagrams."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received.put_nowait(data)


async def test_an_announced_room_is_found(lan: tuple[RoomHost, LanServer]) -> None:
    _, server = lan
    found = await discover("announced", 2.0, server.discovery_address[1], "127.0.0.1")
    assert found == ("127.0.0.1", server.address[1])


async def open_room(server: LanServer, room_id: str) -> Connection:
    """A member's connection that has made the host open ``room_id`` (it joined)."""
    config = signed_room(room_id, ["ann", "ben"], pinned({"chars/kfm": 10}))
    member = ClientProtocol(config, "ann", insecure_key("ann"))
    conn = await connect_tcp(*server.address)
    conn.send_nowait(member.hello())
    for frame in member.receive(await conn.recv()).sends:  # the challenge's answer
        conn.send_nowait(frame)
    assert member.receive(await conn.recv()).joined
    return conn


async def test_a_room_the_host_holds_is_found(lan: tuple[RoomHost, LanServer]) -> None:
    host, server = lan
    conn = await open_room(server, "opened-later")
    assert host.holds("opened-later")
    found = await discover("opened-later", 2.0, server.discovery_address[1], "127.0.0.1")
    assert found == ("127.0.0.1", server.address[1])
    await conn.close()


async def test_nobody_answers_about_a_room_not_hosted(lan: tuple[RoomHost, LanServer]) -> None:
    _, server = lan
    with pytest.raises(NoHostFound, match="'elsewhere'"):
        await discover("elsewhere", 0.3, server.discovery_address[1], "127.0.0.1")


GARBAGE = [
    b"not json",
    b"\xff\xfe",
    b"[1, 2]",
    json.dumps({"matchlock": 2, "query": "announced"}).encode(),
    json.dumps({"matchlock": 1, "query": ["announced"]}).encode(),
    json.dumps({"matchlock": 1, "room_id": "announced", "port": 1}).encode(),  # an answer
    json.dumps({"matchlock": 1, "query": "announced", "pad": "x" * 2000}).encode(),
]


@pytest.mark.parametrize(
    "datagram",
    [b"[" * 1000, b'{"a":' * 600, b"\xff\xfe", b'{"matchlock": 1}' + b" " * MAX_DATAGRAM_BYTES],
    ids=["nested-arrays", "nested-objects", "not-utf-8", "too-long"],
)
def test_hostile_datagrams_decode_to_nothing(datagram: bytes) -> None:
    assert decode_datagram(datagram) is None


@given(st.binary(max_size=MAX_DATAGRAM_BYTES + 8))
def test_no_datagram_makes_the_decoder_raise(datagram: bytes) -> None:
    found = decode_datagram(datagram)
    assert found is None or found["matchlock"] == 1


async def test_anything_but_a_query_gets_no_answer() -> None:
    server = await serve_lan(Accepting(), "127.0.0.1", 0, announce=("announced",), discovery_port=0)
    loop = asyncio.get_running_loop()
    transport, socket = await loop.create_datagram_endpoint(
        Datagrams, remote_addr=server.discovery_address
    )
    try:
        for datagram in GARBAGE:
            transport.sendto(datagram)
        transport.sendto(json.dumps({"matchlock": 1, "query": "announced"}).encode())
        async with asyncio.timeout(2):  # loopback keeps the order: garbage would answer first
            answer = json.loads(await socket.received.get())
        assert answer == {"matchlock": 1, "room_id": "announced", "port": server.address[1]}
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await socket.received.get()
    finally:
        transport.close()
        await server.close()


# -- where a member asks -----------------------------------------------------------------------


def test_each_network_is_asked_at_its_directed_broadcast_address() -> None:
    entries = [
        (socket.AF_INET, "10.77.0.2", "255.255.255.0", "10.77.0.2"),  # Linux's bogus broadcast
        (socket.AF_INET, "10.77.0.9", "255.255.255.0", None),  # a second address, same network
        (socket.AF_INET, "192.168.5.7", "255.255.254.0", None),
    ]
    assert targets_of("eth0", entries) == [
        Target("10.77.0.255", "eth0", "10.77.0.2/24"),
        Target("192.168.5.255", "eth0", "192.168.5.7/23"),
    ]


def test_a_point_to_point_link_is_asked_at_its_peer_and_a_loopback_at_itself() -> None:
    assert targets_of("tun0", [(socket.AF_INET, "10.8.0.6", "255.255.255.255", "10.8.0.5")]) == [
        Target("10.8.0.5", "tun0", "10.8.0.6/32")
    ]
    assert targets_of("tun1", [(socket.AF_INET, "10.9.0.6", "255.255.255.255", None)]) == []
    assert targets_of("lo", [(socket.AF_INET, "127.0.0.1", "255.0.0.0", None)]) == [
        Target("127.0.0.1", "lo", "127.0.0.1/8")
    ]


def test_ipv6_is_asked_on_the_link_of_a_link_local_address_only() -> None:
    mask = "ffff:ffff:ffff:ffff::"
    entries = [
        (socket.AF_INET6, "2001:db8::5", mask, None),
        (socket.AF_INET6, "fe80::5%lo", mask, None),
        (socket.AF_INET6, "not an address", mask, None),
    ]
    index = socket.if_nametoindex("lo")
    assert targets_of("lo", entries) == [Target(IPV6_ALL_NODES, "lo", "fe80::5/64", index)]


def test_an_answer_is_tied_to_the_interface_of_its_network() -> None:
    targets = [Target("10.77.0.255", "eth0", "10.77.0.2/24"), Target(LIMITED_BROADCAST)]
    assert interface_of("10.77.0.1", targets) == "eth0"
    assert interface_of("fe80::1%wlan0", targets) == "wlan0"
    assert interface_of("10.78.0.1", targets) == ""


async def test_nobody_answering_names_every_address_asked() -> None:
    with pytest.raises(NoHostFound) as raised:
        await discover("lonely", 0.2, free_port(), "127.0.0.1")
    assert raised.value.asked == (Asked(Target("127.0.0.1")),)
    assert "asked on UDP port" in str(raised.value) and "\n  - 127.0.0.1\n" in str(raised.value)


# -- what hosts announce -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_survey_lists_the_announced_and_the_open_rooms_not_quarantined(
    lan: tuple[RoomHost, LanServer],
) -> None:
    host, server = lan
    opened, damaged = await open_room(server, "opened"), await open_room(server, "damaged")
    host.core.quarantine("damaged", "its log is damaged")
    found = await list_lan_rooms(0.3, server.discovery_address[1], "127.0.0.1")
    tcp_port = server.address[1]
    assert found.rooms == (
        Announcement("announced", "127.0.0.1", tcp_port, ""),
        Announcement("opened", "127.0.0.1", tcp_port, ""),
    )
    assert found.rooms[0].url == f"tcp://127.0.0.1:{tcp_port}"
    assert found.asked == (Asked(Target("127.0.0.1")),)
    await opened.close()
    await damaged.close()


async def test_an_ended_room_is_no_longer_listed_but_is_still_found_by_its_id(
    lan: tuple[RoomHost, LanServer],
) -> None:
    host, server = lan
    conn = await open_room(server, "ended")
    assert host.active_rooms() == ["ended"]
    host.abort("ended", "the match was called off")
    await closes(conn)
    assert host.active_rooms() == []
    assert host.holds("ended")
    found = await list_lan_rooms(0.3, server.discovery_address[1], "127.0.0.1")
    assert [room.room_id for room in found.rooms] == ["announced"]
    # a member that missed the end can still find the host, and be told the room ended
    found_host = await discover("ended", 2.0, server.discovery_address[1], "127.0.0.1")
    assert found_host == ("127.0.0.1", server.address[1])


async def test_a_host_with_more_rooms_than_one_answer_holds_is_asked_again(
    tmp_path: Path,
) -> None:
    rooms = [f"room-{n:02}-" + "x" * 50 for n in range(40)]  # ~70 bytes each: 4 answers
    server = await serve_lan(Accepting(), "127.0.0.1", 0, announce=rooms, discovery_port=0)
    try:
        found = await list_lan_rooms(0.3, server.discovery_address[1], "127.0.0.1")
    finally:
        await server.close()
    assert [room.room_id for room in found.rooms] == rooms


async def ask(address: tuple[str, int], datagram: bytes, wait: float = 0.3) -> list[bytes]:
    """Every datagram that answers ``datagram`` within ``wait`` seconds."""
    loop = asyncio.get_running_loop()
    transport, socket_ = await loop.create_datagram_endpoint(Datagrams, remote_addr=address)
    transport.sendto(datagram)
    await asyncio.sleep(wait)
    transport.close()
    return [socket_.received.get_nowait() for _ in range(socket_.received.qsize())]


async def test_an_answer_is_never_much_longer_than_its_query() -> None:
    rooms = [f"room-{n:03}" for n in range(200)]
    server = await serve_lan(Accepting(), "127.0.0.1", 0, announce=rooms, discovery_port=0)
    try:
        short = json.dumps({"matchlock": 1, "list": True, "after": ""}).encode()
        assert len(short) < MIN_LIST_QUERY_BYTES
        assert await ask(server.discovery_address, short) == []
        query = list_query("room-010")
        (answer,) = await ask(server.discovery_address, query)
        about_one = b'{"matchlock":1,"query":"room-000"}'
        (room_answer,) = await ask(server.discovery_address, about_one)
        tcp_port = server.address[1]
    finally:
        await server.close()
    assert len(answer) <= len(query) == MAX_DATAGRAM_BYTES
    assert len(room_answer) <= len(about_one) + 15  # the room id it was sent, and a port
    page = json.loads(answer)
    assert page["more"] is True and page["port"] == tcp_port
    assert page["rooms"][0] == "room-011" and page["rooms"] == sorted(page["rooms"])


HOSTILE_ANSWERS = [
    {"port": 7500, "rooms": ["../etc", "ok-room", 7, "x" * 65]},
    {"port": 0, "rooms": ["zero-port"]},
    {"port": True, "rooms": ["boolean-port"]},
    {"port": 7500, "rooms": "not-a-list"},
    {"room_id": "a-query-answer", "port": 7500},
]


class Liar(asyncio.DatagramProtocol):
    """A 'host' answering every datagram with :data:`HOSTILE_ANSWERS`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        for answer in HOSTILE_ANSWERS:
            self.transport.sendto(json.dumps({"matchlock": 1, **answer}).encode(), addr)


async def test_a_survey_keeps_only_well_formed_rooms() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Liar, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        found = await list_lan_rooms(0.3, port, "127.0.0.1")
    finally:
        transport.close()
    assert found.rooms == (Announcement("ok-room", "127.0.0.1", 7500, ""),)


async def test_a_wildcard_host_also_answers_and_serves_over_ipv6(tmp_path: Path) -> None:
    server = await serve_lan(Accepting(), "0.0.0.0", 0, announce=("both",), discovery_port=0)
    try:
        found = await discover("both", 2.0, server.discovery_address[1], "::1")
        assert found == ("::1", server.address[1])
        conn = await connect_tcp(*found)
        await conn.close()
    finally:
        await server.close()
