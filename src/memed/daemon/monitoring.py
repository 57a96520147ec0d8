"""The daemon's watch on its own models (``[monitor]``): delayed-label scoring and drift alarms
(:mod:`memed.monitor.stream`), feature drift (:mod:`memed.monitor.psi`) and a challenger in shadow
(:mod:`memed.monitor.challenger`), wired to the daemon's metrics, log, checkpoint and MQTT topic.
Everything here runs after the minute's signals are on their way, the array work in the worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

from memed.config import MemedConfig
from memed.daemon import mqtt
from memed.daemon.checkpoint import Checkpoint
from memed.daemon.metrics import DaemonMetrics
from memed.decision import DecisionPath, Decisions
from memed.decision.path import member_names
from memed.errors import ConfigError
from memed.logs import get_logger
from memed.models.registry import ModelSet, load_model_set, resolve, set_latest
from memed.monitor.challenger import Verdict, judge
from memed.monitor.psi import FeatureDrift
from memed.monitor.served_log import ServedLog
from memed.monitor.stream import ScoreStream, Snapshot

log = get_logger("memed.daemon")


@dataclass
class Shadow:
    """The challenger: its own decision path and scoring stream (``monitor.challenger``)."""

    path: DecisionPath
    scoring: ScoreStream


class Monitoring:
    def __init__(self, cfg: MemedConfig, metrics: DaemonMetrics, champion: DecisionPath,
                 restored: Checkpoint | None, registry: Path) -> None:  # fmt: skip
        self.cfg = cfg
        self.mon = cfg.monitor
        self.metrics = metrics
        self.registry = registry
        self.scoring = self.score_stream(champion.model_set) if self.mon.enabled else None
        self.feature_drift = self._feature_drift(champion.model_set)
        if self.scoring is not None and restored is not None and restored.monitor:
            self.scoring.restore(restored.monitor)
        self._snapshots: asyncio.Queue[Snapshot] = asyncio.Queue(maxsize=256)
        self.shadow = self._load_challenger(champion, restored, cfg.daemon.inference_threads)
        self.served_log: ServedLog | None = None
        if self.mon.log_dir:  # one run id per process start: the parity check's ``restart`` cause
            m, run = champion.model_set.manifest, f"{int(time.time())}-{uuid.uuid4().hex[:8]}"
            self.served_log = ServedLog(Path(self.mon.log_dir), self.mon.log_share, m.feature_names,
                                        m.horizons, run)  # fmt: skip

    def score_stream(self, model_set: ModelSet) -> ScoreStream:
        m, mon = model_set.manifest, self.mon
        members = member_names(model_set, self.cfg.signals)
        return ScoreStream(tuple(m.horizons), interval_minutes=m.interval_minutes,
                           window_minutes=mon.window_minutes, every_minutes=mon.every_minutes,
                           ties=self.cfg.train.ties, sample_share=mon.sample_share,
                           members=members)  # fmt: skip

    def _feature_drift(self, model_set: ModelSet) -> FeatureDrift | None:
        m = model_set.manifest
        if not self.mon.enabled or m.reference is None:
            return None  # a set made before reference bins existed: no PSI
        return FeatureDrift(m.reference, m.feature_names, m.horizons, self.mon.every_minutes)

    def _load_challenger(self, champion: DecisionPath, restored: Checkpoint | None, threads: int
                         ) -> Shadow | None:  # fmt: skip
        """The challenger of ``monitor.challenger``, in shadow (restored from the checkpoint)."""
        if not self.mon.challenger or self.scoring is None:
            return None
        ms = load_model_set(resolve(Path(self.mon.challenger)), threads=threads)
        m = champion.model_set.manifest
        if ms.manifest.interval_minutes != m.interval_minutes:
            raise ConfigError(
                f"monitor.challenger: {ms.id} is for {ms.manifest.interval_minutes}-minute bars, the "
                f"champion {m.model_set_id} for {m.interval_minutes}-minute bars"
            )
        if restored is not None and restored.challenger:
            path = DecisionPath.restore(ms, self.cfg.signals, self.cfg.risk, restored.challenger)
        else:
            path = DecisionPath(ms, self.cfg.signals, self.cfg.risk)
        scoring = self.score_stream(ms)
        if restored is not None and restored.challenger_monitor:
            scoring.restore(restored.challenger_monitor)
        log.info("challenger_in_shadow", challenger=ms.id, champion=m.model_set_id)
        return Shadow(path, scoring)

    # ------------------------------------------------------------------ each minute
    async def score(self, minute: int, result: Decisions) -> None:
        """Delayed-label scoring and the drift checks of the minute; a snapshot goes to the gauges,
        ``/monitor`` and the monitor topic."""
        if self.scoring is None:
            return
        tokens = result.tokens.to_list()
        snap = await asyncio.to_thread(_step, self.scoring, minute, result)
        if self.feature_drift is not None:
            shifted = await asyncio.to_thread(self.feature_drift.step, minute, tokens, result.features,
                                              result.ready, result.horizon_p)  # fmt: skip
            for name, value in self.feature_drift.latest.items():
                self.metrics.psi.labels(name=name).set(value)
            for a in shifted:
                self.metrics.psi_alarms.labels(name=a.name).inc()
                log.warning("feature_drift", minute=a.minute, name=a.name, psi=round(a.psi, 4),
                            threshold=round(a.threshold, 4), tokens=a.tokens)  # fmt: skip
        for alarm in self.scoring.raised:
            self.metrics.drift_alarms.labels(horizon=str(alarm.horizon), kind=alarm.kind).inc()
            log.warning("drift_alarm", minute=alarm.minute, horizon=alarm.horizon, kind=alarm.kind,
                        before=round(alarm.before, 4), after=round(alarm.after, 4),
                        blocks_before=alarm.blocks_before, blocks_after=alarm.blocks_after)  # fmt: skip
        if snap is None:
            return
        self.metrics.scores(snap.scores)
        if self.mon.topic:
            with contextlib.suppress(asyncio.QueueFull):  # the broker is away: the newest is retained anyway
                self._snapshots.put_nowait(snap)

    async def shadow_step(self, minute: int, tokens: list[str], bars: np.ndarray) -> DecisionPath | None:
        """The challenger decides the same minute, is scored on the same labels, and at a snapshot minute
        is judged against the champion; the challenger's path when it is promoted."""
        sh = self.shadow
        if sh is None:
            return None
        try:
            res = await asyncio.to_thread(sh.path.process, tokens, float(minute), bars)
            snap = await asyncio.to_thread(_step, sh.scoring, minute, res)
        except Exception as exc:  # the challenger cannot stop the champion
            log.exception("challenger_failed", challenger=sh.path.model_set.id, error=str(exc)[:300])
            self.shadow = None
            return None
        champion = self.scoring.latest if self.scoring is not None else None
        if snap is None or champion is None or champion.minute != snap.minute:
            return None
        verdict = judge(champion.scores, snap.scores, self.mon.promote_margin, self.mon.promote_min_labels)
        log.info("challenger_judged", minute=minute, challenger=sh.path.model_set.id, promote=verdict.promote,
                 reason=verdict.reason)  # fmt: skip
        if not verdict.promote:
            return None
        self._promote(sh, verdict)
        return sh.path

    def _promote(self, sh: Shadow, verdict: Verdict) -> None:
        """The challenger's scores and drift check become the champion's; the registry's ``latest`` points
        at it when it lives there, so a restart serves it too."""
        new = sh.path.model_set.id
        self.scoring, self.shadow = sh.scoring, None
        self.feature_drift = self._feature_drift(sh.path.model_set)
        persisted = (self.registry / new).is_dir()
        if persisted:
            set_latest(self.registry, new)
        self.metrics.promotions.inc()
        log.warning("challenger_promoted", challenger=new, reason=verdict.reason, evidence=verdict.evidence,
                    registry_latest_updated=persisted)  # fmt: skip

    async def log_served(self, minute: int, tokens: list[str], bars: np.ndarray, result: Decisions) -> None:
        """The minute's sampled rows into the served-feature log (a file written as an hour ends)."""
        if self.served_log is not None:
            await asyncio.to_thread(self.served_log.served, minute, tokens, bars, result)

    def late(self, token: str, minute: int, row: tuple[float, ...]) -> None:
        if self.served_log is not None:
            self.served_log.late(token, minute, row)

    async def flush_log(self) -> None:
        """What the served-feature log holds to a file (at every checkpoint, so that a daemon killed and
        restarted from it logs the minutes after it again as it serves them again, and at the stop)."""
        if self.served_log is not None:
            await asyncio.to_thread(self.served_log.flush)

    def evict(self, minute: int, gone: list[str], ttl_minutes: float) -> None:
        """The champion's idle tokens leave the scoring; the challenger evicts its own."""
        if self.scoring is not None and gone:
            self.scoring.forget(gone)
        if self.shadow is not None:
            self.shadow.scoring.forget(self.shadow.path.evict_idle(float(minute), ttl_minutes))

    def swapped(self, model_set: ModelSet) -> None:
        """A hot-reloaded champion: scoring starts afresh if its horizons or members differ; its drift
        reference."""
        if self.scoring is not None:
            fresh = self.score_stream(model_set)
            if (fresh.labels.horizons, fresh.members) != (self.scoring.labels.horizons, self.scoring.members):
                self.scoring = fresh
        self.feature_drift = self._feature_drift(model_set)

    # ------------------------------------------------------------------ out
    async def snapshot(self) -> tuple[bytes, bytes, bytes]:
        """The checkpoint's parts: the scoring stream, the challenger's path and its scoring stream."""
        sh = self.shadow
        challenger = await asyncio.to_thread(sh.path.snapshot) if sh is not None else b""
        return (self.scoring.snapshot() if self.scoring is not None else b"", challenger,
                sh.scoring.snapshot() if sh is not None else b"")  # fmt: skip

    async def publish_loop(self, link: mqtt.Link, model_set_id: Callable[[], str]) -> None:
        """Each snapshot onto the monitor topic (QoS 1, retained), whenever the broker is there."""
        while True:
            snap = await self._snapshots.get()
            body = msgspec.json.encode({"minute": snap.minute, "model_set": model_set_id(),
                                        "horizons": snap.scores, "alarms": snap.alarms})  # fmt: skip
            client = await link.wait()
            with contextlib.suppress(mqtt.MqttError):
                await client.publish(self.mon.topic, body, qos=1, retain=True)


def _step(stream: ScoreStream, minute: int, d: Decisions) -> Snapshot | None:
    """One minute's decisions into a scoring stream."""
    return stream.step(d.tokens.to_list(), minute, d.close, d.horizon_p, d.action, d.side,
                       unit=d.risk.entry - d.risk.stop_loss, members=d.members)  # fmt: skip
