"""MQTT in one place: the only module that imports aiomqtt or paho.

* :func:`broker_address` — ``mqtt://`` / ``mqtts://`` URLs;
* :func:`client` — an :class:`aiomqtt.Client` configured as memed uses it (persistent session for the
  daemon, no in-flight window: see :func:`publish_many`);
* :func:`publish_many` — many QoS-1 publishes acknowledged in bulk;
* :func:`ack` — the manual acknowledgement of a received message;
* :func:`received_before_disconnect` — messages paho received before a connection dropped;
* :class:`Link` — the daemon's current connection, for the sinks that publish on it.

``aiomqtt.Client.publish`` costs ~0.36 ms per QoS-1 message on this kind of machine (an Event, a
``wait_for`` task and an O(pending) scan per call): 10,000 signals a minute would take 3.6 s.
:func:`publish_many` hands every message of a batch to the underlying paho client at once (paho queues the
packets; the event loop writes them in bulk), and one coroutine waits until paho has seen every PUBACK.
Measured with Mosquitto on loopback, 300-byte messages: 2,000 took 720 ms through ``Client.publish`` in
windows of 500, and 180 ms here; 10,000 take 0.72 s here. The client must be created with
``max_inflight_messages=0``: paho's in-flight window rescans every queued message on each PUBACK
(quadratic; 10,000 messages took 6.7 s).

A large message (a minute's signals on the batch topic: 4.6 MB at 10,000 tokens) is written as a
``memoryview`` of its packet: paho writes ``packet[pos:]`` on every partial socket write, which copies the
rest of a ``bytes`` packet each time (quadratic in its size). Measured on loopback: 4.6 MB published and
acknowledged in 13.2 → 8.0 ms, 20 MB in 56 → 28 ms.

This reaches into two private attributes of aiomqtt 2.x (``Client._client``, the paho client, and
``Client._queue``, the received messages), paho 2.x's queue of outgoing packets
(``Client._out_packet``) and its ``MQTTMessageInfo``;
:func:`check_private_api` says clearly which one a new release took away (a test runs it against a real
broker, and the daemon at every connection), and ``pyproject.toml`` pins both to their major version.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any
from urllib.parse import urlparse

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt import __version__ as paho_version

from memed.errors import ConfigError, MemedError

MqttError = aiomqtt.MqttError
"""What a lost or refused connection raises."""
LARGE_MESSAGE = 256 * 1024
"""Bytes from which a message is written as a memoryview (see the module's description)."""


def broker_address(url: str) -> tuple[str, int, bool]:
    """``(host, port, tls)`` of an ``mqtt://host[:port]`` or ``mqtts://host[:port]`` URL."""
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "mqtts", "tcp") or not parsed.hostname:
        raise ConfigError(f"daemon.broker_url: {url!r} is not mqtt://host[:port] or mqtts://host[:port]")
    tls = parsed.scheme == "mqtts"
    return parsed.hostname, parsed.port or (8883 if tls else 1883), tls


def client(
    host: str,
    port: int,
    *,
    identifier: str | None = None,
    persistent: bool = False,
    username: str | None = None,
    password: str | None = None,
    tls: bool = False,
    ca_file: str | None = None,
    max_queued_incoming: int = 0,
    manual_ack: bool = False,
) -> aiomqtt.Client:
    """A client as memed uses it: ``persistent`` keeps the session (QoS-1 messages queued by the broker
    while away are delivered on return); the in-flight window is off for :func:`publish_many`;
    ``manual_ack``: received QoS-1 messages are acknowledged only by :func:`ack` (the daemon does so once
    its journal holds them), so the broker redelivers whatever a killed process had not taken."""
    c = aiomqtt.Client(
        host,
        port,
        identifier=identifier,
        clean_session=False if persistent else None,
        username=username,
        password=password,
        tls_params=aiomqtt.TLSParameters(ca_certs=ca_file or None) if tls else None,
        max_queued_incoming_messages=max_queued_incoming,
        max_inflight_messages=0,
    )
    if manual_ack:
        c._client.manual_ack_set(True)
    return c


def ack(c: aiomqtt.Client, message: aiomqtt.Message) -> None:
    """Acknowledge a message received with manual acks (nothing to do for QoS 0)."""
    if message.qos > 0:
        c._client.ack(message.mid, message.qos)


