"""Grouped settings: one default per field, flat names, JSON round trip, CLI flags built from the fields."""

import argparse
from dataclasses import fields

import pytest

from woollylib import cli
from woollylib.config import (
    GROUPS,
    EngineConfig,
    OptimConfig,
    Settings,
    add_arguments,
    cli_defaults,
    flat_names,
)


def test_flat_names_are_unique_and_cover_every_field():
    names = flat_names()
    assert len(names) == sum(len(fields(g)) for g in GROUPS.values())
    assert names["optimizer"] == ("optim", "name") and names["scheduler"] == ("schedule", "name")
    assert names["ricap_beta"] == ("engine", "ricap_beta") and names["out_dir"] == ("run", "out_dir")


def test_from_flat_fills_groups_and_round_trips_through_json():
    s = Settings.from_flat(lr=0.1, epochs=3, ricap_beta=0.3, amp="off", weight_decay=5e-4, seed=1)
    assert (s.optim.lr, s.schedule.epochs, s.engine.ricap_beta, s.run.seed) == (0.1, 3, 0.3, 1)
    assert s.engine.amp is False  # the CLI's words become the engine's values
    assert Settings.from_dict(s.to_dict()) == s
    over = Settings.from_flat(s, lr=0.2)
    assert over.optim.lr == 0.2 and over.schedule.epochs == 3 and s.optim.lr == 0.1  # base left alone


def test_unknown_or_bad_settings_are_named():
    with pytest.raises(TypeError, match="unknown setting.*lrr.*the settings are: .*lr"):
        Settings.from_flat(lrr=0.1)
    with pytest.raises(ValueError, match=r"settings\['optim'\] has unknown key\(s\) \['betas'\]"):
        Settings.from_dict({"optim": {"betas": [0.9, 0.99]}})
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        EngineConfig(label_smoothing=1.0)


def test_python_requires_lr_and_epochs_the_command_defaults_them():
    assert OptimConfig().lr is None and Settings().schedule.epochs is None
    defaults = cli_defaults()
    assert defaults["lr"] == 0.05 and defaults["epochs"] == 2 and defaults["seed"] == 0


def test_cli_flags_and_help_come_from_the_fields():
    parser = argparse.ArgumentParser()
    add_arguments(parser, OptimConfig, skip=("lr",))
    args = parser.parse_args(["--optimizer", "adam", "--weight-decay", "0.01", "--nesterov"])
    assert (args.optimizer, args.weight_decay, args.nesterov) == ("adam", 0.01, True)
    assert parser.parse_args([]).momentum is None  # given vs default stays visible to --resume
    text = parser.format_help()
    assert "L2 coefficient added to the gradient every step (default: 0.0)" in " ".join(text.split())
    train_help = cli.get_args_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for flag in ("--ricap", "--tta", "--label-smoothing", "--pct-start", "--scheduler", "--out", "--seed"):
        assert flag in train_help
    with pytest.raises(SystemExit):
        parser.parse_args(["--weight-decay", "nan"])  # non-finite values are refused at parsing
