"""Tests for fashionssl.config: defaults, validation (table-driven), TOML files, precedence of
command-line overrides, option-table merging and parse_option."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import pytest
from conftest import quick_config

from fashionssl.config import FIELDS, Config, config_from_dict, make_config, parse_option, validate
from fashionssl.errors import UserError
from fashionssl.methods import method_options


def test_defaults_validate():
    cfg = make_config()
    assert cfg == Config()
    assert validate(Config()) == Config()
    assert cfg.method_options == {} and cfg.method_options is not Config().method_options


BAD_VALUES = [
    ("lr", -0.1),
    ("lr", 0),
    ("lr", 0.0),
    ("epochs", 0),
    ("batch_size", -1),
    ("batch_size", 0),
    ("eval_batch_size", 0),
    ("precision", "fp16"),
    ("seed", True),
    ("epochs", "3"),
    ("epochs", 3.0),
    ("lr", "0.1"),
    ("train_subset", 0),
    ("weight_decay", -1e-4),
    ("val_size", -1),
    ("knn_every", -1),
    ("channels_last", 1),
    ("method_options", [1, 2]),
]


@pytest.mark.parametrize("key, value", BAD_VALUES, ids=[f"{k}={v!r}" for k, v in BAD_VALUES])
def test_bad_values_name_the_key(key, value):
    with pytest.raises(UserError) as info:
        make_config(**{key: value})
    assert re.search(rf"\b{key}\b", str(info.value)), str(info.value)


def test_lr_defaults_to_the_method_s_own_and_a_given_lr_wins(tmp_path):
    assert make_config(None).lr == 4e-3  # SimCLR's, chosen on validation
    assert make_config(None, method="byol").lr == 4e-3  # chosen at the default encoder
    assert make_config(None, method="barlow").lr == 2e-3  # the shared default
    assert make_config(None, method="byol", lr=1e-3).lr == 1e-3
    (tmp_path / "run.toml").write_text('method = "moco"\nlr = 5e-4\n')
    assert make_config(tmp_path / "run.toml").lr == 5e-4
    assert dataclasses.asdict(make_config(None, method="moco"))["lr"] == 2e-3  # config.json records the value used


def test_warmup_longer_than_training():
    with pytest.raises(UserError, match=r"\bwarmup_epochs\b"):
        make_config(epochs=2, warmup_epochs=3)
    assert make_config(epochs=2, warmup_epochs=2).warmup_epochs == 2  # equal is fine
    assert make_config(epochs=2, warmup_epochs=0.5).warmup_epochs == 0.5


def test_unknown_override_key():
    with pytest.raises(UserError, match=r"\bbogus\b"):
        make_config(bogus=1)


def test_float_fields_take_ints_and_none_means_not_given():
    cfg = make_config(lr=1, train_subset=None, data_dir=None)
    assert cfg.lr == 1 and cfg.train_subset is None
    assert make_config(train_subset=100, data_dir="/x").train_subset == 100


def test_nan_lr_is_rejected():
    with pytest.raises(UserError, match=r"\blr\b"):
        make_config(lr=math.nan)


# ---------------------------------------------------------------- TOML files

TOML = """
method = "simclr"
epochs = 3
lr = 0.01
train_subset = 1000

[method_options]
temperature = 0.5
proj_dim = 64

