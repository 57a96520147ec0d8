"""``memed check``: the guards that the features see no future, do not depend on where history started,
and that what the daemon served equals what the batch drivers compute (``parity``)."""

from __future__ import annotations

import math
from pathlib import Path

import click
import msgspec

from memed.cli.common import config_option, setup
from memed.errors import ConfigError, DataError


@click.group("check")
def check_group() -> None:
    """Leakage and parity guards."""


@check_group.command("lookahead")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--cuts", type=click.IntRange(1), default=12, show_default=True)
@config_option
def lookahead_cmd(sources: tuple[Path, ...], cuts: int, config_path: Path | None) -> None:
    """Recompute features on SOURCES truncated at many points; fail if any past value changes."""
    from memed.data.loaders import load_dataset  # noqa: PLC0415
    from memed.data.schema import infer_interval_minutes  # noqa: PLC0415
    from memed.features import build_spec, compute_features  # noqa: PLC0415
    from memed.trainers.leakage import check_lookahead  # noqa: PLC0415

    cfg = setup(config_path)
    bars, _ = load_dataset(sources, cfg.data.selection())
    spec = build_spec(infer_interval_minutes(bars), *cfg.data.spec_args())
    report = check_lookahead(bars, lambda b: compute_features(b, spec), cuts)
    click.echo(f"{report.cuts} cuts, {report.rows_checked:,} rows x {len(spec.names)} features compared")
    if not report.ok:
        for name, n in sorted(report.violations.items()):
            click.echo(f"  LOOKAHEAD {name}: {n:,} values changed when the future was removed")
        raise DataError(f"look-ahead check failed for {len(report.violations)} feature(s)")
    click.echo("ok: no value at or before a cut depends on later data")


@check_group.command("start")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--cuts", default="60,1440", show_default=True, help="Minutes of each token's past to remove.")
@click.option("--rtol", type=click.FloatRange(0.0), default=1e-6, show_default=True)
@click.option("--warmup", type=click.IntRange(1), default=None,
              help="Compare from this many bars of a segment instead of the spec's warm-up (to see how "
                   "long each feature takes to forget where history started).")  # fmt: skip
@click.option("--models", "models_path", type=click.Path(exists=True, path_type=Path), default=None,
              help="Compare every family's served probabilities from this model set (or registry) "
                   "instead of the features.")  # fmt: skip
@config_option
def start_cmd(sources: tuple[Path, ...], cuts: str, rtol: float, warmup: int | None,
              models_path: Path | None, config_path: Path | None) -> None:  # fmt: skip
    """Remove the start of every token's history, recompute, and fail if a feature (or, with --models, a
    served probability) past its warm-up depends on where history started (what a freshly started daemon
    sees)."""
    from memed.data.loaders import load_dataset  # noqa: PLC0415
    from memed.data.schema import infer_interval_minutes  # noqa: PLC0415
    from memed.features import build_spec, compute_features  # noqa: PLC0415
    from memed.trainers.leakage import check_start_invariance  # noqa: PLC0415

    cfg = setup(config_path)
    try:
        minutes = tuple(int(c) for c in cuts.split(","))
    except ValueError:
        raise ConfigError(f"--cuts: {cuts!r} is not a comma-separated list of minutes") from None
    bars, _ = load_dataset(sources, cfg.data.selection())
    spec = build_spec(infer_interval_minutes(bars), *cfg.data.spec_args())
    if warmup is not None:
        spec = spec.with_warmup_at_most(warmup)
    features = lambda b: compute_features(b, spec, with_ready=True)  # noqa: E731
    what = f"{len(spec.names)} features"
    if models_path is not None:
        from memed.decision.served import served_probabilities  # noqa: PLC0415
        from memed.models.registry import load_model_set  # noqa: PLC0415

        model_set = load_model_set(models_path, expect_spec_hash=spec.hash)
        features = lambda b: served_probabilities(model_set, b)  # noqa: E731
        what = f"{len(model_set.runners)} families' probabilities ({', '.join(model_set.runners)})"
    report = check_start_invariance(bars, features, minutes, rtol, from_data_start=spec.market)
    click.echo(f"cuts {list(minutes)} min{' from the data start' if spec.market else ''}, "
               f"{report.rows_checked:,} rows x {what} "
               f"compared past the {spec.warmup_bars}-bar warm-up, relative tolerance {rtol:g}")  # fmt: skip
    for name, d in sorted(report.drift.items(), key=lambda kv: -kv[1].rows):
        agree = "never" if d.bars_to_agree < 0 else f"after {d.bars_to_agree:,} bars"
        click.echo(f"  START-DEPENDENT {name:<22} {d.rows:>10,} rows  max rel diff {d.max_rel_diff:9.2e}  "
                   f"agrees {agree}")  # fmt: skip
    if not report.ok:
        raise DataError(f"start-truncation check failed for {len(report.drift)} feature(s)")
    click.echo("ok: past the warm-up nothing compared depends on where history started")


@check_group.command("parity")
@click.argument("log", type=click.Path(exists=True, path_type=Path))
@click.option("--registry", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Where the logged model sets live (default: daemon.registry of the config).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@config_option
def parity_cmd(log: Path, registry: Path | None, as_json: bool, config_path: Path | None) -> None:
    """Recompute a daemon's served-feature LOG (``monitor.log_dir``) with the batch drivers and the model
    sets that served it; fail if any feature or probability differs, with the differences per feature
    and per cause (late tick, restart, model swap, gap fill)."""
    from memed.monitor.parity import check_parity  # noqa: PLC0415

    cfg = setup(config_path)
    try:
        report = check_parity(log, registry or Path(cfg.daemon.registry), cfg)
    except FileNotFoundError as exc:
        raise DataError(str(exc)) from None
    if as_json:
        click.echo(msgspec.json.format(msgspec.json.encode(report), indent=2))
    else:
        click.echo(f"{report.rows:,} served rows of {report.tokens:,} tokens compared (model sets "
                   f"{', '.join(report.model_sets) or 'none'}); {report.late_bars:,} late ticks' bars "
                   "replayed that the daemon never served")  # fmt: skip
        for name, n in sorted({**report.features, **report.probabilities}.items(), key=lambda kv: -kv[1]):
            gap = report.max_abs_diff[name]
            shown = (
                f"max abs diff {gap:.3g}" if not math.isnan(gap) else "a value on one side, NaN on the other"
            )
            click.echo(f"  MISMATCH {name:<24} {n:>9,} rows  {shown}")
        for cause, n in report.causes.items():
            click.echo(f"  cause {cause:<12} {n:>9,} rows")
        if report.not_compared:
            click.echo(f"not compared: {report.not_compared}")
    if not report.ok:
        raise DataError(
            f"parity check failed: {report.mismatched_rows:,} of {report.rows:,} served rows differ"
        )
    if not as_json:
        click.echo("ok: every served feature and probability equals the batch drivers' on the same bars")
