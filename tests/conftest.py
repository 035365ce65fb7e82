"""Test-session rules shared by every test folder.

Tests that need `../shared` (benchmark samples, the releases' golden outputs) skip on a developer
machine without it. Under CI (`CI=true`) such a skip would hide that nothing was checked, so it
becomes a failure with the same reason (`golden.require_shared` is the helper new tests use)."""

from __future__ import annotations

import os

import pytest

SHARED_MARK = "shared"  # every shared-data skip names the ../shared path or folder


def _under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and _under_ci():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if SHARED_MARK in reason:
            report.outcome = "failed"
            report.longrepr = f"CI=true and the shared data is missing: {reason}"
