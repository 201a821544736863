"""The command line explains itself (issue 25, item 7): what mmkit is in one line, a description per
command, help and default for every option, examples, what each reproduce preset does and costs."""
import argparse
import re
import subprocess
import sys

import pytest

from mmkit.__main__ import DESCRIPTION, PRESETS, build_parser
from mmkit.model.config import TrainConfig


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _shown(default) -> str:
    """How a default reads in a help text: a tuple of fractions as ``0.8,0.1,0.1``."""
    return ",".join(f"{x:g}" for x in default) if isinstance(default, tuple) else str(default)


COMMANDS = sorted(_subparsers(build_parser()))


def test_every_command_is_listed_with_one_line_and_has_a_description():
    parser = build_parser()
    help_actions = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))._choices_actions
    assert sorted(a.dest for a in help_actions) == COMMANDS
    for a in help_actions:
        assert a.help and "\n" not in a.help, a.dest
    for name, sub in _subparsers(parser).items():
        first = " ".join(sub.description.split("\n\n")[0].split())
        assert first.rstrip(".").lower() == next(a.help for a in help_actions if a.dest == name).lower(), name
        assert sub.epilog.startswith("examples:\n  python -m mmkit "), name


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help_and_shows_its_default(command):
    sub = _subparsers(build_parser())[command]
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"{command} {name}: no help"
        flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        if flag or action.required or not action.option_strings:
            continue  # a switch is off unless given; required options and positionals have no default
        assert "default" in action.help, f"{command} {name}: the help does not say the default"
        if action.default is not None:
            assert _shown(action.default) in action.help, f"{command} {name}: default {action.default!r} not shown"


def test_train_shows_trainconfig_defaults():
    """train's options default to None (so that --config values stay), the help shows TrainConfig's."""
    config = TrainConfig()
    sub = _subparsers(build_parser())["train"]
    helps = {a.dest: a.help for a in sub._actions}
    for field in ("epochs", "seed", "dim", "batch_size", "threads", "method", "contrastive", "encoder"):
        assert f"(default: {getattr(config, field)})" in helps[field] or \
            f"default: {getattr(config, field)})" in helps[field], field
    assert f"default: {config.lambda_s:g})" in helps["lambda_s"]


def test_reproduce_presets_say_what_they_do_and_cost():
    sub = _subparsers(build_parser())["reproduce"]
    preset = next(a for a in sub._actions if a.dest == "preset")
    assert set(preset.choices) == set(PRESETS)
    from mmkit.pipeline.reproduce import PIPELINE_PRESETS

    assert set(PRESETS) == set(PIPELINE_PRESETS)
    for name, text in PRESETS.items():
        cfg = PIPELINE_PRESETS[name]
        assert f"{cfg['train']['epochs']} epochs" in text and cfg["data"] in text, name
        assert f"{len(cfg['seeds'])} seed" in text, name
        assert re.search(r"\bmin\b|\bhour\b|\bminute\b", text), f"{name}: no cost"
        assert f"  {name}" in sub.format_help()


def test_top_level_help_in_a_fresh_process():
    """What a user sees: the one-line description first, commands, examples; no doc markup."""
    proc = subprocess.run([sys.executable, "-m", "mmkit", "--help"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[2] == DESCRIPTION and len(DESCRIPTION) <= 120
    assert "``" not in proc.stdout and ":func:" not in proc.stdout and ":data:" not in proc.stdout
    assert "examples:" in proc.stdout and "python -m mmkit reproduce --preset smoke" in proc.stdout
    for command in COMMANDS:
        assert re.search(rf"^    {re.escape(command)}\b", proc.stdout, re.M), command


@pytest.mark.parametrize("argv,card", [
    (["--preset", "small"], "reports/dataset_card.md"),            # the committed card of make reproduce
    (["--preset", "tiny"], "reports/dataset_card_tiny.md"),        # other presets never overwrite it
    (["--preset", "tiny", "--card", ""], None),                     # '' skips the card
    (["--preset", "small", "--card", "x.md"], "x.md"),
])
def test_build_data_card_path(monkeypatch, argv, card):
    import mmkit.data.embedded.build as build
    from mmkit.__main__ import main

    seen = {}

    def fake(preset, **kw):
        seen["card"] = kw["card"]
        return {"bundle": "b", "items": 1, "train": 1, "val": 0, "test": 0, "skipped": 0, "seconds": 0}

    monkeypatch.setattr(build, "build_dataset", fake)
    assert main(["build-data", *argv]) == 0
    assert seen["card"] == card
