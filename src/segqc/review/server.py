"""Run the review app with uvicorn on one port and open the browser page."""

from __future__ import annotations

import socket
import threading
import webbrowser
from collections.abc import Callable
from typing import Any

from segqc.errors import InputError
from segqc.review.app import LOCAL_HOSTS, ReviewSession, create_app


def check_address(host: str, port: int) -> int:
    """Bind every address of ``host`` on ``port`` as the server will (``SO_REUSEADDR``, IPv6
    sockets IPv6 only) and let go again; returns the port (a free one for 0). Raises
    :class:`InputError` naming ``host:port`` when the server could not listen there: an unknown
    host, an address this machine does not have, a port in use or one that needs privileges."""
    shown = f"[{host}]" if ":" in host else host
    where = f"{shown}:{port}" if port else shown
    try:
        infos = socket.getaddrinfo(host, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise InputError(f"{where}: cannot listen there: unknown host ({reason})") from None
    probes: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            probe = socket.socket(family, kind, proto)
            probes.append(probe)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind((address[0], port, *address[2:]))
            port = port or int(probe.getsockname()[1])
    except OSError as error:
        where = f"{shown}:{port}" if port else shown
        raise InputError(f"{where}: cannot listen there: {(error.strerror or str(error)).lower()}") from None
    finally:
        for probe in probes:
            probe.close()
    return port


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now (:func:`check_address` with port 0)."""
    return check_address(host, 0)


def make_server(session: ReviewSession, *, host: str = "127.0.0.1", port: int = 0) -> tuple[Any, str]:
    """A uvicorn server of ``session`` (not started) and the address of its page. ``port`` 0
    picks a free one. On a host other than the local ones every ``Host`` header is accepted
    (the user asked for it with ``--host``). Raises :class:`InputError` naming ``host:port`` when
    the server could not listen there (:func:`check_address`)."""
    import uvicorn

    port = check_address(host, port)
    app = create_app(session, allowed_hosts=LOCAL_HOSTS if host in LOCAL_HOSTS else ("*",))
    shown = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    return uvicorn.Server(config), f"http://{shown}:{port}/"


def serve(session: ReviewSession, *, host: str = "127.0.0.1", port: int = 0, open_browser: bool = True,
          on_start: Callable[[str], None] | None = None) -> None:
    """Serve ``session`` until Ctrl-C (which reaches the caller as ``KeyboardInterrupt`` once the
    server has stopped); ``on_start`` gets the page's address once the server listens, then the
    browser opens it (unless ``open_browser`` is False)."""
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
