"""Scale-out on NATS JetStream: ``memed run --source nats`` (:mod:`memed.daemon.nats.app`), one lane per
partition (:mod:`.lane`), what lives on the server (:mod:`.layout`), signals out (:mod:`.sink`)."""

from memed.daemon.nats.layout import partition_of, server_config

__all__ = ["partition_of", "server_config"]
