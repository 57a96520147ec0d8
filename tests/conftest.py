"""Shared fixtures: the real market data in ../shared/data (tests skip with a reason where it is absent)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from memed.data import load_dataset

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FOLDERS = ("binance-futures-1m", "binance-spot-5m", "freqtrade-gaps", "pumpfun-hourly")


def data_folder(name: str) -> Path:
    path = DATA / name
    if not path.is_dir():
        pytest.skip(f"real market data not found at {path} (the shared data folder is absent)")
    return path


_CACHE: dict[str, pl.DataFrame] = {}


def real_bars(name: str) -> pl.DataFrame:
    """The canonical frame of one ../shared/data folder (loaded once per session)."""
    if name not in _CACHE:
        frame, _ = load_dataset([data_folder(name)])
        _CACHE[name] = frame
    return _CACHE[name]


@pytest.fixture(params=FOLDERS)
def real_dataset(request: pytest.FixtureRequest) -> tuple[str, pl.DataFrame]:
    return request.param, real_bars(request.param)


# --------------------------------------------------------------------------- a tiny trained model set
TINY_TOML = """
[train]
models = ["logreg", "lgbm", "xgb", "lstm", "transformer"]
horizons = [15, 30, 60]
[train.lgbm]
max_rounds = 30
early_stopping_rounds = 10
min_child_samples = 50
[train.xgb]
max_rounds = 30
early_stopping_rounds = 10
min_child_samples = 50
[train.lstm]
hidden = 8
epochs = 1
chunk = 128
[train.transformer]
window = 8
d_model = 8
heads = 2
layers = 1
epochs = 1
max_windows = 2000
"""


@pytest.fixture(scope="session")
def tiny_market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic 1-minute market written to Parquet: 12 tokens x 1,500 minutes."""
    from memed.data import synth_market, write_dataset

    path = tmp_path_factory.mktemp("market") / "synth.parquet"
    write_dataset(synth_market(12, 1500, seed=7), path)
    return path


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory: pytest.TempPathFactory, tiny_market: Path) -> Path:
    """Every model family trained (small) on the tiny market, exported into a registry."""
    from memed.config import parse_config
    from memed.trainers.run import train_model_set

    registry = tmp_path_factory.mktemp("registry")
    train_model_set([tiny_market], parse_config(TINY_TOML), registry, command="tests/conftest.py")
    return registry


@pytest.fixture(scope="session")
def walk_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test models trained on driftless random walks (60 tokens x 800 minutes): a reference that a
    stationary feed of the same kind matches."""
    from memed.config import parse_config
    from memed.data import random_walk_market, write_dataset
    from memed.trainers.run import train_model_set

    root = tmp_path_factory.mktemp("walks")
    write_dataset(random_walk_market(60, 800, seed=7), root / "walks.parquet")
    train_model_set([root / "walks.parquet"], parse_config(TINY_TOML), root / "registry", command="test")
    return root / "registry"


# --------------------------------------------------------------------------- a real Mosquitto
@pytest.fixture
def mosquitto(tmp_path: Path, request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Mosquitto on a free loopback port, with persistence (restartable mid-test). Only for tests marked
    ``broker`` (so that ``-m "not broker"`` runs everything that needs no broker)."""
    import os

    from broker import MOSQUITTO, Mosquitto

    if request.node.get_closest_marker("broker") is None:
        pytest.fail(f"{request.node.nodeid} starts Mosquitto: mark it @pytest.mark.broker")

    if not Path(MOSQUITTO).exists():
        if os.environ.get("CI"):
            pytest.fail("mosquitto is not installed (CI installs it: apt-get install -y mosquitto)")
        pytest.skip("mosquitto is not installed (apt-get install -y mosquitto)")
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    yield broker
    broker.stop()
