"""An override is parsed and set; the typed config built by `validate` is the one place its value is checked."""

from __future__ import annotations

import pytest

from jaxformer.config import ConfigError
from jaxformer.experiment import apply_override, base_config, validate


def _with(*overrides: str):
    config = base_config()
    for item in overrides:
        apply_override(config, item)
    return config


def test_override_sets_the_parsed_value_without_checking_it():
    config = _with("train.steps=abc", "train.batch_size=3.5", "train.progress=false", "mesh.data=None")
    assert (config.train.steps, config.train.batch_size, config.train.progress, config.mesh.data) == (
        "abc",
        3.5,
        False,
        None,
    )


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("train.steps=abc", ["'train.steps'", "expects int", "'abc'"]),
        ("train.batch_size=3.5", ["'train.batch_size'", "expects int", "3.5"]),
        ("train.steps=0", ["train.steps=0", "positive"]),
        ("model.num_heads=x", ["'model.num_heads'", "expects int"]),
        ("model.num_kv_heads=3", ["model.num_heads=4", "num_kv_heads=3"]),
        ("mesh.data=None", ["'mesh.data'", "None"]),
        ("data.source=csv", ["data.source='csv'", "Did you mean 'tsv'?"]),
    ],
)
def test_validate_is_where_an_override_value_is_rejected(override, fragments):
    config = _with(override)  # accepted as text/number: nothing checked yet
    with pytest.raises(ConfigError) as err:
        validate(config)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_validated_values_take_the_declared_types():
    exp = validate(
        _with(
            "train.learning_rate=1",
            "model.rope_factor=2",
            "model.sliding_window=4",
            "model.sliding_window_layers=[0]",
        )
    )
    assert exp.train.learning_rate == 1.0 and isinstance(exp.train.learning_rate, float)
    assert exp.model.sliding_window_layers == (0,)
    assert isinstance(exp.model.rope_factor, float)


def test_key_problems_are_still_found_when_the_override_is_applied():
    config = base_config()
    with pytest.raises(
        ConfigError, match=r"unknown config key 'train.learning_rte'. Did you mean 'train.learning_rate'\?"
    ):
        apply_override(config, "train.learning_rte=1e-3")
    with pytest.raises(ConfigError, match=r"'model' is a section"):
        apply_override(config, "model=3")
    with pytest.raises(ConfigError, match=r"no value"):
        apply_override(config, "train.steps")
