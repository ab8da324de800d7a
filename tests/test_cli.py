"""The command line as a whole: every command and argument explained, start-up without torch."""

import argparse
import subprocess
import sys

from cnnkit.cli import build_parser


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
