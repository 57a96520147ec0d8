"""``memed tune``: search hyperparameters and policy settings on walk-forward validation folds."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import click

from memed.cli.common import config_option, data_option, setup
from memed.errors import DataError

Objective = Literal["net", "log_loss"]


@click.command("tune")
@data_option
@click.option("--out", "registry", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model registry folder; the study is kept in its studies/NAME folder.")  # fmt: skip
@click.option("--study", "name", default="default", show_default=True,
              help="Study name: the same name resumes the study.")  # fmt: skip
@click.option(
    "--trials", default=20, show_default=True, type=click.IntRange(min=1), help="Trials to run now."
)
@click.option("--objective", type=click.Choice(["net", "log_loss"]), default="net", show_default=True,
              help="net: the model's net return after costs over the folds (maximised); log_loss: the "
                   "ensemble's log loss at the decision horizon (minimised).")  # fmt: skip
@config_option
def tune_cmd(
    sources: tuple[Path, ...],
    registry: Path,
    name: str,
    trials: int,
    objective: Objective,
    config_path: Path | None,
) -> None:
    """Tune on the data's development period (its test period is never read) with Optuna; writes the
    best settings as a config to REGISTRY/studies/NAME/best.toml."""
    try:
        from memed.cli.progress import RichSink, progress_bar  # noqa: PLC0415
        from memed.tuning.study import run_study  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise DataError(f"tuning needs the 'train' extra (pip install 'memed[train]'): {exc}") from None
    cfg = setup(config_path)
    if not name.replace("-", "").replace("_", "").isalnum():
        raise click.BadParameter("letters, digits, '-' and '_' only", param_hint="--study")
    with progress_bar("tune") as progress:
        study = run_study([str(s) for s in sources], cfg, registry, name=name, trials=trials,
                          objective=objective, progress=RichSink(progress))  # fmt: skip
    folder = registry / "studies" / name
    done = [t for t in study.trials if t.value is not None]
    click.echo(f"study {name}: {len(study.trials)} trials ({len(done)} complete) in {folder}")
    if done:
        click.echo(f"best trial {study.best_trial.number}: {objective} {study.best_value:+.6g}")
        for key, value in study.best_params.items():
            click.echo(f"  {key} = {value:.6g}" if isinstance(value, float) else f"  {key} = {value}")
        click.echo(f"config: {folder / 'best.toml'}  (memed train --config {folder / 'best.toml'} ...)")
