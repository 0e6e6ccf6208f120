"""The Windows leg: the behavioural tests again, under genuine Windows CPython
3.8 and 3.13 (the official embeddable builds) running in Wine, against the
test double cross-compiled as a Windows DLL.  See tests/winleg.py.

Opt-in on a workstation: run ``python tests/winleg.py prepare`` once (about a
minute: downloads, zig's first Windows build, a Wine prefix); from then on this
file keeps build/winleg/ up to date itself.  With CI set (CI=true) it prepares
everything itself and never skips: a missing tool is a failure.
"""

import importlib.util
import os
import re
import sys
from pathlib import Path

import pytest

import farm as farmlib

if sys.platform == "win32":
    pytest.skip("the Windows leg drives Wine from Linux; on Windows the "
                "behavioural tests run directly", allow_module_level=True)


def _load_winleg():
    if "winleg" in sys.modules:
        return sys.modules["winleg"]
    path = Path(__file__).resolve().with_name("winleg.py")
    spec = importlib.util.spec_from_file_location("winleg", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["winleg"] = module
    spec.loader.exec_module(module)
    return module


winleg = _load_winleg()

# The inner run: every test file but this one.  test_abi.py's header
# probes need zig and skip there; its native check compares Windows
# CPython's real ctypes layouts with the x86-64 header values written here.
# test_package.py builds and installs the wheel with pip and venv, which the
# embeddable build has neither of; the wheel is pure Python, checked on the
# host.
INNER_ARGS = ["-q", "-p", "no:cacheprovider", "-rfEs", "tests",
              "--ignore=tests/test_windows_leg.py",
              "--ignore=tests/test_package.py"]

# pytest's final line, e.g. "12 passed, 1 skipped in 3.40s" (-q) or the same
# framed by "=" signs.
_SUMMARY = re.compile(r"^=*\s*(?P<counts>\d+ \w+(?:, \d+ \w+)*) in [\d.]+s\b")


def _summary(output):
    for line in reversed(output.splitlines()):
        m = _SUMMARY.match(line.strip())
        if m:
            return {word: int(n) for n, word in
                    re.findall(r"(\d+) (\w+)", m.group("counts"))}
    return None


def _show(r):
    return "\n--- inner stdout ---\n%s\n--- inner stderr ---\n%s" % (
        r.stdout, r.stderr)


@pytest.fixture(scope="session")
def windows_leg():
    """build/winleg/, prepared (or updated) once per session."""
    ci = winleg.in_ci()
    missing = winleg.missing_tools()
    if missing:
        reason = "Windows leg: missing %s" % missing
        if ci:
            pytest.fail(reason + " (CI is set, so this is a failure)",
                        pytrace=False)
        pytest.skip(reason)
    if not ci and not winleg.CACHE.exists():
        pytest.skip("Windows leg not enabled: run `python tests/winleg.py "
                    "prepare` once (downloads Windows CPython from PyPI, "
                    "builds the test double DLL with zig, makes a Wine "
                    "prefix), or set CI=true")
    try:
        winleg.prepare()
    except winleg.WinlegError as e:
        pytest.fail("Windows leg: prepare failed: %s" % e, pytrace=False)
    return winleg


@pytest.mark.parametrize("version", winleg.VERSIONS)
def test_behaviour_under_windows_cpython(windows_leg, version):
    import test_abi
    expected = windows_leg.CACHE / "abi-x86_64.json"
    test_abi.write_expected(str(expected), target="x86_64")
    r = windows_leg.run_pytest(version, INNER_ARGS, env={
        "WTS_ABI_EXPECTED": windows_leg.winpath(expected)})
    counts = _summary(r.stdout)
    assert r.returncode == 0, (
        "Windows CPython %s: inner pytest exited %s%s"
        % (version, r.returncode, _show(r)))
    assert counts and counts.get("passed", 0) > 0, (
        "Windows CPython %s: no passed tests reported%s" % (version, _show(r)))
    bad = {k: v for k, v in counts.items()
           if k in ("failed", "error", "errors")}
    assert not bad, "Windows CPython %s: %r%s" % (version, bad, _show(r))
    # On success too, the inner summary is worth a line in -rA / -s output.
    print("Windows CPython %s: %s" % (version, counts))


@pytest.mark.parametrize("version", winleg.VERSIONS)
def test_script_finds_wtsapi_beside_it(windows_leg, version, tmp_path):
    """As an administrator runs it: ``python.exe <folder>\\logoff.py`` with
    the embeddable build as unzipped, whose ``._pth`` lists only the
    interpreter's own files, so neither the project folder nor the
    script's own folder is on sys.path; from another directory."""
    win = windows_leg.winpath
    script = win(windows_leg.ROOT / "logoff.py")

    def run(*args, **env):
        return windows_leg.run_python(version, list(args), cwd=tmp_path,
                                      env=env, bare=True, timeout=600)

    # The premise: nothing of the project is importable by itself.
    probe = run("-c", "import sys, importlib.util as u; "
                "print(u.find_spec('wtsapi')); print(sys.path)")
    assert probe.returncode == 0, _show(probe)
    found, path = probe.stdout.splitlines()[:2]
    assert found == "None", _show(probe)
    assert win(windows_leg.ROOT).lower() not in path.lower(), _show(probe)

    r = run(script, "/?")
    assert r.returncode == 0, _show(r)
    assert "/server:" in r.stdout.lower(), _show(r)

    farm_file = farmlib.standard_farm().write(str(tmp_path / "farm.txt"))
    log_file = tmp_path / "calls.log"
    r = run(script, "3", WTSDOUBLE_FARM=win(farm_file),
            WTSDOUBLE_LOG=win(log_file))
    assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), _show(r)
    log, stats = farmlib.parse_log(log_file.read_text(encoding="utf-8"))
    assert [(e.func, e.server, e.session) for e in log
            if e.func in farmlib.Double.STATE_CHANGING] == [
        ("WTSLogoffSession", ".", 3)]
    assert stats == dict(live=0, handles=0, badfrees=0, badhandles=0,
                         inflight=0)
