"""The command line as a whole: every command and argument explained, start-up without torch."""

import argparse
import subprocess
import sys

import pytest

from cnnkit.cli import build_parser, main, unprefixed
from cnnkit.cli.common import dims
from cnnkit.core.errors import CnnkitError


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_and_argument_has_help():
    parser = build_parser()
    commands = _commands(parser)
    listed = {a.dest for a in next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
              ._choices_actions if a.help}
    assert set(commands) == listed  # each command has a one-line help in `cnnkit --help`
    missing = [f"{name} {action.option_strings or action.dest}" for name, sub in commands.items()
               for action in sub._actions if not isinstance(action, argparse._HelpAction) and not action.help]
    assert not missing, missing
    assert all(sub.description for sub in commands.values()), [n for n, s in commands.items() if not s.description]


def test_help_does_not_import_torch():
    probe = ("import sys\nfrom cnnkit.cli import main\ntry:\n    main(['train', '--help'])\nexcept SystemExit:\n"
             "    pass\nprint('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().endswith("False"), done.stdout[-500:] + done.stderr[-500:]


@pytest.mark.parametrize("text,count,expected", [("1x8x8", 3, (1, 8, 8)), ("3X32X32", 3, (3, 32, 32)),
                                                 ("8", 2, (8, 8)), ("4x6", 2, (4, 6)), ("007x8", 2, (7, 8))])
def test_dims_takes_digits_joined_by_x(text, count, expected):
    assert dims(text, count, "--input-size") == expected


@pytest.mark.parametrize("text", ["3 x32x32", " 3x32x32", "3x32x32 ", "3x32x32x", "x3x32x32", "+3x32x32", "3x-32x32",
                                  "3x32.0x32", "3,32,32", "3xx32", "", "٣x32x32", "3x32x32\n", "3_0x32x32"])
def test_dims_refuses_anything_but_digits_joined_by_x(text):
    with pytest.raises(CnnkitError) as refused:
        dims(text, 3, "--input-size")
    assert str(refused.value) == (f"--input-size {text!r}: expected 3 sizes as digits joined by x, like 1x8x8 (no "
                                  "spaces or signs)")


def test_an_error_names_its_command_once(capsys):
    assert main(["explain", "pool", "--dilation", "2", "--json"]) == 2
    assert capsys.readouterr().err == ("cnnkit explain: error: dilation is for convolutions only (tf.nn pooling has "
                                       "none); received 2\n")
    assert unprefixed("explain: the padded input is 9x9", "explain") == "the padded input is 9x9"
    assert unprefixed("explainer: x", "explain") == "explainer: x"  # only the command's own name followed by ': '
