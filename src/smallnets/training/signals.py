"""Ctrl-C and SIGTERM during training: the first asks the loop to stop after the current step and
save; a second Ctrl-C stops at once (KeyboardInterrupt), or, while a checkpoint is being written,
as soon as it is complete, so that state and weights on disk stay a pair."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator


class StopRequests:
    """The stop requests of one training session; ``reason`` is the first signal's name, or None."""

    def __init__(self, *, announce: bool = True):
        self.announce = announce  # print what happens (rank 0 only)
        self.reason: str | None = None
        self.saving = False  # inside saving(): a second Ctrl-C waits for the checkpoint to be complete
        self.abort_pending = False
        self.aborting = False  # a second Ctrl-C is being handled: further ones are ignored

    def handle(self, signum, frame) -> None:
        if self.aborting or self.abort_pending:
            return
        if self.reason is not None and signum == signal.SIGINT:  # a second Ctrl-C: stop now, without a new save
            if self.saving:
                self.abort_pending = True  # raised when the checkpoint being written is complete
                self._say("SIGINT again: stopping once the checkpoint being written is complete")
                return
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name
        self._say(f"\n{self.reason} received: saving a checkpoint after this step (Ctrl-C again to abort)")

    def _say(self, text: str) -> None:
        if self.announce:
            print(text, file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """SIGINT and SIGTERM go to :meth:`handle` inside the block (main thread only), then back to their old handlers."""
        old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, self.handle)
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    @contextlib.contextmanager
    def saving_block(self) -> Iterator[None]:
        """A checkpoint is written inside: a second Ctrl-C meanwhile is raised once the block is done."""
        self.saving = True
        try:
            yield
        finally:
            self.saving = False
        if self.abort_pending:
            raise KeyboardInterrupt
