"""run_cancellable: a long call that cannot be split still answers a cancel at once."""

from __future__ import annotations

import time

import pytest

from segparts.engines.base import Cancelled, CancelToken, run_cancellable


def test_a_cancel_during_a_long_call_is_answered_at_once():
    token = CancelToken()
    started = time.monotonic()

    def check():
        if time.monotonic() - started > 0.2:
            token.cancel()
        token.check()

    with pytest.raises(Cancelled):
        run_cancellable(lambda: time.sleep(5.0), check, poll_s=0.02)
    assert time.monotonic() - started < 1.0  # not the 5 s of the call


def test_the_value_and_the_errors_of_the_call_come_back():
    assert run_cancellable(lambda: 6 * 7, lambda: None) == 42
    with pytest.raises(ZeroDivisionError):
        run_cancellable(lambda: 1 / 0, lambda: None)
