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


# Wine's own advapi32 writes no event log, but with this WINEDEBUG it
# prints every call: RegisterEventSourceW's source (fixme), each
# ReportEventW's handle, type, category, event ID, SID pointer, string
# count, data size, strings and raw data (fixme), then each string on the
# eventlog channel in the class of its type (trace: information or
# success, warn: warning, err: error), and DeregisterEventSource (fixme).
_WINE_EVENTLOG = "+eventlog,fixme+advapi"
_REPORT = re.compile(
    r"^(?P<tid>\w+):fixme:advapi:ReportEventW \((?P<handle>\w+),0x(?P<type>"
    r"[0-9a-f]+),0x(?P<category>[0-9a-f]+),0x(?P<id>[0-9a-f]+),(?P<sid>\w+),"
    r"0x(?P<nstrings>[0-9a-f]+),0x(?P<datasize>[0-9a-f]+),(?P<strings>\w+),"
    r"(?P<raw>\w+)\): stub$")
_STRING = re.compile(r'^(?P<tid>\w+):(?P<cls>trace|warn|err):eventlog:'
                     r'ReportEventW L"(?P<text>.*)$')
_CLASS_OF_TYPE = {0: "trace", 4: "trace", 2: "warn", 1: "err"}


def _debugstr(text):
    """``text`` as Wine's debugstr_w shows it (ASCII text)."""
    return (text.replace("\\", "\\\\").replace('"', '\\"')
            .replace("\r", "\\r").replace("\n", "\\n"))


def test_eventlog_against_wines_own_advapi32(windows_leg, tmp_path):
    """Once, without the event-log double: the real advapi32 of Wine takes
    the calls, and its debug channel shows each one."""
    import json
    import logoff
    version = winleg.VERSIONS[0]
    win = windows_leg.winpath
    farm = farmlib.Farm(caller=1)
    rds = farm.server("RDS1")
    rds.session(3, "", farmlib.DISCONNECTED, "dave", "CORP")
    rds.session(4, "", farmlib.DISCONNECTED, "erin", "CORP")
    farm.fail("RDS1", "WTSLogoffSession", 5, session=4)
    farm_file = farm.write(str(tmp_path / "farm.txt"))
    log = tmp_path / "audit.jsonl"
    r = windows_leg.run_python(
        version, [win(windows_leg.ROOT / "logoff.py"), "/server:RDS1",
                  "/state:disc", "/eventlog:PyLogoff Test",
                  "/log:" + win(log)],
        cwd=tmp_path, timeout=600, env={
            "WTSDOUBLE_FARM": win(farm_file), "WINEDEBUG": _WINE_EVENTLOG})
    assert r.returncode == 2, _show(r)
    lines = r.stderr.splitlines()
    assert sum('fixme:advapi:RegisterEventSourceW ((null),L"PyLogoff Test")'
               in x for x in lines) == 1, _show(r)
    reports = []
    for i, line in enumerate(lines):
        m = _REPORT.match(line)
        if not m:
            continue
        text = next(s for s in (_STRING.match(x) for x in lines[i + 1:])
                    if s and s.group("tid") == m.group("tid"))
        reports.append((m, text))
    records = [json.loads(x) for x in log.read_text("utf-8").splitlines()]
    # The /log file ends with the summary, as the event log does.
    assert records[-1]["phase"] == "summary"
    assert records[-1]["exit_code"] == 2
    records = records[:-1]
    expected = [logoff.EVENT_IDS[(x["phase"], x["action"], x["result"])]
                for x in records] + [(logoff.EVENT_SUMMARY, 2)]
    assert [(int(m.group("id"), 16), int(m.group("type"), 16))
            for m, _t in reports] == expected, _show(r)
    # A batch's intents first, then their outcomes.
    assert [e for e, _level in expected] == [100, 100, 101, 102, 900]
    handles = {m.group("handle") for m, _t in reports}
    assert len(handles) == 1
    closing = "fixme:advapi:DeregisterEventSource (%s)" % handles.pop()
    assert sum(closing in x for x in lines) == 1, _show(r)
    for (m, text), record in zip(reports, records + [None]):
        assert (int(m.group("category"), 16), int(m.group("nstrings"), 16),
                int(m.group("datasize"), 16), int(m.group("raw"), 16)) == (
            0, 1, 0, 0), m.group(0)
        # The operator's SID from the token, never NULL on Windows.
        assert int(m.group("sid"), 16) != 0
        assert text.group("cls") == _CLASS_OF_TYPE[int(m.group("type"), 16)]
        if record is not None:
            assert text.group("text").startswith(_debugstr(
                logoff._event_sentence(record) + "\r\n" + json.dumps(
                    record, ensure_ascii=True)[:100])), text.group(0)
    assert _debugstr("Run %s ended with exit code 2" % records[0]["run"]) \
        in reports[-1][1].group("text")
