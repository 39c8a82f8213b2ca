"""SIGTERM as Ctrl-C while a search trains, and held off while its outputs are written."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt, so both end the search the same way."""



@contextmanager
def sigterm_as_interrupt() -> Iterator[list[int]]:
    """Inside the block the first SIGTERM raises ``Terminated``; later ones are only noted."""
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        if len(received) == 1:
            raise Terminated()

    with _sigterm_handler(handler):
        yield received


@contextmanager
def sigterm_deferred() -> Iterator[list[int]]:
    """Inside the block SIGTERM is only noted: what is being written gets finished."""
    received: list[int] = []
    with _sigterm_handler(lambda signum, frame: received.append(signum)):
        yield received


@contextmanager
def _sigterm_handler(handler: Any) -> Iterator[None]:
    """``handler`` for SIGTERM inside the block, the previous one restored after; outside the main
    thread (where Python cannot set handlers) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