[augment_options]
crop_scale = [0.3, 1.0]
"""


def test_toml_values_applied(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(TOML)
    cfg = make_config(path)
    assert (cfg.epochs, cfg.lr, cfg.train_subset) == (3, 0.01, 1000)
    assert cfg.method_options == {"temperature": 0.5, "proj_dim": 64}
    assert cfg.augment_options == {"crop_scale": [0.3, 1.0]}
    assert cfg.batch_size == Config().batch_size  # untouched keys keep defaults
    assert make_config(str(path)) == cfg  # str paths too


def test_overrides_beat_toml_and_none_keeps_toml(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(TOML)
    cfg = make_config(path, epochs=7, lr=None)
    assert cfg.epochs == 7
    assert cfg.lr == 0.01


def test_option_tables_merge_key_by_key(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(TOML)
    cfg = make_config(path, method_options={"temperature": 0.1, "queue": 4096}, augment_options={"flip_p": 0.0})
    assert cfg.method_options == {"temperature": 0.1, "proj_dim": 64, "queue": 4096}
    assert cfg.augment_options == {"crop_scale": [0.3, 1.0], "flip_p": 0.0}


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text("epochs = 3\nlearning_rate = 0.1\n")
    with pytest.raises(UserError) as info:
        make_config(path)
    assert "learning_rate" in str(info.value)
    assert str(path) in str(info.value)


def test_bad_value_in_file_names_key_and_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("epochs = 0\n")
    with pytest.raises(UserError) as info:
        make_config(path)
    assert re.search(r"\bepochs\b", str(info.value)) and str(path) in str(info.value)


@pytest.mark.parametrize("text", ["epochs = ", "epochs = 3\nepochs = 4\n", "[method_options\n", "lr = 0.1.2"])
def test_invalid_toml(tmp_path, text):
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(UserError, match="TOML"):
        make_config(path)


def test_non_utf8_file(tmp_path):
    path = tmp_path / "binary.toml"
    path.write_bytes(b"epochs = \xff\xfe\n")
    with pytest.raises(UserError):
        make_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="missing.toml"):
        make_config(tmp_path / "missing.toml")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(UserError):
        make_config(tmp_path)


def test_dict_override_over_non_table_file_value(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('method_options = "fast"\n')
    with pytest.raises(UserError, match="method_options"):
        make_config(path, method_options={"temperature": 0.1})


def test_every_field_has_a_validated_type():
    # each field rejects a value of a clearly wrong type (a list), so no field escapes validation
    for name, f in FIELDS.items():
        if name == "method_options" or name == "augment_options":
            continue
        with pytest.raises(UserError, match=rf"\b{name}\b"):
            make_config(**{name: [1]})
    assert {f.name for f in dataclasses.fields(Config)} == set(FIELDS)


# ---------------------------------------------------------------- parse_option


@pytest.mark.parametrize("text, expected", [
    ("temperature=0.1", ("temperature", 0.1)),
    ("crop_scale=[0.2,1.0]", ("crop_scale", [0.2, 1.0])),
    ("name=abc", ("name", "abc")),
    ("queue=4096", ("queue", 4096)),
    ("symmetric=true", ("symmetric", True)),
    ("name=\"quoted\"", ("name", "quoted")),
    (" key = 2 ", ("key", 2)),
    ("path=a=b", ("path", "a=b")),
    ("empty=", ("empty", "")),
])
def test_parse_option(text, expected):
    key, value = parse_option(text)
    assert (key, value) == expected
    assert type(value) is type(expected[1])


@pytest.mark.parametrize("text", ["novalue", "=3", " =3", ""])
def test_parse_option_needs_key_and_value(text):
    with pytest.raises(UserError, match="key=value"):
        parse_option(text)


# ---------------------------------------------------------------- runs recorded before an option

def test_saved_configs_without_an_option_get_the_value_older_runs_trained_with():
    """SimCLR's rotation_weight defaults to 0.4 since E-SSL won on validation; a saved SimCLR config
    that does not name it is older than the option and trained without rotation prediction."""
    assert Config().method == "simclr" and method_options("simclr")["rotation_weight"] == 0.4
    older = config_from_dict({"method": "simclr", "method_options": {"temperature": 0.2}}, "old")
    assert older.method_options == {"temperature": 0.2, "rotation_weight": 0.0}
    assert config_from_dict({"method_options": {}}, "old, default method").method_options == {"rotation_weight": 0.0}
    newer = config_from_dict({"method": "simclr", "method_options": {"rotation_weight": 0.4}}, "new")
    assert newer.method_options == {"rotation_weight": 0.4}
    assert config_from_dict({"method": "moco", "method_options": {}}, "moco").method_options == {}
    # SwAV's came in at 0, its earlier runs' value: filled in so old and new records compare alike
    assert config_from_dict({"method": "swav", "method_options": {}}, "swav").method_options == {"rotation_weight": 0.0}


def test_a_run_recorded_before_rotation_weight_loads_as_simclr_alone_and_is_not_taken_for_todays(small_data_dir, tmp_path):
    import torch

    from fashionssl.evaluate import load_trained
    from fashionssl.train import check_same_recipe, pretrain

    run_dir = pretrain(quick_config(tmp_path / "run", small_data_dir, knn_every=0,
                                    method_options={"rotation_weight": 0.0}))
    # Make it look like a run of the version before the option: neither record names it.
    recorded = json.loads((run_dir / "config.json").read_text())
    del recorded["method_options"]["rotation_weight"]
    (run_dir / "config.json").write_text(json.dumps(recorded))
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    del state["config"]["method_options"]["rotation_weight"]
    torch.save(state, run_dir / "checkpoint.pt")

    trained = load_trained(run_dir)  # no rotation head expected, none in the checkpoint
    assert trained.model.rotation_head is None and trained.config.method_options["rotation_weight"] == 0.0
    with pytest.raises(UserError, match=r"method_options\.rotation_weight: the run has 0\.0, asked for 0\.4"):
        check_same_recipe(quick_config(tmp_path / "run", small_data_dir, knn_every=0), run_dir)
