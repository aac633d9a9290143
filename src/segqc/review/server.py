"""Run the review app with uvicorn on one port and open the browser page."""

from __future__ import annotations

import socket
import threading
import webbrowser
from collections.abc import Callable
from typing import Any

from segqc.review.app import LOCAL_HOSTS, ReviewSession, create_app


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def make_server(session: ReviewSession, *, host: str = "127.0.0.1", port: int = 0) -> tuple[Any, str]:
    """A uvicorn server of ``session`` (not started) and the address of its page. ``port`` 0
    picks a free one. On a host other than the local ones every ``Host`` header is accepted
    (the user asked for it with ``--host``)."""
    import uvicorn

    port = port or free_port(host)
    app = create_app(session, allowed_hosts=LOCAL_HOSTS if host in LOCAL_HOSTS else ("*",))
    shown = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    return uvicorn.Server(config), f"http://{shown}:{port}/"


def serve(session: ReviewSession, *, host: str = "127.0.0.1", port: int = 0, open_browser: bool = True,
          on_start: Callable[[str], None] | None = None) -> None:
    """Serve ``session`` until Ctrl-C; ``on_start`` gets the page's address once the server
    listens, then the browser opens it (unless ``open_browser`` is False)."""
    server, url = make_server(session, host=host, port=port)

    def announce() -> None:
        while not server.started and not server.should_exit:
            threading.Event().wait(0.05)
        if server.started:
            if on_start is not None:
                on_start(url)
            if open_browser:
                webbrowser.open(url)

    threading.Thread(target=announce, daemon=True).start()
    server.run()
