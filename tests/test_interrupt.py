"""Ctrl-C during training: a flag read between steps, a second press at once, handlers restored."""

from __future__ import annotations

import signal
import threading

import pytest

from fashionssl.interrupt import CtrlC


def test_first_press_is_deferred_second_interrupts_at_once(python_sigint):
    ctrl_c = CtrlC()
    try:
        ctrl_c.raise_if_pressed()  # nothing pressed yet
        signal.raise_signal(signal.SIGINT)  # no exception here, in the middle of whatever runs
        assert ctrl_c.pressed
        with pytest.raises(KeyboardInterrupt):
            ctrl_c.raise_if_pressed()  # ... but at the next step boundary
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # pressed again: at once
    finally:
        ctrl_c.restore()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)  # Python's own handling is back


def test_ignored_sigint_stays_ignored(python_sigint):
    """Under nohup, or in a job started in the background, SIGINT is ignored: training keeps it so."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctrl_c = CtrlC()
    signal.raise_signal(signal.SIGINT)
    assert not ctrl_c.pressed
    ctrl_c.restore()
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def test_off_the_main_thread_nothing_changes(python_sigint):
    """signal.signal works only on the main thread: a training run in a worker thread leaves it alone."""
    errors = []

    def train():
        try:
            CtrlC().restore()
        except Exception as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    thread = threading.Thread(target=train)
    thread.start()
    thread.join()
    assert errors == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
