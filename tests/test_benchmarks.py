"""The benchmark script runs, every section reports, and its exact parts
(call counts) hold.

Timings are reported by benchmarks/run.py, never asserted here."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SECTIONS = ("Start-up", "Translated start-up", "Calls per operation",
            "Slow links", "Fan-out", "Many unreachable servers", "Scale")


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
    assert len(found) == 6
    for row in found:
        cells = row[2:]
        assert cells and all(c.endswith("✓") for c in cells), row


def test_startup_measures_the_three_forms_and_what_they_compile(quick):
    text = section(quick, "Start-up")
    commands = [row[0] for row in rows(text)]
    for flags in ("python", "python -S"):
        for cmd in ("logoff.py /?", "logoff.py 12", "-m logoff 12"):
            assert "`%s %s`" % (flags, cmd) in commands, commands
    assert "compiles logoff.py" in text
    assert "loads its cached bytecode instead" in text
    assert "imports, beyond what `import ctypes` does" in text


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
