from pathlib import Path

import pytest
from click.testing import CliRunner

from memed.cli.main import cli
from memed.config import MemedConfig, load_config, parse_config
from memed.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_documented_defaults_equal_embedded_defaults() -> None:
    assert load_config(ROOT / "configs" / "default.toml") == MemedConfig()


def test_config_is_frozen() -> None:
    cfg = MemedConfig()
    with pytest.raises(AttributeError):
        cfg.data = None  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("[data]\nbogus = 1", "data.bogus", "unknown key"),
        ("[nosuch]\na = 1", "nosuch", "unknown key"),
        ('[data]\ngap_fill_max_minutes = "x"', "data.gap_fill_max_minutes", "Expected `int`, got `str`"),
        ("[data]\ngap_fill_max_minutes = -1", "data.gap_fill_max_minutes", ">= 0"),
        ("[data]\ngap_fill_max_minutes = 5000", "data.gap_fill_max_minutes", "<= 1440"),
        ('[logging]\nlevel = "loud"', "logging.level", "Invalid enum value 'loud'"),
    ],
)
def test_bad_config_names_key_and_problem(text: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "f.toml")
    message = str(err.value)
    assert message.startswith(f"f.toml: {key}: ")
    assert problem in message
    assert "\n" not in message


def test_invalid_toml_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("x = ", "f.toml")


def test_hash_is_stable_and_tracks_values() -> None:
    a = parse_config("[data]\ngap_fill_max_minutes = 15")
    assert a.hash() == MemedConfig().hash()
    assert parse_config("[data]\ngap_fill_max_minutes = 16").hash() != a.hash()


def test_cli_config_show(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(cli, ["config", "show"])
    assert ok.exit_code == 0
    assert f"# config hash: {MemedConfig().hash()}" in ok.output
    assert "gap_fill_max_minutes = 15" in ok.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[data]\nnope = 1\n")
    res = runner.invoke(cli, ["config", "show", "--config", str(bad)])
    assert res.exit_code == 2
    assert res.output.strip() == f"error: {bad}: data.nope: unknown key"
    missing = runner.invoke(cli, ["config", "show", "--config", str(tmp_path / "absent.toml")])
    assert missing.exit_code == 2
    assert "cannot read config file" in missing.output
