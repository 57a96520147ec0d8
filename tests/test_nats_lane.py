"""A partition's lane without a server: stream-ordered feeding, the snapshot that carries it to another
daemon (exact continuation, refused when corrupt), and what a partitioned daemon refuses to serve."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import polars as pl
import pytest

from conftest import TINY_TOML
from daemon_helpers import daemon_config
from memed.config import MemedConfig, parse_config
from memed.daemon.nats.app import NatsDaemon
from memed.daemon.nats.lane import Lane, decode_snapshot, encode_snapshot
from memed.daemon.nats.layout import partition_of, server_config
from memed.daemon.publish_dataset import minute_payloads
from memed.daemon.wire import signal_frame
from memed.data import synth_market
from memed.errors import ConfigError, SnapshotError
from memed.models.registry import load_model_set


def _cfg(registry: Path, tmp: Path) -> MemedConfig:
    return daemon_config(registry, "mqtt://127.0.0.1:9", tmp, close_on_expected=False)


def _messages() -> list[tuple[int, bytes]]:
    """(sequence, payload) of one token's ticks (SYN00000, partition 7 of 16), a message a minute."""
    market = synth_market(1, 90, seed=2)
    out: list[tuple[int, bytes]] = []
    for _minute, messages in minute_payloads(market, "memed/ticks", batch=False):
        out += [(len(out) + 1, body) for _topic, body in messages]
    return out


def _run(lane: Lane, messages: list[tuple[int, bytes]], cfg: MemedConfig) -> list[bytes]:
    """Feed the lane and decide every minute it closes; the signals as JSON, each marked with whether
    ``daemon.publish_hold`` publishes it."""
    out = []
    for seq, body in messages:
        arrival = msgspec.json.decode(body)["ts"] + 61.0  # just after the tick's minute ended
        lane.feed(seq, body, arrival, cfg)
        for batch in lane.batcher.due(arrival):
            frame = signal_frame(lane.path.process(batch.tokens, float(batch.minute), batch.bars))
            published = {s.key for s in lane.holds.select(frame).signals()}
            out += [msgspec.json.encode([s, s.key in published]) for s in frame.signals()]
            lane.minutes += 1
    return out


def test_a_lane_restored_from_its_snapshot_continues_exactly(tiny_registry: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_registry, tmp_path)  # HOLDs published only when they change: that state travels too
    cfg = msgspec.structs.replace(cfg, daemon=msgspec.structs.replace(cfg.daemon, publish_hold="changes"))
    ms = load_model_set(tiny_registry)
    messages = _messages()
    p = partition_of("SYN00000", cfg.nats.partitions)
    whole = _run(Lane.fresh(p, ms, cfg), messages, cfg)
    first = Lane.fresh(p, ms, cfg)
    cut = 55
    before = _run(first, messages[:cut], cfg)
    snap = decode_snapshot(encode_snapshot(first.snapshot()), "test")
    assert snap.seq == cut
    assert snap.batcher.pending  # a minute in progress travels with the snapshot
    second = Lane.restore(snap, ms, cfg)
    # the new owner is handed the whole partition again: what the snapshot covers is skipped
    after = _run(second, messages, cfg)
    assert before + after == whole
    assert len(whole) > 60
    assert b",false]" in b"".join(whole)  # some HOLDs were held back


def test_a_lane_skips_what_it_has_and_refuses_other_tokens(tiny_registry: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_registry, tmp_path)
    assert partition_of("PEPE", 16) == 13
    assert partition_of("WIF", 16) == partition_of("BONK", 16) == 1
    lane = Lane.fresh(13, load_model_set(tiny_registry), cfg)
    tick = b'{"token": "PEPE", "ts": 1767225600, "close": 0.5}'
    assert lane.feed(5, tick, 1767225601.0, cfg) == 1
    assert lane.feed(5, tick, 1767225601.0, cfg) == 0  # a redelivery
    assert lane.feed(4, tick, 1767225601.0, cfg) == 0  # older than the lane
    assert lane.feed(6, b'{"token": "WIF", "ts": 1767225600, "close": 0.5}', 1767225601.0, cfg) == 0
    assert lane.feed(7, b"[1, 2", 1767225601.0, cfg) == 0
    # a column batch of the partition's tokens (one here) on <partition_subject>.13.batch
    batch = b'{"token": ["PEPE", "WIF"], "ts": [1767225660, 1767225660], "close": [0.6, 0.1]}'
    assert lane.feed(8, batch, 1767225661.0, cfg) == 1
    assert dict(lane.rejected) == {"wrong_partition": 2, "malformed_json": 1}
    assert lane.seq == 8


