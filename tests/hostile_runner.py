"""Run many `cnnkit` command lines in one process under an address-space cap; print their outcomes as JSON.

Reads {name: argv} from stdin; prints {name: {"code", "stderr", "stdout"}}. An argv starting with `FSIZE=N` runs
with files capped at N bytes (RLIMIT_FSIZE, SIGXFSZ ignored so writes fail with EFBIG), as on a full disk.
Used by test_hostile.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import sys
import traceback


def main() -> int:
    limit = int(os.environ.get("CNNKIT_HOSTILE_MEMORY", "0"))
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from cnnkit.cli import main as cnnkit_main

    commands = json.load(sys.stdin)
    results = {}
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    unlimited = resource.getrlimit(resource.RLIMIT_FSIZE)
    for name, argv in commands.items():
        out, err = io.StringIO(), io.StringIO()
        if argv and argv[0].startswith("FSIZE="):
            resource.setrlimit(resource.RLIMIT_FSIZE, (int(argv.pop(0)[6:]), unlimited[1]))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cnnkit_main(argv)
            except SystemExit as error:  # argparse refusals
                code = error.code if isinstance(error.code, int) else 1
            except BaseException:  # noqa: BLE001 - a crash is an outcome to report, not to hide
                traceback.print_exc()
                code = 99
        resource.setrlimit(resource.RLIMIT_FSIZE, unlimited)
        results[name] = {"code": code, "stderr": err.getvalue(), "stdout": out.getvalue()[-2000:]}
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
