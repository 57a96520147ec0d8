"""The streaming daemon (``memed run``): MQTT ticks in, risk-sized signals out to every sink; the edges
around the synchronous decision path. ``mqtt`` is the only module that imports aiomqtt or paho."""

from memed.daemon.app import Daemon
from memed.daemon.publish_dataset import publish_dataset
from memed.daemon.sinks import FanOut, Outgoing, Sink, SinkError
from memed.daemon.ticks import Rejected, Tick, decode_message
from memed.daemon.wire import to_signals

__all__ = [
    "Daemon",
    "FanOut",
    "Outgoing",
    "Rejected",
    "Sink",
    "SinkError",
    "Tick",
    "decode_message",
    "publish_dataset",
    "to_signals",
]
