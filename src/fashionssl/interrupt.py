"""Ctrl-C that stops training between two steps, never in the middle of something.

Python raises KeyboardInterrupt wherever the main thread happens to be when SIGINT arrives. Inside
torch.save it leaves the zip writer half-done, whose clean-up then raises a RuntimeError of its own
(a traceback and exit 1 instead of the one-line exit 130). Inside the TensorBoard writer's queue.put
it can lose the wake-up of the writer thread, and closing the writer then waits out its two-minute
flush interval: a CI run hung there (`gdb` showed the main thread joining the writer thread, which
slept in queue.get), about once in ten Ctrl-C's on a loaded 2-core machine. So while training runs,
SIGINT only sets a flag that the loop reads between steps. A second Ctrl-C interrupts at once, for a
run that no longer reaches a step boundary.
"""

from __future__ import annotations

import signal
import threading


class CtrlC:
    """Takes over SIGINT from Python's own handler until `restore()`. Where SIGINT is ignored (a job
    started with nohup or in the background), handled by someone else, or off the main thread (where
    Python cannot handle signals), nothing changes."""

    def __init__(self) -> None:
        self.pressed = False
        self._previous = None
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    def raise_if_pressed(self) -> None:
        if self.pressed:
            raise KeyboardInterrupt

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