def test_a_column_batch_of_the_partitions_tokens_is_taken_whole_and_decided_as_its_ticks(
    tiny_registry: Path, tmp_path: Path
) -> None:
    cfg = _cfg(tiny_registry, tmp_path)
    ms = load_model_set(tiny_registry)
    market = synth_market(40, 80, seed=4)
    p = partition_of("SYN00000", cfg.nats.partitions)
    ours = [t for t in market["token"].unique().sort().to_list() if partition_of(t, cfg.nats.partitions) == p]
    assert len(ours) >= 2
    market = market.filter(pl.col("token").is_in(ours))

    def run(lane: Lane, columns: bool) -> list[bytes]:
        """Each minute's messages fed, then the minutes the clock closes decided."""
        out, seq = [], 0
        for minute, messages in minute_payloads(market, "memed/ticks", batch=False, columns=columns):
            arrival = minute * 60 + 61.0  # just after the minute ended
            for _topic, body in messages:
                seq += 1
                lane.feed(seq, body, arrival, cfg)
            taken_whole.append(any(m.blocks for m in lane.batcher._pending.values()))
            for batch in lane.batcher.due(arrival + 5.0):
                out += [msgspec.json.encode(s) for s in signal_frame(lane.path.process(
                    batch.tokens, float(batch.minute), batch.bars)).signals()]  # fmt: skip
        return out

    taken_whole: list[bool] = []
    one_by_one = run(Lane.fresh(p, ms, cfg), columns=False)
    assert not any(taken_whole)
    taken_whole.clear()
    whole = Lane.fresh(p, ms, cfg)
    assert run(whole, columns=True) == one_by_one
    assert all(taken_whole)  # every minute's batch went in whole
    assert len(one_by_one) == market.height > 80 * 2
    assert not whole.rejected


def test_a_corrupt_snapshot_is_a_clear_error(tiny_registry: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_registry, tmp_path)
    blob = encode_snapshot(Lane.fresh(1, load_model_set(tiny_registry), cfg).snapshot())
    for at in (0, 20, len(blob) // 2, len(blob) - 1):
        bad = bytearray(blob)
        bad[at] ^= 0x01
        with pytest.raises(SnapshotError, match="bucket/partition-0001"):
            decode_snapshot(bytes(bad), "bucket/partition-0001")
    with pytest.raises(SnapshotError, match="not a memed partition snapshot"):
        decode_snapshot(b"", "x")


def test_what_a_partitioned_daemon_refuses(tiny_registry: Path, tmp_path: Path) -> None:
    cfg = _cfg(tiny_registry, tmp_path)
    online = parse_config(
        TINY_TOML + f'[daemon]\nregistry = "{tiny_registry}"\n[signals.online]\nenabled = true\n'
    )
    with pytest.raises(ConfigError, match=r"signals\.online"):
        NatsDaemon(online)
    challenger = msgspec.structs.replace(cfg, monitor=msgspec.structs.replace(cfg.monitor, challenger="x"))
    with pytest.raises(ConfigError, match="challenger"):
        NatsDaemon(challenger)
    assert NatsDaemon(cfg).share == 16  # alone: every partition


def test_the_server_mapping_names_the_partition_count() -> None:
    cfg = parse_config("[nats]\npartitions = 64\ntick_subject = 'feed.t'\npartition_subject = 'feed.p'\n")
    assert (
        server_config(cfg.nats)
        == 'mappings {\n  "feed.t.*": "feed.p.{{partition(64,1)}}.{{wildcard(1)}}"\n}\n'
    )


def test_the_stream_position_is_read_off_both_acknowledgement_forms() -> None:
    from memed.daemon.nats.app import stream_position

    v1 = "$JS.ACK.MEMED_TICKS.memed_p0003.1.4077.12.1796279448219631097.0"
    v2 = "$JS.ACK.hub.ACCHASH.MEMED_TICKS.memed_p0003.1.4077.12.1796279448219631097.0.token"
    for reply in (v1, v2):
        seq, at = stream_position(reply)
        assert seq == 4077
        assert abs(at - 1796279448.219631) < 1e-6


def test_a_minute_of_signals_larger_than_the_servers_limit_goes_out_in_several_arrays(
    tiny_registry: Path, tmp_path: Path
) -> None:
    from memed.daemon.nats.sink import NatsBatchSink

    cfg = _cfg(tiny_registry, tmp_path)
    lane = Lane.fresh(7, load_model_set(tiny_registry), cfg)
    tokens = [f"T{i:04d}" for i in range(300)]
    bars = np.tile(np.array([[1.0], [1.1], [0.9], [1.0], [5.0], [np.nan], [np.nan], [np.nan], [np.nan]]), 300)
    signals = signal_frame(lane.path.process(tokens, 29_000_000.0, bars))
    whole = len(signals.json())
    sink = NatsBatchSink("nats_batch", None, "memed.batch", max_payload=whole // 5)
    bodies = sink.bodies(signals)
    assert len(bodies) >= 5
    assert all(len(body) <= whole // 5 for _, body in bodies)
    assert [s for _, body in bodies for s in msgspec.json.decode(body)] == msgspec.to_builtins(
        signals.signals()
    )
    assert len({msg_id for msg_id, _ in bodies}) == len(bodies)  # each array its own de-duplication id


async def test_no_server_is_one_clear_error(
    tiny_registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from memed.daemon.nats import app
    from memed.daemon.nats.layout import NatsSetupError

    monkeypatch.setattr(app, "CONNECT_SECONDS", 0.5)
    cfg = _cfg(tiny_registry, tmp_path)
    cfg = msgspec.structs.replace(cfg, nats=msgspec.structs.replace(cfg.nats, url="nats://127.0.0.1:1"))
    with pytest.raises(NatsSetupError, match=r"nats://127\.0\.0\.1:1: no server answered within 0\.5 s"):
        await NatsDaemon(cfg).run()
