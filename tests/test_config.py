"""params.yaml, the config classes and `--set` overrides agree."""

import pytest
import yaml

from lite_rec.config import PARAMS_FILE, Config, load_config, parse_overrides


def test_params_yaml_holds_the_config_defaults() -> None:
    assert yaml.safe_load(PARAMS_FILE.read_text()) == Config().to_dict()


def test_overrides_are_typed() -> None:
    config = load_config(overrides=["train.lr=0.01", "model.tie_output=false", "train.epochs=3"])
    assert config.train.lr == 0.01 and config.train.epochs == 3
    assert config.model.tie_output is False


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.nope=1", "unknown key train.nope"),
        ("bogus.lr=1", "unknown config section 'bogus'"),
        ("train.epochs=many", "train.epochs: expected int, got 'many'"),
        ("model.tie_output=maybe", "model.tie_output: expected true or false"),
        ("epochs=3", "expected section.key=value"),
    ],
)
def test_bad_overrides_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_config(overrides=[override])


def test_parse_overrides_nests_sections() -> None:
    assert parse_overrides(["a.b=1", "a.c=x=y"]) == {"a": {"b": "1", "c": "x=y"}}
