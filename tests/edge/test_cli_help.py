"""`rapha-edge --version`, and help text on every option a hospital administrator sees."""

from __future__ import annotations

import argparse

import pytest

from edge_kernel.cli import build_parser
from jupyter_rapha import __version__


def _parsers(parser: argparse.ArgumentParser, prefix: str = "rapha-edge"):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{prefix} {name}")


def test_version(capsys):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["--version"])
    assert stopped.value.code == 0 and __version__ in capsys.readouterr().out


def test_every_option_and_argument_has_help():
    missing = [f"{where} {action.dest}" for where, parser in _parsers(build_parser()) for action in parser._actions
               if not isinstance(action, argparse._SubParsersAction) and action.dest != "help" and not action.help]
    assert not missing, missing
