"""Fixtures several test modules use, and the rule that a test may not skip unnoticed in CI.

Skips: CI installs every test dependency (requirements-dev.txt), so under CI=true a skipped test
means something broke, and the session fails, listing each skipped test and its reason. A test
may skip for something pip cannot install (a browser, say) only when CI is not "true"; under CI
it must find it or fail. The one exception is ALLOWED_SKIPS below: a test id and why it may skip
even in CI. Keep that list short.
"""
import os

import pytest

ALLOWED_SKIPS = {
    "tests/test_faults.py::test_disk_full_while_saving_keeps_previous_checkpoint[tmpfs-enospc]":
        "mounting a tmpfs needs root, which a CI runner need not grant; the two RLIMIT_FSIZE cases "
        "of the same test check the full-disk path without it",
}


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module (its timing-sensitive kill/resume runs), restored after.
    A module opts in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ---------------------------------------------------------------------------- no unnoticed skips in CI

class UnexpectedSkips:
    """Collects the skips not in ALLOWED_SKIPS; fails the session and lists them at the end."""

    def __init__(self) -> None:
        self.found: list[tuple[str, str]] = []  # (test id, reason)

    def _check(self, report) -> None:
        if report.skipped and not hasattr(report, "wasxfail") and report.nodeid not in ALLOWED_SKIPS:
            # a skip's longrepr is (file, line, "Skipped: reason")
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.found.append((report.nodeid, reason))

    def pytest_runtest_logreport(self, report) -> None:
        self._check(report)

    def pytest_collectreport(self, report) -> None:  # a module-level importorskip skips a whole file
        self._check(report)

    def pytest_sessionfinish(self, session) -> None:
        if self.found and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.found:
            terminalreporter.section("unexpected skips (CI=true)", red=True)
            for nodeid, reason in self.found:
                terminalreporter.line(f"{nodeid}: {reason}")
            terminalreporter.line(f"{len(self.found)} unexpected skip(s) fail this run, as CI installs every test "
                                  f"dependency: install what they need (requirements-dev.txt), or, for something "
                                  f"pip cannot install, add the test to ALLOWED_SKIPS in tests/conftest.py with "
                                  f"its reason", red=True)


def pytest_configure(config) -> None:
    if os.environ.get("CI") == "true":
        config.pluginmanager.register(UnexpectedSkips(), "unexpected-skips")
