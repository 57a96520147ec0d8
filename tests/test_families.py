"""The model-family registry: one entry per family names its kind, trainer, exporter and scorer, and the
config, the CLI, the trainer's dispatch, the registry loader and the decision path all follow it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import get_args

import msgspec
import pytest
from click.testing import CliRunner

from memed.cli.main import cli
from memed.config import MemedConfig, ModelName, parse_config
from memed.decision.scorers import Scorer
from memed.errors import ConfigError, RegistryError
from memed.models.families import FAMILIES, FAMILY_NAMES, family, load_part
from memed.models.registry import load_model_set, resolve
from memed.trainers.run import train_model_set


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_every_reference_resolves_to_its_part(name: str) -> None:
    f = family(name)
    assert callable(load_part(f.trainer)), f.trainer
    assert callable(load_part(f.exporter)), f.exporter
    scorer = load_part(f.scorer)
    assert issubclass(scorer, Scorer)
    assert scorer.kind == f.kind, (name, scorer.kind, f.kind)


def test_the_config_and_the_cli_take_their_family_names_from_the_registry(tiny_market: Path) -> None:
    assert get_args(ModelName) == FAMILY_NAMES == tuple(FAMILIES)
    assert parse_config('[train]\nmodels = ["transformer"]').train.models == ("transformer",)
    with pytest.raises(ConfigError, match=r"train\.models"):
        parse_config('[train]\nmodels = ["gru"]')
    res = CliRunner().invoke(cli, ["train", "--help"])
    assert all(n in res.output for n in FAMILY_NAMES)
    res = CliRunner().invoke(cli, ["train", "--data", str(tiny_market), "--models", "gru", "--out", "r"])
    assert res.exit_code == 2
    assert "unknown family ['gru']" in res.output


def test_an_unknown_family_is_refused_by_the_trainer(tiny_market: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown model family 'gru'"):
        train_model_set([tiny_market], MemedConfig(), tmp_path, models=("gru",))  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir()), "nothing is written before every family is known"


def test_a_set_naming_an_unknown_family_or_another_kind_is_refused(
    tiny_registry: Path, tmp_path: Path
) -> None:
    src = resolve(tiny_registry)
    for field, value, match in (("name", "gru", "'gru' .* is not a known family"),
                                ("window", 3, None)):  # fmt: skip
        dst = tmp_path / f"set-{field}"
        shutil.copytree(src, dst)
        doc = json.loads((dst / "manifest.json").read_text())
        for entry in doc["models"]:
            if entry["name"] == "logreg":
                entry[field] = value
        (dst / "manifest.json").write_text(json.dumps(doc))
        if match is None:  # an unused field changed: still a valid tabular logreg
            assert load_model_set(dst).runners["logreg"].entry.window == 3
            continue
        (dst / "gru.onnx").write_bytes((dst / "logreg.onnx").read_bytes())
        doc["models"] = [dict(e, file="gru.onnx") if e["name"] == "gru" else e for e in doc["models"]]
        (dst / "manifest.json").write_bytes(msgspec.json.encode(doc))
        with pytest.raises(RegistryError, match=match):
            load_model_set(dst)


def test_a_set_whose_graphs_disagree_with_its_manifest_is_refused_at_load(
    tiny_registry: Path, tmp_path: Path
) -> None:
    """A manifest declaring fewer horizons than its graphs output (or a state shape they do not have)
    is refused when the set is opened (and so on hot reload), not at the first minute it serves."""
    from memed.models.manifest import Manifest
    from memed.models.registry import latest_id

    src = tiny_registry / latest_id(tiny_registry)
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    m = msgspec.json.decode((bad / "manifest.json").read_bytes(), type=Manifest)
    (bad / "manifest.json").write_bytes(
        msgspec.json.encode(msgspec.structs.replace(m, horizons=m.horizons[:-1]))
    )
    with pytest.raises(RegistryError, match=r"p_up has shape \[1, 3\] for one row"):
        load_model_set(bad)
    lstm = next(e for e in m.models if e.kind == "stateful")
    wrong = msgspec.structs.replace(lstm, state_shape=(lstm.state_shape[0], lstm.state_shape[1] + 1))
    models = tuple(wrong if e.name == lstm.name else e for e in m.models)
    (bad / "manifest.json").write_bytes(msgspec.json.encode(msgspec.structs.replace(m, models=models)))
    with pytest.raises(RegistryError, match="lstm"):
        load_model_set(bad)
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "latest").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(RegistryError, match="not UTF-8"):
        load_model_set(registry)
