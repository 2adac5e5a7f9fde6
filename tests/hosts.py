"""Separate hosts on one machine, for the tests: network namespaces on one switch.

Each host is a network namespace with its own loopback and one address on a private /24,
joined to the others by a veth pair to a bridge, which lies in a namespace of its own (the
switch): nothing changes in the machine's own network, and 127.0.0.1 on one host is not
another host's server. A command runs on a host through `ip netns exec` (iproute2, as root);
this test process talks from a host with `Host.call`, which runs a function on a thread moved
into the host's namespace (a network namespace is a thread's, not a process's).

    with network("server", "alice") as hosts:
        hosts["server"].popen([...])        # a server on 10.77.0.1
        hosts["alice"].run([...])           # reaches it at hosts["server"].address

On leaving, every process left on a host is killed and the namespaces are deleted, even when
the test failed; a run killed before that has its namespaces swept by the next.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil
import pytest

SUBNET = "10.77.0"  # every network is its own, so every network may use the same addresses
PREFIX = "mnistcnn-"  # namespaces are named PREFIX<pid>-<host>: the sweep knows whose they are
CLONE_NEWNET = 0x40000000


def ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")


@dataclass(frozen=True)
class Host:
    name: str
    namespace: str
    address: str

    def command(self, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *args]

    def run(self, args: list[str], timeout: float = 600, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """`args` on this host, its output captured; fails the test with the output unless it exits 0 (`check`)."""
        result = subprocess.run(self.command(args), capture_output=True, text=True, timeout=timeout, **kwargs)
        assert not check or result.returncode == 0, \
            f"on {self.name}: {args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        return result

    def popen(self, args: list[str], **kwargs) -> subprocess.Popen:
        """`args` started on this host; `ip netns exec` execs it, so the process is the command's own."""
        return subprocess.Popen(self.command(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                **kwargs)

    def call(self, function: Callable, *args, **kwargs):
        """function(*args, **kwargs) from this host: on a thread in its namespace; returns what it returns."""
        outcome: dict = {}

        def inside() -> None:
            try:
                fd = os.open(f"/run/netns/{self.namespace}", os.O_RDONLY)
                try:
                    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns into {self.namespace}")
                finally:
                    os.close(fd)
                outcome["value"] = function(*args, **kwargs)
            except BaseException as err:  # re-raised in the caller
                outcome["error"] = err

        thread = threading.Thread(target=inside, name=f"on-{self.name}")
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]


def _clear(namespace: str) -> None:
    """Kill every process on the namespace, then delete it."""
    pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in pids:
        try:
            psutil.Process(int(pid)).wait(10)
        except (psutil.NoSuchProcess, psutil.TimeoutExpired):
            pass
    subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def _sweep() -> None:
    """The namespaces of test runs that died before deleting theirs."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n")
    for namespace in (line.split()[0] for line in listed if line.startswith(PREFIX)):
        owner = namespace.removeprefix(PREFIX).split("-", 1)[0]
        if owner.isdigit() and not psutil.pid_exists(int(owner)):
            _clear(namespace)


@contextmanager
def network(*names: str) -> Iterator[dict[str, Host]]:
    """Hosts `names` on one switch, at SUBNET.1, .2, ... in that order; all gone on leaving."""
    _sweep()
    switch = f"{PREFIX}{os.getpid()}-switch"
    made = []
    try:
        try:
            ip("netns", "add", switch)
            made.append(switch)
            ip("-n", switch, "link", "add", "br0", "type", "bridge")
            ip("-n", switch, "link", "set", "br0", "up")
            hosts = {}
            for number, name in enumerate(names, start=1):
                host = Host(name, f"{PREFIX}{os.getpid()}-{name}", f"{SUBNET}.{number}")
                ip("netns", "add", host.namespace)
                made.append(host.namespace)
                ip("-n", switch, "link", "add", f"port{number}", "type", "veth", "peer", "name", "eth0",
                   "netns", host.namespace)
                ip("-n", switch, "link", "set", f"port{number}", "master", "br0", "up")
                ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
                ip("-n", host.namespace, "link", "set", "eth0", "up")
                ip("-n", host.namespace, "link", "set", "lo", "up")
                hosts[name] = host
        except (OSError, FileNotFoundError) as err:
            pytest.fail(f"cannot make the test's hosts (network namespaces need root and iproute2): {err}",
                        pytrace=False)
        yield hosts
    finally:
        for namespace in reversed(made):
            _clear(namespace)
