"""Hosts for the multi-host tests: network namespaces (`ip netns`) joined to this one by a bridge and a
veth pair each. The services (PostgreSQL, the broker, the local provider servers) listen on the
bridge's address; a process started `in_host(i, ...)` reaches them only over its own link, which
`cut(i)` takes down as a pulled cable would. Needs root (CI runs as root)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def why_not() -> str | None:
    """Why these tests cannot make namespaces here, if so."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    if not shutil.which("ip"):
        return "the `ip` command (iproute2) is missing"
    return None


@dataclass
class Network:
    tag: str
    server: str  # the bridge's address: where the services listen
    hosts: list[str]  # namespace names

    def in_host(self, i: int, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.hosts[i], *argv]

    def cut(self, i: int) -> None:
        _ip("link", "set", f"h{self.tag}{i}", "down")

    def mend(self, i: int) -> None:
        _ip("link", "set", f"h{self.tag}{i}", "up")


@contextlib.contextmanager
def network(hosts: int) -> Iterator[Network]:
    tag = secrets.token_hex(3)  # interface names stay under 15 characters: h<tag><i>, br<tag>
    subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}"
    net = Network(tag=tag, server=f"{subnet}.1", hosts=[f"comms-{tag}-{i}" for i in range(hosts)])
    bridge = f"br{tag}"
    try:
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"{net.server}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for i, ns in enumerate(net.hosts):
            _ip("netns", "add", ns)
            _ip("link", "add", f"h{tag}{i}", "type", "veth", "peer", "name", f"n{tag}{i}")
            _ip("link", "set", f"h{tag}{i}", "master", bridge)
            _ip("link", "set", f"h{tag}{i}", "up")
            _ip("link", "set", f"n{tag}{i}", "netns", ns)
            _ip("-n", ns, "addr", "add", f"{subnet}.{10 + i}/24", "dev", f"n{tag}{i}")
            _ip("-n", ns, "link", "set", f"n{tag}{i}", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield net
    finally:
        for ns in net.hosts:  # deleting a namespace deletes its end of the veth pair, and so the pair
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", ns)
        with contextlib.suppress(RuntimeError):
            _ip("link", "del", bridge)
