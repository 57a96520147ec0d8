"""``memed train`` and ``memed models``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from memed.cli.common import config_option, data_option, selection_options, setup
from memed.errors import ConfigError, DataError
from memed.models.families import FAMILY_NAMES
from memed.models.manifest import EdgeFit

CELL = 23
"""Width of a metric-and-interval cell in the tables."""


@click.command("train")
@data_option
@click.option(
    "--models",
    default=None,
    help=f"Comma-separated families: {', '.join(FAMILY_NAMES)} (default: train.models of the config).",
)
@click.option("--out", "registry", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model registry folder.")  # fmt: skip
@selection_options
@config_option
def train_cmd(
    sources: tuple[Path, ...], models: str | None, registry: Path, config_path: Path | None
) -> None:
    """Train models on --data, export them to ONNX and write a model set into the registry --out."""
    try:
        from memed.cli.progress import RichSink, progress_bar  # noqa: PLC0415
        from memed.trainers.run import train_model_set  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise DataError(f"training needs the 'train' extra (pip install 'memed[train]'): {exc}") from None
    cfg = setup(config_path)
    chosen = tuple(m.strip() for m in models.split(",")) if models else cfg.train.models
    unknown = [m for m in chosen if m not in FAMILY_NAMES]
    if unknown or not chosen:
        raise ConfigError(f"--models: unknown family {unknown}; choose from {', '.join(FAMILY_NAMES)}")
    command = shlex.join(["memed", *sys.argv[1:]])
    with progress_bar("training") as progress:
        manifest = train_model_set(
            sources, cfg, registry, models=chosen, progress=RichSink(progress), command=command
        )
    click.echo(f"model set {manifest.model_set_id} written to {registry / manifest.model_set_id}")
    _print_auc(manifest)


def _print_auc(manifest: object) -> None:
    from memed.models.manifest import Manifest  # noqa: PLC0415

    assert isinstance(manifest, Manifest)
    hz = [str(h) for h in manifest.horizons]
    click.echo(f"\ntest ROC AUC [95 % day-block interval] ({manifest.split.rows.get('test', 0):,} test rows)")
    click.echo(f"{'model':<16}" + "".join(f"{h + 'm':>{CELL}}" for h in hz))
    rows = [(e.name, e.metrics) for e in manifest.models] + list(manifest.baselines.items())
    for name, metrics in rows:
        click.echo(f"{name:<16}" + "".join(_cell(metrics.get(h, {}), "roc_auc", "") for h in hz))
    fitted = ", ".join(manifest.fitted_baseline_features) or "no fitted baseline in this set"
    click.echo(f"\nAUC minus the fitted 2-feature logistic ({fitted}), paired [95 % interval]")
    for e in manifest.models:
        click.echo(f"{e.name:<16}" + "".join(_cell(e.metrics.get(h, {}), "roc_auc_vs_fitted_logistic", "+")
                                             for h in hz))  # fmt: skip
    if any(e.calibration for e in manifest.models):
        click.echo("\nexpected calibration error on test, calibrated [95 % interval] (uncalibrated); "
                   "map chosen on validation")  # fmt: skip
        cal_rows = [(e.name, e.metrics, e.calibration) for e in manifest.models]
        if manifest.ensemble:
            cal_rows.append((f"ensemble({','.join(manifest.ensemble_models)})"[:15], manifest.ensemble, ()))
        for name, metrics, cals in cal_rows:
            click.echo(f"{name:<16}" + "".join(_cell(metrics.get(h, {}), "ece", "") for h in hz))
            raw = [metrics.get(h, {}).get("ece_uncalibrated") for h in hz]
            click.echo(f"{'':<16}" + "".join(f"{'-' if r is None else f'({r:.3f})':>{CELL}}" for r in raw))
            if cals:
                click.echo(f"{'':<16}" + "".join(f"{c.method:>{CELL}}" for c in cals))
    if manifest.edge is not None:
        _echo_policy(manifest.edge)
    for w in manifest.warnings:
        click.secho(f"warning: {w}", fg="yellow")


def _echo_policy(g: EdgeFit) -> None:
    """The cost-aware policy's fit: per candidate horizon, then the chosen one's sides and exits."""
    echo = click.echo
    echo(f"\ncost-aware policy on validation (round trip {g.cost * 1e4:.0f} bps, {g.rows:,} rows)")
    if g.horizon_scores:
        cells = [
            f"{h} m " + ("no edge" if v is None else f"{v * 1e4:+.2f}") for h, v in g.horizon_scores.items()
        ]
        echo("  net bps per bar of capital, by horizon: " + ", ".join(cells))
    echo(
        f"  decision horizon {g.horizon} m: up moves {g.up_move * 1e4:.0f} bps, down {g.down_move * 1e4:.0f}"
    )
    for side in ("long", "short") if g.sides == "both" else ("long",):
        if not getattr(g, f"{side}_edge"):
            echo(f'  {side}: no edge after costs (signals.policy = "cost_aware" trades nothing)')
            continue
        margin, trades = getattr(g, f"{side}_margin"), getattr(g, f"{side}_trades")
        bets, net = getattr(g, f"{side}_bets"), getattr(g, f"{side}_net_mean")
        echo(f"  {side}: margin {margin * 1e4:.1f} bps, {trades:,} trades ({bets:,} independent), "
             f"mean net {net * 1e4:+.1f} bps")  # fmt: skip
    if g.stop_sigma:
        echo(f"  stop {g.stop_sigma:g} x, target {g.target_sigma:g} x the horizon's volatility (ATR x "
             f"sqrt(horizon bars)): mean net {g.exit_net_mean * 1e4:+.1f} bps a trade")  # fmt: skip


def _cell(m: dict[str, float | None], key: str, sign: str) -> str:
    """A metric and its interval, e.g. ``0.531 [0.51,0.55]`` (``-`` where absent)."""
    value, lo, hi = m.get(key), m.get(f"{key}_lo"), m.get(f"{key}_hi")
    if value is None:
        return f"{'-':>{CELL}}"
    text = f"{value:{sign}.3f}" + (
        f" [{lo:{sign}.2f},{hi:{sign}.2f}]" if lo is not None and hi is not None else ""
    )
    return f"{text:>{CELL}}"


@click.group("models")
def models_group() -> None:
    """Inspect a model registry."""


@models_group.command("list")
@click.argument("registry", type=click.Path(exists=True, file_okay=False, path_type=Path))
def list_cmd(registry: Path) -> None:
    """List the model sets of REGISTRY (newest last; * marks latest)."""
    from memed.models.registry import LATEST, latest_id, list_sets  # noqa: PLC0415

    latest = latest_id(registry) if (registry / LATEST).exists() else ""
    sets = list_sets(registry)
    if not sets:
        click.echo("no model sets")
    for m in sets:
        mark = "*" if m.model_set_id == latest else " "
        names = ",".join(e.name for e in m.models)
        click.echo(f"{mark} {m.model_set_id}  {m.created}  {m.interval_minutes}m bars  "
                   f"spec {m.feature_spec_hash}  {names}")  # fmt: skip


@models_group.command("show")
@click.argument("registry", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("set_id", default="latest")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def show_cmd(registry: Path, set_id: str, as_json: bool) -> None:
    """Validate one model set (default: latest) and print its manifest summary."""
    import msgspec  # noqa: PLC0415

    from memed.models.registry import latest_id, load_model_set  # noqa: PLC0415

    sid = latest_id(registry) if set_id == "latest" else set_id
    ms = load_model_set(registry / sid)  # validates hashes and sessions
    m = ms.manifest
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(m), indent=2).decode())
        return
    click.echo(f"model set   {m.model_set_id}\ncreated     {m.created}\nhorizons    {list(m.horizons)}")
    click.echo(f"bars        {m.interval_minutes} min, gap fill {m.gap_fill_max_minutes} min")
    click.echo(
        f"feature spec {m.feature_spec_hash} ({len(m.feature_names)} features)\nconfig      {m.config_hash}"
    )
    click.echo(f"data        {m.data.tokens} tokens, {m.data.rows:,} rows, {m.data.start} .. {m.data.end}")
    click.echo(f"split       {m.split.strategy}, embargo {m.split.embargo_minutes} min, rows {m.split.rows}")
    if m.constant_features:
        click.echo(f"constant on train: {', '.join(m.constant_features)}")
    for e in m.models:
        trees = f", trees {list(e.trees_per_horizon)}" if e.trees_per_horizon else ""
        click.echo(f"  {e.name:<12}{e.kind:<9} onnx gap {e.onnx_max_abs_diff:.1e}{trees}")
    if m.command:
        click.echo(f"made by     {m.command}")
    _print_auc(m)
