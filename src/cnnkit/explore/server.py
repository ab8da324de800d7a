"""Serve the explore page with uvicorn on a socket bound up front (a free port unless one is named)."""

from __future__ import annotations

import ipaddress
import socket
import threading

import uvicorn

from cnnkit.core.errors import CnnkitError
from cnnkit.explore.app import create_app
from cnnkit.explore.session import Explorer


def exposure_warning(host: str) -> str | None:
    """A warning when `host` lets other machines reach the server, else None."""
    if host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return (f"--host {host} makes the explorer and its model reachable by other machines on your network; "
            "anyone who can reach it can use the model (it serves no files)")


class ExploreServer:
    """The explorer's uvicorn server on an already bound socket, so the URL is known before it starts."""

    def __init__(self, explorer: Explorer, host: str = "127.0.0.1", port: int = 0,
                 retry: str = "check --host, or pass --port 0 for a free port") -> None:
        """`retry` ends the message when the port cannot be bound: what to change, in the caller's own terms
        (command-line flags here, `show`'s arguments in a notebook)."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP by name: asyncio sets TCP_NODELAY on accepted connections only then (with proto 0, each
        # keep-alive response waits ~40 ms for a delayed ACK).
        self.socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except (OSError, OverflowError) as error:  # in use, not an address of this machine, not 0..65535
            self.socket.close()
            reason = getattr(error, "strerror", None) or error
            raise CnnkitError(f"cannot listen on {host}:{port} ({reason}); {retry}") from None
        self.socket.listen(128)  # connections wait in the queue until uvicorn accepts them
        self.port = self.socket.getsockname()[1]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/"
        self.server = uvicorn.Server(uvicorn.Config(create_app(explorer), log_level="warning", access_log=False))
        self.thread: threading.Thread | None = None

    def run(self) -> None:
        """Serve until interrupted (Ctrl+C)."""
        self.server.run(sockets=[self.socket])

    def start(self) -> ExploreServer:
        """Serve from a background thread (tests, benchmarks); returns once it accepts requests."""
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise CnnkitError(f"the explore server on port {self.port} stopped while starting")
            self.thread.join(0.01)
        return self

    def stop(self) -> None:
        """Ask a background server to finish and wait for it."""
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)
        self.socket.close()
