"""Run many `cnnkit` command lines in one process under an address-space cap; print their outcomes as JSON.

Reads {name: argv} from stdin; prints {name: {"code", "stderr", "stdout"}}. Used by test_hostile.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import sys
import traceback


def main() -> int:
    limit = int(os.environ.get("CNNKIT_HOSTILE_MEMORY", "0"))
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from cnnkit.cli import main as cnnkit_main

    commands = json.load(sys.stdin)
    results = {}
    for name, argv in commands.items():
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cnnkit_main(argv)
            except SystemExit as error:  # argparse refusals
                code = error.code if isinstance(error.code, int) else 1
            except BaseException:  # noqa: BLE001 - a crash is an outcome to report, not to hide
                traceback.print_exc()
                code = 99
        results[name] = {"code": code, "stderr": err.getvalue(), "stdout": out.getvalue()[-2000:]}
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
