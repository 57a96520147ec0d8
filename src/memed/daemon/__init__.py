"""The streaming daemon: MQTT ticks in, risk-sized signals out (``memed run``)."""
