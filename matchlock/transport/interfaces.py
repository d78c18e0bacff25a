"""Where LAN discovery asks: one :class:`Target` per network this machine is on.

:func:`local_targets` reads the interfaces that are up and their addresses from :mod:`psutil`
(a well-kept library, one API over ``getifaddrs`` on Linux, macOS and the BSDs and the adapter
list on Windows; never the output of ``ip`` or ``ifconfig``), and turns each into where a
query reaches the other hosts on that network:

- an IPv4 network: its directed broadcast address (the last address of the network), computed
  from the address and its netmask, because the broadcast reported is unreliable (on Linux, an
  address configured without one reports itself). A directed broadcast is routed by the
  interface's own network route, so it needs no gateway and no default route;
- an IPv4 point-to-point link (a /31, a /32 VPN): the peer's address; a loopback: its own
  address, so a host on this machine is found with no network at all;
- an IPv6 link-local address: ``ff02::1`` (every node on the link) out of that interface;
- last, the limited broadcast ``255.255.255.255``, which the system sends where its routes say
  (with no default route, most systems refuse to send it: that failure is reported, not fatal).

This module only lists; it sends nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "IPV6_ALL_NODES",
    "LIMITED_BROADCAST",
    "Target",
    "interface_of",
    "local_targets",
    "targets_of",
]

LIMITED_BROADCAST = "255.255.255.255"
"""The IPv4 broadcast address of "this network", wherever the routes send it."""

IPV6_ALL_NODES = "ff02::1"
"""The link-local multicast group every IPv6 node belongs to."""


@dataclass(frozen=True)
class Target:
    """One address a discovery query goes to: ``address``, out of ``interface`` (when '' the
    system's routes choose), for the network this machine has there (``network``: its own
    address and prefix, e.g. ``10.77.0.2/24``; '' when not one of this machine's networks).
    ``scope_id`` is the interface's index, for an IPv6 link-local multicast address."""

    address: str
    interface: str = ""
    network: str = ""
    scope_id: int = 0

    @property
    def family(self) -> socket.AddressFamily:
        """The address family of :attr:`address`."""
        return socket.AF_INET6 if ":" in self.address else socket.AF_INET

    def sockaddr(self, port: int) -> tuple[str, int] | tuple[str, int, int, int]:
        """The socket address to send to on ``port``."""
        if self.family == socket.AF_INET6:
            return (self.address, port, 0, self.scope_id)
        return (self.address, port)

    def __str__(self) -> str:
        where = f"{self.interface} " if self.interface else ""
        network = f" (for {self.network})" if self.network else ""
        return f"{where}{self.address}{network}"


def _ipv4_target(interface: str, address: str, netmask: str, peer: str | None) -> Target | None:
    network = ipaddress.IPv4Interface(f"{address}/{netmask}")
    shown = network.with_prefixlen
    if network.ip.is_loopback:
        return Target(address, interface, shown)
    if network.network.prefixlen <= 30:
        return Target(str(network.network.broadcast_address), interface, shown)
    return Target(peer, interface, shown) if peer else None


def _ipv6_target(interface: str, address: str, netmask: str | None) -> Target | None:
    bare = address.partition("%")[0]
    if not ipaddress.IPv6Address(bare).is_link_local:
        return None  # global addresses have a link-local sibling on the same link
    try:
        scope_id = socket.if_nametoindex(interface)
    except OSError:  # a name the system does not resolve (some Windows adapters)
        return None
    prefix = bin(int(ipaddress.IPv6Address(netmask))).count("1") if netmask else 64
    return Target(IPV6_ALL_NODES, interface, f"{bare}/{prefix}", scope_id)


def targets_of(
    interface: str, addresses: Iterable[tuple[int, str, str | None, str | None]]
) -> list[Target]:
    """The targets of one interface from its ``(family, address, netmask, peer)`` entries."""
    found: list[Target] = []
    for family, address, netmask, peer in addresses:
        target = None
        try:
            if family == socket.AF_INET and netmask:
                target = _ipv4_target(interface, address, netmask, peer)
            elif family == socket.AF_INET6:
                target = _ipv6_target(interface, address, netmask)
        except ValueError:  # an address or netmask the system wrote in a form we cannot read
            continue
        if target is not None and all(t.address != target.address for t in found):
            found.append(target)
    return found


def local_targets() -> list[Target]:
    """Where to ask on this machine: the targets of each interface that is up (see the module
    docstring), by interface name, then the limited broadcast."""
    import psutil  # imported on first use: only LAN discovery needs it

    up = {name for name, stats in psutil.net_if_stats().items() if stats.isup}
    targets: list[Target] = []
    for name, addresses in sorted(psutil.net_if_addrs().items()):
        if name in up:
            entries = ((a.family, a.address, a.netmask, a.ptp) for a in addresses)
            targets += targets_of(name, entries)
    targets.append(Target(LIMITED_BROADCAST))
    return targets


def interface_of(sender: str, targets: Sequence[Target]) -> str:
    """The interface of ``targets`` whose network holds ``sender`` (an answer's source address,
    ``fe80::1%eth0`` naming its own), '' when none does."""
    host, _, scope = sender.partition("%")
    if scope:
        return scope
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return ""
    for target in targets:
        if target.network and ip in ipaddress.ip_interface(target.network).network:
            return target.interface
    return ""
