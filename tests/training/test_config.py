"""--config values are typed by the defaults; unknown keys and bad values are clear errors."""

from __future__ import annotations

import pytest

from benchkit.errors import ConfigError
from benchkit.training.run import Config
from benchkit.training.runner import apply_overrides

DEFAULTS = {
    "epochs": 3,
    "lr": 0.01,
    "name": "net",
    "flag": False,
    "sizes": [1, 2],
    "opts": {"a": 1},
    "x": None,
}


def test_values_are_typed_by_their_defaults():
    cfg = apply_overrides(
        DEFAULTS,
        ["epochs=5", "lr=1e-3", "name=resnet", "flag=yes", "sizes=[3, 4]", 'opts={"b": 2}', "x=7"],
    )
    assert cfg["epochs"] == 5 and isinstance(cfg["epochs"], int)
    assert cfg["lr"] == 0.001 and isinstance(cfg["lr"], float)
    assert cfg["name"] == "resnet"
    assert cfg["flag"] is True
    assert cfg["sizes"] == [3, 4]
    assert cfg["opts"] == {"b": 2}
    assert cfg["x"] == 7


@pytest.mark.parametrize(
    "text,expected", [("true", True), ("0", False), ("OFF", False), ("on", True)]
)
def test_bool_parsing(text, expected):
    assert apply_overrides(DEFAULTS, [f"flag={text}"])["flag"] is expected


def test_implicit_keys_exist_and_are_typed():
    cfg = apply_overrides({}, ["seed=12", "keep_checkpoints=1"])
    assert cfg == {"seed": 12, "keep_checkpoints": 1}


def test_unknown_key_names_the_known_ones():
    with pytest.raises(ConfigError) as e:
        apply_overrides(DEFAULTS, ["epoch=5"])
    assert "unknown config key 'epoch'" in str(e.value)
    assert "epochs" in str(e.value) and "lr" in str(e.value)


@pytest.mark.parametrize("pair", ["epochs=3.5", "lr=fast", "flag=maybe", "sizes={}", "noequals"])
def test_bad_values_are_config_errors(pair):
    with pytest.raises(ConfigError):
        apply_overrides(DEFAULTS, [pair])


def test_config_has_attribute_access():
    cfg = Config({"lr": 0.1})
    assert cfg.lr == cfg["lr"] == 0.1
    cfg.epochs = 2
    assert cfg["epochs"] == 2
    with pytest.raises(AttributeError, match="known keys: epochs, lr"):
        _ = cfg.momentum
