"""The benchmark script runs, every section reports, and its exact parts
(call counts, calls in flight, threads started) hold.

Timings are reported by benchmarks/run.py, never asserted here."""

import os
import subprocess
import sys
import threading

import pytest

import farm as farmlib
from helpers import ROOT


SECTIONS = ("Start-up", "Translated start-up", "The drop-in path",
            "Calls per operation", "Logoffs in flight", "Slow links",
            "Fan-out", "Many unreachable servers", "Scale")


@pytest.fixture(scope="module")
def quick():
    if sys.platform == "win32":
        pytest.skip("benchmarks build the double with the host cc")
    p = subprocess.run([sys.executable, os.path.join("benchmarks", "run.py"),
                        "--quick"], cwd=ROOT, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def section(out, name):
    assert "\n## %s\n" % name in out, out
    return out.split("\n## %s\n" % name, 1)[1].split("\n## ")[0]


def rows(text):
    """The body rows of the markdown tables in text, as lists of cells."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    body = [line for line in lines
            if not line.startswith("|---")][1:]     # without the header
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in body]


def test_every_section_reports_and_nothing_is_off(quick):
    for name in SECTIONS:
        section(quick, name)
    assert "## Problems" not in quick


def test_call_counts_hold(quick):
    found = rows(section(quick, "Calls per operation"))
    assert len(found) == 13
    for row in found:
        cells = row[2:]
        assert cells and all(c.endswith("✓") for c in cells), row


def test_startup_measures_the_three_forms_and_what_they_compile(quick):
    text = section(quick, "Start-up")
    found = {row[0]: row for row in rows(text)}
    for flags in ("python", "python -S"):
        for cmd in ("logoff.py /?", "logoff.py 12", "-m logoff 12"):
            assert "`%s %s`" % (flags, cmd) in found, found
    # Each against its own floor: the help against a bare interpreter, a
    # run that calls the library against the library loaded bare.
    assert found["`python logoff.py /?`"][1] == "import ctypes"
    assert found["`python -m logoff 12`"][1] == "the library loaded"
    assert "compiles logoff.py" in text
    assert "loads its cached bytecode instead" in text
    assert "imports, beyond what `import ctypes` does" in text
    assert "PYTHONDONTWRITEBYTECODE" in text
    assert "The Windows leg" in text


def test_the_drop_in_path_starts_no_thread_and_makes_two_calls(quick):
    text = section(quick, "The drop-in path")
    tables = text.split("\n\n| ")
    inproc = rows("| " + tables[1].split("\n\n")[0])
    assert len(inproc) == 2
    for row in inproc:
        assert row[1].startswith("0 "), row           # no thread started
        assert row[2].endswith("✓"), row
        assert "WTSEnumerateSessionsExW 1" in row[2]
        assert "WTSLogoffSession 1" in row[2]
    assert "one enumeration and one logoff on X ✓" in text
    assert "not made" in text                  # no pywin32 here, said so
    timed = rows("| " + tables[2])
    assert [row[0] for row in timed] == [
        "`python -m logoff 12 /server:X`", "`python logoff.py 12 /server:X`",
        "`python -m logoff RDP-Tcp#12 /server:X`",
        "`python logoff.py RDP-Tcp#12 /server:X`"]


def test_logoffs_go_eight_at_once(quick):
    found = rows(section(quick, "Logoffs in flight"))
    assert len(found) == 1
    assert found[0][3] == "1e + 40l ✓", found
    assert found[0][4] == "8", found


def test_translated_startup_is_measured_or_says_it_is_not_there(quick):
    text = section(quick, "Translated start-up")
    found = rows(text)
    if "Not available yet" in text:
        assert not found            # no numbers without a translation
    else:
        assert found and all(row[0].startswith("`LOGOFF_LANG=")
                             for row in found)


def test_slow_links_make_one_enumeration_and_one_query_a_session(quick):
    found = rows(section(quick, "Slow links"))
    assert len(found) == 2
    for row in found:
        assert row[3].endswith("✓"), row


def test_many_unreachable_servers_each_fail_once(quick):
    found = rows(section(quick, "Many unreachable servers"))
    assert len(found) >= 2
    for row in found:
        assert row[1].endswith("✓"), row


# --- The same exact counts, without the benchmark: fast and deterministic -----

def test_forty_logoffs_on_one_server_go_eight_at_once(cli, load, double):
    """The double counts the WTSLogoffSession calls running at once: 8 per
    server (logoff.IN_FLIGHT), never more, and each session once."""
    farm = farmlib.Farm(caller=99999)
    srv = farm.server("S")
    srv.session(0, "Services", farmlib.DISCONNECTED)
    for i in range(1, 41):
        srv.session(i, "", farmlib.DISCONNECTED, "u%d" % i, "CORP")
    srv.session(65536, "RDP-Tcp", farmlib.LISTEN)
    # Long enough that a batch's calls are all inside the double at once.
    farm.latency("S", "WTSLogoffSession", 200)
    load(farm)
    run = cli("/state:disc", "/server:S")
    assert run.code == 0, run
    assert double.calls("S", "WTSLogoffSession") == 40
    assert double.calls("S", "WTSEnumerateSessionsExW") == 1
    assert double.max_in_flight_for("S", "WTSLogoffSession") == 8


@pytest.mark.parametrize("args", [["12", "/server:X"],
                                  ["RDP-Tcp#12", "/server:X"]])
def test_the_drop_in_forms_start_no_thread(cli, load, double, monkeypatch,
                                           args):
    """logoff 12 /server:X and logoff NAME /server:X run inline, as
    logoff.exe does: no thread, one enumeration and one logoff on X, and
    only local calls elsewhere."""
    farm = farmlib.Farm(caller=99999)
    x = farm.server("X")
    x.session(0, "Services", farmlib.DISCONNECTED)
    x.session(12, "RDP-Tcp#12", farmlib.ACTIVE, "u12", "CORP")
    x.session(65536, "RDP-Tcp", farmlib.LISTEN)
    load(farm)
    started = []
    original = threading.Thread.start

    def start(thread):
        started.append(thread.name)
        return original(thread)
    monkeypatch.setattr(threading.Thread, "start", start)
    # Workers of the tests before may still be ending: none is new.
    alive = set(threading.enumerate())
    run = cli(*args)
    assert run.code == 0, run
    assert started == [] and set(threading.enumerate()) <= alive
    assert double.rpcs("X") == 2
    assert double.calls("X", "WTSEnumerateSessionsExW") == 1
    assert double.calls("X", "WTSLogoffSession") == 1
    elsewhere = [e for e in run.log if e.server != "X"]
    # This machine ('.', or '' for a call with no handle): the caller's
    # own session ID, and freeing what the library handed out.
    assert {e.server for e in elsewhere} <= {".", ""}, elsewhere
    assert [e.func for e in elsewhere
            if e.func not in farmlib.Double.LOCAL_ONLY] == [
        "WTSQuerySessionInformationW"], elsewhere
