"""The daemon's Prometheus metrics (one registry per daemon, so tests can run several)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

if TYPE_CHECKING:
    from memed.models.registry import ModelSet


class DaemonMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.ticks_in = Counter("memed_ticks_total", "Ticks decoded from MQTT messages", registry=r)
        self.messages_in = Counter("memed_messages_total", "MQTT messages received", registry=r)
        self.rejected = Counter("memed_ticks_rejected_total", "Ticks rejected or ignored, by reason",
                                ["reason"], registry=r)  # fmt: skip
        self.signals = Counter("memed_signals_total", "Signals emitted, by action", ["action"], registry=r)
        self.latency = Histogram(
            "memed_tick_to_signal_seconds", "From a minute's last tick to its last signal published",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10), registry=r,
        )  # fmt: skip
        self.batch_size = Histogram("memed_batch_tokens", "Tokens per processed minute",
                                    buckets=(1, 10, 100, 1000, 5000, 10000, 50000), registry=r)  # fmt: skip
        self.lag = Gauge("memed_event_time_lag_seconds", "Wall clock minus the last processed minute's end",
                         registry=r)  # fmt: skip
        self.tokens = Gauge("memed_tokens_tracked", "Tokens with state in memory", registry=r)
        self.connected = Gauge("memed_broker_connected", "1 while connected to the broker", registry=r)
        self.reconnects = Counter("memed_broker_reconnects_total", "Broker connection losses", registry=r)
        self.reloads = Counter("memed_model_reloads_total", "Model-set reloads, by result", ["result"],
                               registry=r)  # fmt: skip
        self.model_set = Info("memed_model_set", "The served model set", registry=r)
        self.sink_signals = Counter(
            "memed_sink_signals_total", "Signals by sink and result: sent, failed (the sink gave up), "
            "dropped (its queue was full)", ["sink", "result"], registry=r,
        )  # fmt: skip
        self.sink_queue = Gauge("memed_sink_queue_minutes", "Minutes of signals queued for a sink", ["sink"],
                                registry=r)  # fmt: skip

        self.checkpoints = Counter("memed_checkpoints_total", "Checkpoints by result: written, failed",
                                   ["result"], registry=r)  # fmt: skip
        self.recovery_gap = Counter(
            "memed_recovery_gap_minutes_total", "Minutes missing between a restored checkpoint and the first "
            "minute after it (lost while the daemon was away; the affected tokens restart)", registry=r,
        )  # fmt: skip
        self.stragglers = Counter(
            "memed_straggler_ticks_total", "Ticks for the newest processed minute from tokens it did not "
            "have (returning from a hole after it closed), served as a batch of their own", registry=r,
        )  # fmt: skip
        self.minutes_missing = Counter(
            "memed_minutes_missing_total", "Minutes in which no token ticked while the daemon ran (the "
            "feed stopped; as in training, tokens fill short holes with flat bars and restart after long "
            "ones)", registry=r,
        )  # fmt: skip
        self.minutes_failed = Counter(
            "memed_minutes_failed_total", "Minutes whose processing raised (their tokens' state is reset "
            "and the daemon goes on)", registry=r,
        )  # fmt: skip
        self.dead_letters_dropped = Counter(
            "memed_dead_letters_dropped_total", "Rejections not published as dead letters (queue full)",
            registry=r,
        )  # fmt: skip
        self.drift_alarms = Counter(
            "memed_drift_alarms_total", "Drift alarms on the delayed-label scores (ADWIN: the recent part "
            "of the window scores worse), by horizon and kind (log_loss, error)", ["horizon", "kind"],
            registry=r,
        )  # fmt: skip
        self.psi = Gauge("memed_psi", "Population stability index of each served feature and p_<h> against "
                         "the training distribution, last judged bucket", ["name"], registry=r)  # fmt: skip
        self.psi_alarms = Counter("memed_psi_alarms_total", "Buckets whose PSI passed the sample-calibrated "
                                  "threshold, by feature or p_<h>", ["name"], registry=r)  # fmt: skip
        self.promotions = Counter("memed_model_promotions_total", "Challengers promoted to champion on "
                                  "delayed-label evidence", registry=r)  # fmt: skip
        self.live_labels = Gauge("memed_live_labels", "Delayed labels in the scoring window, by horizon",
                                 ["horizon"], registry=r)  # fmt: skip
        self._score_gauges = {
            name: Gauge(
                f"memed_live_{name}",
                f"{text} of served p_up against delayed labels, by horizon",
                ["horizon"],
                registry=r,
            )
            for name, text in (
                ("auc", "Rolling ROC AUC"),
                ("log_loss", "Rolling log loss"),
                ("brier", "Rolling Brier score"),
                ("up_rate", "Rolling up-rate (base rate)"),
                ("buy_hit_rate", "Rolling up-rate after BUY signals"),
                ("buy_r_mean", "Rolling mean R-multiple (marked at the horizon) of BUY plans"),
            )
        }
        self._member_gauges = {
            name: Gauge(
                f"memed_live_member_{name}",
                f"{text} of one ensemble member's calibrated p_up against "
                "delayed labels, by horizon and member",
                ["horizon", "member"],
                registry=r,
            )
            for name, text in (("auc", "Rolling ROC AUC"), ("log_loss", "Rolling log loss"))
        }
        self.partitions = Gauge(
            "memed_nats_partitions_owned", "Partitions this daemon serves (--source nats)", registry=r
        )
        self.partition_moves = Counter(
            "memed_nats_partition_moves_total",
            "Partitions taken over, released or lost (pinned to another daemon), by event",
            ["event"],
            registry=r,
        )
        self.snapshots = Counter(
            "memed_nats_snapshots_total",
            "Partition snapshots by result: written, failed, corrupt (found corrupt at a takeover)",
            ["result"],
            registry=r,
        )
        self.logs_suppressed = Counter(
            "memed_log_lines_suppressed_total", "Rejection log lines left out by the rate limit (every "
            "rejection is still counted)", registry=r,
        )  # fmt: skip

    def scores(self, by_horizon: dict[str, dict[str, Any]]) -> None:
        """A snapshot of the delayed-label scores (:mod:`memed.monitor`) into the gauges."""
        for h, sc in by_horizon.items():
            self.live_labels.labels(horizon=h).set(sc.get("n", 0))
            for name, gauge in self._score_gauges.items():
                value = sc.get(name)
                gauge.labels(horizon=h).set(float("nan") if value is None else value)
            for member, ms in sc.get("members", {}).items():
                for name, gauge in self._member_gauges.items():
                    value = ms.get(name)
                    gauge.labels(horizon=h, member=member).set(float("nan") if value is None else value)

    def serving(self, model_set: ModelSet) -> None:
        self.model_set.info({"id": model_set.id, "feature_spec": model_set.manifest.feature_spec_hash})

    def reject(self, reason: str, n: int = 1) -> None:
        self.rejected.labels(reason=reason).inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def _by_label(self, metric_name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for metric in self.registry.collect():
            if metric.name == metric_name:
                for s in metric.samples:
                    if s.name.endswith("_total"):
                        out[s.labels[label]] = s.value
        return out

    def rejected_counts(self) -> dict[str, float]:
        return self._by_label("memed_ticks_rejected", "reason")

    def sink_counts(self) -> dict[tuple[str, str], float]:
        """Signals by (sink, result)."""
        out: dict[tuple[str, str], float] = {}
        for metric in self.registry.collect():
            if metric.name == "memed_sink_signals":
                for s in metric.samples:
                    if s.name.endswith("_total"):
                        out[(s.labels["sink"], s.labels["result"])] = s.value
        return out

    def signal_counts(self) -> dict[str, float]:
        return self._by_label("memed_signals", "action")