def refusal(exc: BaseException) -> str:
    """Why the broker refused a connection for good ('' for a failure worth retrying as it is): wrong
    credentials or a certificate that does not verify do not get better by retrying."""
    rc = getattr(exc, "rc", None)
    code = getattr(rc, "value", rc)
    text = str(exc).lower()
    if code in (4, 5, 134, 135) or "not authori" in text or "bad user name or password" in text:
        return "credentials"
    if "certificate verify failed" in text or "certificate_verify_failed" in text:
        return "certificate"
    return ""


class PrivateApiError(MemedError):
    """aiomqtt or paho no longer has what memed's bulk publisher relies on."""


def check_private_api(c: aiomqtt.Client) -> None:
    """Raise :class:`PrivateApiError` naming what is missing if ``c`` (connected) lacks the private parts
    :func:`publish_many` and :func:`received_before_disconnect` use."""
    missing = []
    transport = getattr(c, "_client", None)
    if not isinstance(transport, paho.Client):
        missing.append("aiomqtt.Client._client (the paho client)")
    else:
        methods = ("publish", "is_connected", "ack", "manual_ack_set")
        missing += [f"paho.Client.{m}" for m in methods if not callable(getattr(transport, m, None))]
        if not isinstance(getattr(transport, "_out_packet", None), deque):
            missing.append("paho.Client._out_packet (the outgoing packets)")
    queue = getattr(c, "_queue", None)
    if not (callable(getattr(queue, "get_nowait", None)) and callable(getattr(queue, "empty", None))):
        missing.append("aiomqtt.Client._queue (received messages)")
    if not callable(getattr(paho.MQTTMessageInfo, "is_published", None)):
        missing.append("paho.MQTTMessageInfo.is_published")
    if missing:
        raise PrivateApiError(
            f"aiomqtt {aiomqtt.__version__} / paho-mqtt {paho_version} lacks {', '.join(missing)}, which "
            "memed's bulk publisher relies on; install the versions pyproject.toml pins "
            "(aiomqtt>=2.3,<3, paho-mqtt>=2,<3)"
        )


async def publish_many(
    c: aiomqtt.Client, messages: list[tuple[str, bytes]], qos: int = 1, timeout: float = 30.0
) -> list[int]:
    """Publish ``messages`` and wait for their acknowledgements; returns the indices *not* confirmed
    (the connection was lost or the wait timed out) so the caller can send them again."""
    transport: paho.Client = c._client
    infos: list[paho.MQTTMessageInfo] = []
    large = False
    for topic, body in messages:
        info = transport.publish(topic, body, qos)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            break
        infos.append(info)
        large = large or len(body) >= LARGE_MESSAGE
    if large:
        _zero_copy_writes(transport)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    k = 0
    while k < len(infos):
        if infos[k].is_published():
            k += 1
            continue
        if not transport.is_connected() or loop.time() > deadline:
            break
        await asyncio.sleep(0.001)
    unconfirmed = [i for i in range(k, len(infos)) if not infos[i].is_published()]
    return unconfirmed + list(range(len(infos), len(messages)))


def _zero_copy_writes(transport: paho.Client) -> None:
    """Queued packets not yet begun, as memoryviews: paho's partial writes then slice without copying."""
    for packet in transport._out_packet:
        if packet["pos"] == 0 and len(packet["packet"]) >= LARGE_MESSAGE:
            packet["packet"] = memoryview(packet["packet"])  # type: ignore[typeddict-item]


def received_before_disconnect(c: aiomqtt.Client) -> list[Any]:
    """Payloads the broker delivered (and paho acknowledged) before the connection dropped, still in
    the old client's queue: a broker restart would lose them if nobody took them."""
    queue = c._queue
    out = []
    while not queue.empty():
        out.append(queue.get_nowait().payload)
    return out


class Link:
    """The daemon's connection as the sinks see it: the client while connected, ``None`` otherwise."""

    def __init__(self) -> None:
        self.client: aiomqtt.Client | None = None
        self._up = asyncio.Event()

    def up(self, c: aiomqtt.Client) -> None:
        self.client = c
        self._up.set()

    def down(self) -> None:
        self.client = None
        self._up.clear()

    async def wait(self) -> aiomqtt.Client:
        """The client, once connected."""
        while self.client is None:
            await self._up.wait()
        return self.client
