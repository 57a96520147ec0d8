"""Typed, frozen, validated configuration.

The configuration is TOML. It is decoded once (at the CLI) into frozen :mod:`msgspec` structs: an unknown
key, a wrong type or an out-of-range value raises :class:`~memed.errors.ConfigError` with one line naming
the key. Every component receives its own section, never a dict. The config hash (sha256 of the canonical
JSON of the effective configuration, secrets excluded) is stamped into artifacts and start-up logs.

The defaults below are the embedded defaults; ``configs/default.toml`` documents each key and a test
keeps the two equal.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

from memed.errors import ConfigError
from memed.models.families import FamilyName

if TYPE_CHECKING:
    from memed.data.select import Selection

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every config section: immutable, strict about unknown keys."""


class LoggingConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class DataConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    gap_fill_max_minutes: Annotated[int, msgspec.Meta(ge=0, le=1440)] = 15
    """Gaps of up to this many missing minutes are filled with flat zero-volume bars; longer gaps start
    a new segment (the token's feature state restarts)."""
    market_context: bool = False
    """Add the market context features (equal-weight market return over 15 and 60 minutes, breadth, each
    token's beta and residual return; bars of 1, 3 or 5 minutes). Off by default: on unseen tokens in
    unseen weeks they did not improve the served model (README)."""

    timeframe: str = ""
    """Import only files of this bar interval (``1m``, ``5m``, ``1h``); empty: all, and a dataset whose
    files have different intervals is refused (``--timeframe``)."""
    timerange: str = ""
    """freqtrade's ``YYYYMMDD-YYYYMMDD`` (either side may be empty): bars from the start (inclusive) to
    the end (exclusive) (``--timerange``)."""
    tokens: list[str] = []
    """Only these tokens (freqtrade pairs as in file names, e.g. ``1000PEPE_USDT_USDT``); empty: all
    (``--tokens``)."""
    candle_types: list[Literal["mark", "index", "premiumIndex", "funding_rate"]] = []
    """freqtrade candle types besides spot and futures prices to import (as token ``PAIR-TYPE``)."""

    def __post_init__(self) -> None:
        self.selection()  # a bad timeframe or timerange is a configuration error, said at load

    def selection(self) -> Selection:
        from memed.data.select import Selection  # noqa: PLC0415 - the config stays light to import

        return Selection.of(self.timeframe, self.timerange, self.tokens, self.candle_types)

    def spec_args(self) -> tuple[int, bool]:
        """``(gap_fill_max_minutes, market)`` for :func:`memed.features.build_spec`."""
        return self.gap_fill_max_minutes, self.market_context


UnitFloat = Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)]
ModelName = FamilyName
"""A model family of :data:`memed.models.families.FAMILIES`."""
Category = Literal["normal", "extremes", "dead", "gaps"]


class LogregConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    l2: Annotated[float, msgspec.Meta(ge=0.0)] = 1.0
    """L2 penalty on the standardised weights (per training row: penalty / rows)."""
    max_iter: PositiveInt = 200


class TreesConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    max_rounds: PositiveInt = 300
    """Upper bound on trees per horizon; early stopping on the validation split usually stops far sooner."""
    early_stopping_rounds: NonNegInt = 30
    """0 turns early stopping off (every round is kept: only for experiments, it overfits)."""
    learning_rate: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.05
    num_leaves: Annotated[int, msgspec.Meta(ge=2)] = 31
    """LightGBM leaves per tree; XGBoost uses ``max_depth`` instead."""
    max_depth: PositiveInt = 6
    min_child_samples: PositiveInt = 200
    subsample: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.8
    colsample: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.8
    threads: NonNegInt = 0
    """0: every core."""


class LstmConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    hidden: PositiveInt = 32
    layers: PositiveInt = 1
    epochs: PositiveInt = 4
    chunk: PositiveInt = 256
    """Truncated back-propagation length; state is carried across chunks of one sequence."""
    lanes: PositiveInt = 32
    """Sequences advanced side by side per batch."""
    learning_rate: Annotated[float, msgspec.Meta(gt=0.0)] = 3e-3
    focal_gamma: Annotated[float, msgspec.Meta(ge=0.0)] = 2.0
    burn_in: Annotated[int, msgspec.Meta(ge=0)] = 64
    """Steps of a run before the LSTM is trained on or serves a probability: by then its state has
    forgotten where the run began (a daemon starts anywhere in a token's history). The trainer measures
    how long the trained net takes to forget; where that is longer, the set serves it from the measured
    steps plus a quarter (and says so)."""


class TransformerConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    window: Annotated[int, msgspec.Meta(ge=2)] = 60
    d_model: PositiveInt = 32
    heads: PositiveInt = 4
    layers: PositiveInt = 2
    epochs: PositiveInt = 3
    batch_size: PositiveInt = 256
    max_windows: PositiveInt = 60_000
    """Training windows sampled per epoch (all of them when fewer)."""
    learning_rate: Annotated[float, msgspec.Meta(gt=0.0)] = 1e-3


class TrainConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    horizons: tuple[PositiveInt, ...] = (15, 30, 60, 120, 240, 360, 720)
    """Label horizons in minutes. Horizons that are not a multiple of a dataset's bar interval are
    skipped for that dataset (an hourly set has no 15-minute label)."""
    ties: Literal["exclude", "down"] = "exclude"
    """Equal future and current close: excluded from training and metrics, or counted as not-up."""
    models: tuple[ModelName, ...] = ("logreg", "lgbm", "xgb", "lstm")
    categories: tuple[Category, ...] = ("normal", "extremes", "dead", "gaps")
    """Token categories a training run uses (see ``memed data categorize``)."""
    split: Literal["temporal", "token", "mixed"] = "temporal"
    train_fraction: UnitFloat = 0.6
    val_fraction: UnitFloat = 0.2
    mixed_holdout_tokens: UnitFloat = 0.2
    """``mixed`` split: this fraction of tokens goes wholly to test; the rest split in time."""
    dead_tail_minutes: PositiveInt = 60
    """A final constant-price run at least this long is a dead tail: cut, keeping ``dead_tail_keep`` bars."""
    dead_tail_keep: NonNegInt = 2
    extreme_log_return: Annotated[float, msgspec.Meta(gt=0.0)] = 0.7
    """A token with any bar-to-bar |log return| above this (0.7: x2 or /2) is ``extremes``."""
    gap_fraction: UnitFloat = 0.05
    """A token missing more than this fraction of its bars is ``gaps``."""
    seed: NonNegInt = 0
    logreg: LogregConfig = LogregConfig()
    lgbm: TreesConfig = TreesConfig()
    xgb: TreesConfig = TreesConfig()
    lstm: LstmConfig = LstmConfig()
    transformer: TransformerConfig = TransformerConfig()

    def __post_init__(self) -> None:
        if self.train_fraction + self.val_fraction >= 1.0:
            raise ValueError("train_fraction + val_fraction must be < 1 (the rest is the test split)")
        if not self.horizons:
            raise ValueError("horizons must not be empty")


Prob = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Fraction = Annotated[float, msgspec.Meta(gt=0.0, le=1.0)]
Positive = Annotated[float, msgspec.Meta(gt=0.0)]


class OnlineConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The online learner (``[signals.online]``): an ensemble member, named ``online``, that learns from
    the delayed labels as they resolve (river's logistic regression on standardised features, one per
    horizon, a mini-batch step per minute). Off by default: on the shared data it does not beat the
    fitted sets (README, "The online learner")."""

    enabled: bool = False
    horizons: tuple[PositiveInt, ...] = (60,)
    """The horizons it learns and votes on (those the model set has; pending labels hold a feature row
    per token and bar of the horizon, about 20 KB a token for 60 minutes of 1-minute bars)."""
    learning_rate: Positive = 0.01
    l2: Annotated[float, msgspec.Meta(ge=0.0)] = 0.0001
    min_labels: PositiveInt = 1000
    """Labels a horizon must have learned from before the member votes on it."""
    learn_share: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 1.0
    """The share of tokens it learns from (a hash of the name; it votes on every token)."""


class SignalsConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    decision_horizons: tuple[PositiveInt, ...] = (60,)
    """Under the bands, the action follows the mean ensemble probability over these horizons (those the
    model set has); the cost-aware policy chooses its own on validation (``policy_horizons``)."""
    buy_threshold: Prob = 0.55
    sell_threshold: Prob = 0.45
    strong_buy_threshold: Prob = 0.62
    strong_sell_threshold: Prob = 0.38
    models: tuple[ModelName, ...] = ("logreg",)
    """Families of the model set that vote (those present in the set). Only logreg by default: no family
    beats the fitted 2-feature logistic on unseen tokens and weeks (README, "The honest table")."""
    weights: dict[str, Positive] = {}
    """Ensemble weight per family; a family not listed weighs 1."""
    dead_minutes: PositiveInt = 60
    """A token whose price has not changed for this long is dead: HOLD with reason ``dead``."""
    policy: Literal["bands", "cost_aware"] = "cost_aware"
    """``cost_aware`` (default): a trade only where its expected net return after costs (the calibrated
    probability, the move sizes and costs fitted on the model set's validation split) clears the margin
    chosen there; HOLD with reason ``no_edge`` everywhere when validation found none (the set's manifest
    ``edge``). A set made before the fit existed is served with the bands, with a warning. ``bands``:
    BUY/SELL where the decision probability crosses the thresholds above, whatever the costs (on the
    real walk-forward test it lost 19.4 % in 18 days; README)."""
    policy_horizons: tuple[PositiveInt, ...] = ()
    """The horizons the cost-aware policy chooses its decision horizon from, on validation (empty: every
    horizon of the set). The chosen one is recorded in the manifest (``edge.horizon``) and replaces
    ``decision_horizons`` when the set is served with ``cost_aware``."""
    sides: Literal["long", "both"] = "long"
    """``long`` (spot memecoins, which cannot be shorted): a SELL means exit or avoid (``side: "exit"``),
    never a short, and carries no risk plan; ``both`` (perpetuals): a SELL opens a short."""
    online: OnlineConfig = OnlineConfig()

    def __post_init__(self) -> None:
        if not (self.strong_sell_threshold <= self.sell_threshold < self.buy_threshold):
            raise ValueError("need strong_sell_threshold <= sell_threshold < buy_threshold")
        if self.buy_threshold > self.strong_buy_threshold:
            raise ValueError("need buy_threshold <= strong_buy_threshold")


class RiskConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    equity: Positive = 10_000.0
    risk_per_trade: Fraction = 0.01
    """Fraction of equity lost if the stop-loss is hit."""
    stop_atr: Positive = 2.0
    take_profit_atr: Positive = 3.0
    max_position_fraction: Fraction = 0.10
    max_volume_fraction: Fraction = 0.05
    """Position notional at most this fraction of the recent (30-bar EWMA) traded notional per bar."""
    max_liquidity_fraction: Fraction = 0.02
    kelly_fraction: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.0
    """0 disables the cap; otherwise notional <= kelly_fraction x Kelly(p, payoff) x equity."""


class DaemonConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    registry: str = "models"
    """Registry folder (its ``latest`` set is served and hot-reloaded) or one model-set folder."""
    broker_url: str = "mqtt://127.0.0.1:1883"
    username: str = ""
    password: str = ""
    """Secret: never logged, excluded from the config hash."""
    tls: bool = False
    tls_ca_file: str = ""
    client_id: str = "memed-daemon"
    tick_topic: str = "memed/ticks/#"
    signal_topic_prefix: str = "memed/signals"
    """Each signal on ``<prefix>/<token>`` (QoS 1): what bots subscribe to; empty: no per-token topics."""
    gc_freeze: bool = True
    """Keep the garbage collector's full scans out of the minutes (:mod:`memed.daemon.gc_policy`)."""
    signal_batch_topic: str = ""
    """Every signal of a minute in one message on this topic (QoS 1), for high-volume consumers: one
    message a minute instead of one per token; empty: off."""
    signal_batch_format: Literal["json", "arrow"] = "json"
    """The batch topic's message: a JSON array of the signals, or an Arrow IPC file (the same columns,
    horizons and risk as structs, LZ4-compressed; ``pyarrow.ipc.open_file`` or ``polars.read_ipc`` reads
    it): a fifth of the bytes, and a minute's signals out several milliseconds sooner at 10,000 tokens."""
    dead_letter_topic: str = "memed/deadletter"
    hummingbot_topic_prefix: str = ""
    """Non-empty (the controller's default topic is ``hbot/predictions``): also publish each signal in the
    shape of Hummingbot's ``ai_livestream`` controller, to ``<prefix>/<pair>/ML_SIGNALS``."""
    pairs: dict[str, str] = {}
    """``[daemon.pairs]``: token → Hummingbot trading pair (``"1000PEPE_USDT_USDT" = "1000PEPE-USDT"``);
    an unmapped freqtrade-style token maps to ``BASE-QUOTE``, any other to itself."""
    publish_hold: Literal["always", "changes", "never"] = "changes"
    """HOLD signals on MQTT: every minute, only when a token's (action, reason) changed (a HOLD after a
    BUY revokes it), or never. BUY/SELL are always published; the JSONL and webhook sinks get every signal."""
    batch_wait_seconds: Annotated[float, msgspec.Meta(ge=0.0)] = 2.0
    """A minute's batch closes when every expected token has ticked, or this long after its first tick."""
    close_on_expected: bool = True
    """Close a minute as soon as every token of the previous minute has ticked (lowest latency); false:
    only when the next minute begins or the wait ends (no new token's tick can then arrive late)."""
    close_quorum: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.5
    """A minute closes once more than this share of the previous minute's tokens has ticked in a later
    minute (a strict majority by default): one token stamped ahead cannot close minutes for the others."""
    max_future_seconds: NonNegInt = 120
    max_message_bytes: PositiveInt = 4 * 1024 * 1024
    """A tick message larger than this is rejected (``too_large``) before it is decoded."""
    reject_unknown_fields: bool = True
    http_host: str = "127.0.0.1"
    http_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8787
    """0 disables the HTTP endpoints."""
    checkpoint_path: str = "memed-checkpoint.bin"
    """Written atomically every ``checkpoint_every_minutes`` and on SIGTERM/SIGINT, restored at start-up
    with the tick journal beside it (``<path>.journal.<n>``) replayed; empty disables both."""
    checkpoint_every_minutes: PositiveInt = 5
    """Processed minutes between periodic checkpoints (the journal covers what comes after one)."""
    corrupt_checkpoint: Literal["refuse", "move_aside"] = "refuse"
    """A checkpoint that does not decode: ``refuse`` (one ``error:`` line, exit 2) or ``move_aside``
    (renamed to ``<path>.corrupt-<time>`` with its journals; the daemon starts afresh and logs it)."""
    evict_ttl_minutes: PositiveInt = 1440
    max_tokens: PositiveInt = 100_000
    """Tokens tracked at most; a new token's tick beyond it is rejected (``too_many_tokens``) until idle
    tokens are evicted (every minute, after ``evict_ttl_minutes`` without a tick)."""
    quarantine_minutes: PositiveInt = 1440
    """A token whose bars make a minute raise (found by bisecting the failed minute) has its ticks
    rejected (``quarantined``) for this many minutes of event time."""
    max_refusals: PositiveInt = 5
    """Consecutive connections the broker refuses for credentials or certificates before the daemon
    gives up (``error: broker refused ...``, exit 2)."""
    reload_poll_seconds: Positive = 10.0
    jsonl_path: str = ""
    webhook_url: str = ""
    webhook_format: Literal["batch", "discord", "slack", "telegram"] = "batch"
    """``batch``: each minute's signals as one JSON array; ``discord``, ``slack``, ``telegram``: one chat
    message per published signal, in that service's webhook body (Telegram: the bot's ``sendMessage``
    URL as ``webhook_url``, and ``telegram_chat_id``)."""
    telegram_chat_id: str = ""
    webhook_retries: NonNegInt = 3
    sink_queue_minutes: PositiveInt = 120
    """Minutes of signals each sink may have queued; when full, its oldest minute is dropped and counted."""
    sink_drain_seconds: Annotated[float, msgspec.Meta(ge=0.0)] = 10.0
    """On stop, how long the sinks may take to send what is queued before the checkpoint is written."""
    inference_threads: PositiveInt = 2

    def __post_init__(self) -> None:
        if self.webhook_format == "telegram" and not self.telegram_chat_id:
            raise ValueError('webhook_format = "telegram" needs telegram_chat_id')

    def __repr__(self) -> str:
        fields = msgspec.structs.asdict(self)
        if fields["password"]:
            fields["password"] = "***"
        return "DaemonConfig(" + ", ".join(f"{k}={v!r}" for k, v in fields.items()) + ")"


class NatsConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``memed run --source nats``: several daemons share a JetStream tick stream partitioned by token
    (:mod:`memed.daemon.nats`)."""

    url: str = "nats://127.0.0.1:4222"
    tick_subject: str = "memed.ticks"
    """Feeds publish each token's ticks on ``<tick_subject>.<token>`` (MQTT feeds through nats-server's
    MQTT listener: ``memed/ticks/<token>``)."""
    partition_subject: str = "memed.part"
    """The server maps ``<tick_subject>.<token>`` to ``<partition_subject>.<n>.<token>`` (subject mapping,
    ``memed nats server-config``); the stream stores those subjects."""
    partitions: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 16
    """Must equal the mapping's ``partition()`` count (checked at start against the stream)."""
    stream: str = "MEMED_TICKS"
    stream_max_age_hours: Positive = 48.0
    """Ticks the stream keeps: a partition's snapshot must be younger (snapshots come every few minutes)."""
    group: str = "memed"
    """The consumers' priority group (pinned client): the server pins each partition to one daemon."""
    pinned_ttl_seconds: Positive = 5.0
    """A partition whose daemon has not pulled for this long is unpinned and given to another daemon:
    the bulk of the takeover time after a crash."""
    snapshot_bucket: str = "memed_snapshots"
    """JetStream object store holding each partition's state and the stream sequence it covers."""
    snapshot_every_minutes: PositiveInt = 5
    """Processed minutes between a partition's snapshots (a takeover replays the stream since the last)."""
    member_bucket: str = "memed_members"
    """JetStream key-value bucket of live daemons (a heartbeat each), for each daemon's fair share."""
    heartbeat_seconds: Positive = 1.0
    signal_subject: str = "memed.signals"
    """Each signal on ``<signal_subject>.<token>`` with header ``Nats-Msg-Id`` = its key (MQTT clients of
    nats-server: ``memed/signals/<token>``)."""
    signal_batch_subject: str = ""
    """Non-empty: also each partition's signals of a minute as one JSON array on this subject, for
    high-volume consumers (``signal_subject = ""`` then drops the per-token messages)."""
    signal_stream: str = "MEMED_SIGNALS"
    """The stream keeping the signals; its duplicate window drops a replayed minute's copies."""
    duplicate_window_minutes: PositiveInt = 120


class BacktestConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    train_minutes: PositiveInt = 14 * 1440
    test_minutes: PositiveInt = 3 * 1440
    step_minutes: PositiveInt = 3 * 1440
    embargo_minutes: NonNegInt = 0
    """0: the longest label horizon (the minimum a plan may have)."""
    expanding: bool = True
    """Expanding training windows from the data's start, or sliding ones of ``train_minutes``."""
    retrain_every: PositiveInt = 1
    max_folds: NonNegInt = 0
    """0: as many folds as fit."""
    workers: NonNegInt = 0
    """Processes training and replaying fold groups side by side; 0: as many as cores, groups and free
    memory allow, 1: in this process."""
    executor: Literal["process", "ray"] = "process"
    """``process``: a local process pool (``workers``); ``ray``: each fold group a Ray task, retried on
    another worker if its worker or node dies (``pip install 'memed[ray]'``; ``out`` must be a folder
    every node can write)."""
    ray_address: str = ""
    """The Ray cluster to join (``auto``, ``ray://host:10001``); empty: a local Ray started for the run,
    unless the calling process already joined one."""
    ray_retries: NonNegInt = 3
    """Times a fold group is retried after its worker died."""
    fee_bps: Annotated[float, msgspec.Meta(ge=0.0)] = 10.0
    slippage_bps: Annotated[float, msgspec.Meta(ge=0.0)] = 5.0
    impact_bps: Annotated[float, msgspec.Meta(ge=0.0)] = 100.0
    """Extra slippage in bps per unit of order notional / the fill bar's traded notional."""
    max_exposure: Positive = 1.0
    """Open notional across all tokens at most this multiple of equity."""


class MonitorConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    """Score every served probability against its delayed label (``/monitor``, ``/metrics``, MQTT)."""
    window_minutes: PositiveInt = 1440
    """The scores cover the labels resolved in this many minutes of event time."""
    every_minutes: PositiveInt = 60
    """A snapshot of the scores at every minute that is a multiple of this (event time)."""
    topic: str = "memed/monitor"
    """Each snapshot is published here (QoS 1, retained); empty: not published."""
    sample_share: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 1.0
    """The share of tokens scored, chosen by a hash of the name (the same tokens in the daemon and the
    backtest): pending labels take about 57 KB a token with one ensemble member, so 0.1 at 50,000 tokens
    keeps them to 285 MB."""
    challenger: str = ""
    """A model set (its folder) served in shadow: scored on the same delayed labels, never published, and
    promoted to champion when it beats it (``promote_margin``, ``promote_min_labels``)."""
    promote_margin: Annotated[float, msgspec.Meta(ge=0.0)] = 0.005
    """How much lower the challenger's mean log loss (over the horizons both serve) must be."""
    promote_min_labels: PositiveInt = 2000
    """Labels each compared horizon needs in both scoring windows before anything is judged."""
    log_dir: str = ""
    """The served-feature log: a folder of hourly Parquet files with the bars, feature rows and
    probabilities served for ``log_share`` of the tokens, for ``memed check parity``; empty: off."""
    log_share: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.05
    """The share of tokens the served-feature log keeps (every bar of a kept token), chosen by a hash of
    the name: about 0.6 KB a token-minute with the packaged set."""


class MemedConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    logging: LoggingConfig = LoggingConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    signals: SignalsConfig = SignalsConfig()
    risk: RiskConfig = RiskConfig()
    daemon: DaemonConfig = DaemonConfig()
    monitor: MonitorConfig = MonitorConfig()
    nats: NatsConfig = NatsConfig()
    backtest: BacktestConfig = BacktestConfig()

    def hash(self) -> str:
        """Stable short hash of the effective configuration (sorted canonical JSON, sha256)."""
        return config_hash(self)


SECRETS = {("daemon", "password")}


def config_hash(cfg: MemedConfig) -> str:
    data = msgspec.to_builtins(cfg)
    for section, key in SECRETS:
        data[section].pop(key, None)
    canonical = msgspec.json.encode(data, order="sorted")
    return hashlib.sha256(canonical).hexdigest()[:16]


_PATH_RE = re.compile(r" - at `\$\.?([^`]*)`$")


def _translate(err: msgspec.ValidationError, source: str) -> ConfigError:
    """Turn msgspec's message into 'source: key.path: problem'."""
    message = str(err)
    key = "<root>"
    match = _PATH_RE.search(message)
    if match:
        key = match.group(1) or "<root>"
        message = message[: match.start()]
    unknown = re.match(r"Object contains unknown field `([^`]+)`", message)
    if unknown:
        key = f"{key}.{unknown.group(1)}" if key != "<root>" else unknown.group(1)
        message = "unknown key"
    return ConfigError(f"{source}: {key}: {message}")


def parse_config(text: str, source: str = "<string>") -> MemedConfig:
    """Decode TOML text into a validated :class:`MemedConfig`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        return msgspec.convert(raw, MemedConfig)
    except msgspec.ValidationError as exc:
        raise _translate(exc, source) from None


def load_config(path: str | Path | None = None) -> MemedConfig:
    """Load a config file, or the embedded defaults when ``path`` is None."""
    if path is None:
        return MemedConfig()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror}") from None
    return parse_config(text, str(p))


def to_toml(cfg: MemedConfig) -> str:
    """Render the effective configuration as TOML (sections in declaration order)."""
    lines: list[str] = []
    data = msgspec.to_builtins(cfg)
    for section, key in SECRETS:
        if data[section].get(key):
            data[section][key] = "***"
    _toml_table(data, "", lines)
    return "\n".join(lines)


def _toml_table(values: dict[str, object], prefix: str, lines: list[str]) -> None:
    scalars = {k: v for k, v in values.items() if not isinstance(v, dict)}
    if prefix:
        lines.append(f"[{prefix}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in scalars.items())
        lines.append("")
    for key, value in values.items():
        if isinstance(value, dict):
            _toml_table(value, f"{prefix}.{key}" if prefix else key, lines)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return msgspec.json.encode(value).decode()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)
