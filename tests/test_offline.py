"""The tests themselves stay offline: connections outside this machine are refused, in this process and in the
processes tests start, and a test that tries one fails."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import train_env
from offline import network_guard


def test_a_connection_outside_this_machine_is_refused_and_recorded() -> None:
    with pytest.raises(network_guard.NetworkAccessInTest):
        socket.create_connection(("192.0.2.1", 80), timeout=1)  # TEST-NET-1: never routed
    assert network_guard.ATTEMPTS == ["('192.0.2.1', 80)"]
    network_guard.ATTEMPTS.clear()  # this test made the attempt on purpose


def test_loopback_stays_usable() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=5):
            pass
    assert network_guard.ATTEMPTS == []


def test_processes_started_by_tests_are_offline_too(tmp_path: Path) -> None:
    script = "import socket; socket.create_connection(('192.0.2.1', 80), timeout=1)"
    process = subprocess.run(
        [sys.executable, "-c", script], env=train_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert process.returncode != 0
    assert "tests must not use the network" in process.stderr
