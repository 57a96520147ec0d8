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
