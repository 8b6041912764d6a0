"""tests/conftest.py's CI rule, in inner pytest sessions: under CI=true a skip fails the run unless
ALLOWED_SKIPS names the test; without CI a skip is only reported."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import conftest

pytest_plugins = ["pytester"]

TESTS = Path(__file__).resolve().parent
SKIPPING = {
    "tests/test_browser.py": "import pytest\n\ndef test_in_a_browser():\n    pytest.skip('no browser here')\n",
    "tests/test_optional.py": "import pytest\npytest.importorskip('no_such_module_x')\n\ndef test_a():\n    pass\n",
    "tests/test_plain.py": "def test_ok():\n    assert 1 + 1 == 2\n",
}


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project with the real conftest.py at its tests/ folder and a pytest.ini at its root, so test
    ids read as in this repo ("tests/test_x.py::test_y")."""
    pytester.makeini("[pytest]\naddopts = -rs\n")
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "conftest.py").write_text((TESTS / "conftest.py").read_text())
    return pytester


def run(pytester: pytest.Pytester, monkeypatch, ci: bool) -> pytest.RunResult:
    if ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
    return pytester.runpytest_subprocess()


def test_a_skip_fails_the_run_under_ci_and_lists_test_and_reason(inner, monkeypatch):
    inner.makepyfile(**SKIPPING)
    r = run(inner, monkeypatch, ci=True)
    assert r.ret == pytest.ExitCode.TESTS_FAILED
    r.assert_outcomes(passed=1, skipped=2)
    out = r.stdout.str()
    assert "unexpected skips (CI=true)" in out
    assert "tests/test_browser.py::test_in_a_browser: Skipped: no browser here" in out
    assert re.search(r"tests/test_optional.py: Skipped: could not import 'no_such_module_x'", out)
    assert "2 unexpected skip(s) fail this run" in out


def test_without_ci_a_skip_is_reported_and_the_run_passes(inner, monkeypatch):
    inner.makepyfile(**SKIPPING)
    r = run(inner, monkeypatch, ci=False)
    assert r.ret == pytest.ExitCode.OK
    r.assert_outcomes(passed=1, skipped=2)
    assert "unexpected skips" not in r.stdout.str() and "SKIPPED" in r.stdout.str()  # -rs lists them


def test_an_allowed_skip_passes_under_ci(inner, monkeypatch):
    """The allow-list entry, on a stand-in test with the same id."""
    inner.makepyfile(**{"tests/test_faults.py": (
        "import pytest\n\n"
        "@pytest.mark.parametrize('disk', ['tmpfs-enospc'])\n"
        "def test_disk_full_while_saving_keeps_previous_checkpoint(disk):\n"
        "    pytest.skip('cannot mount a tmpfs here')\n")})
    r = run(inner, monkeypatch, ci=True)
    assert r.ret == pytest.ExitCode.OK
    r.assert_outcomes(skipped=1)


def test_every_allowed_skip_names_a_test_that_exists():
    """A stale entry would hide nothing but rot: each names a real test, file and parameter."""
    for nodeid, reason in conftest.ALLOWED_SKIPS.items():
        path, name = nodeid.split("::")
        function, _, param = name.partition("[")
        source = (TESTS.parent / path).read_text()
        assert f"def {function}(" in source and f'"{param.rstrip("]")}"' in source and reason
