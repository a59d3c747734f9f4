"""``aiops broker`` stopped by SIGTERM or SIGINT stops its tansu child (issue 18).

tansu runs in a session of its own; before, a SIGTERM ended ``aiops broker`` at once and left
tansu running, still listening on the port.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.broker import free_port, tansu_path

pytestmark = pytest.mark.integration


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(c) for c in text]
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is gone, only not reaped yet


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_broker_stops_its_tansu_child(signum, tmp_path):
    tansu_path()  # BrokerError without a tansu binary (the test extra brings one), as for every integration test
    port = free_port()
    aiops = Path(sys.executable).parent / "aiops"
    proc = subprocess.Popen([str(aiops), "broker", "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=tmp_path)
    child = None
    try:
        deadline = time.monotonic() + 30
        while not _listening(port):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "tansu never listened"
            time.sleep(0.1)
        children = _children(proc.pid)
        assert len(children) == 1 and "tansu" in Path(f"/proc/{children[0]}/cmdline").read_text()
        [child] = children
        proc.send_signal(signum)
        assert proc.wait(20) == 0, proc.stderr.read().decode()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "tansu outlived aiops broker"
        assert not _listening(port)
        with socket.socket() as s:  # and the port can be taken again
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)  # what the test found leaking: not left behind
