"""The package: the repository's layout, the wheel that ``pip install .``
builds, and that wheel installed in a fresh virtual environment, where
``python -m logoff`` and ``pylogoff`` work from any directory.

Building needs the package index (pip's isolated build environment installs
setuptools); CI has it.
"""

import configparser
import os
import re
import shutil
import subprocess
import zipfile

import pytest

import farm as farmlib
import logoff
from helpers import (BUILD_JUNK, DIST, ROOT, WHEEL_EXTRA, check, clean_env,
                     decoded, run_cmd)

MODULES = {"logoff.py", "wtsapi.py"}
ENTRY_POINTS = {"console_scripts": {"pylogoff": "logoff:main"}}
DIST_INFO_FILES = {"METADATA", "WHEEL", "RECORD", "entry_points.txt"}
DIST_INFO_OPTIONAL = {"top_level.txt"}     # setuptools writes it

# The repository's top level (tracked files and folders).  docs/ holds the
# contributors' pages the README links to.
TOP_LEVEL_REQUIRED = {"setup.cfg", "pyproject.toml", "README.md", "logoff.py",
                      "wtsapi.py", "tests", ".ci", "benchmarks", "docs"}
TOP_LEVEL_OPTIONAL = {"locale", ".gitignore"}

# The README's test command, which .ci/run runs as its last line.
README_TEST_COMMAND = ("python3 -m pip install -r tests/requirements.txt "
                       "&& python3 -m pytest")


# --- The repository ---------------------------------------------------------

def _top_level():
    # A worktree's .git is a file naming its git directory.
    if os.path.exists(os.path.join(ROOT, ".git")) and shutil.which("git"):
        p = subprocess.run(["git", "-C", ROOT, "ls-files", "-z"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if p.returncode == 0:
            return {name.split("/")[0]
                    for name in decoded(p.stdout).split("\0") if name}
    # Not a git checkout: what is there, minus what a build or run leaves.
    return {name for name in os.listdir(ROOT)
            if not BUILD_JUNK(ROOT, [name]) and name != ".git"}


def test_top_level_layout():
    top = _top_level()
    assert not TOP_LEVEL_REQUIRED - top, (
        "missing at the top level: %s" % sorted(TOP_LEVEL_REQUIRED - top))
    assert top <= TOP_LEVEL_REQUIRED | TOP_LEVEL_OPTIONAL, (
        "not part of the layout: %s" % sorted(
            top - TOP_LEVEL_REQUIRED - TOP_LEVEL_OPTIONAL))


def test_pyproject_only_names_the_build_backend():
    with open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8") as f:
        text = f.read()
    try:
        import tomllib                       # 3.11+
    except ImportError:
        tomllib = None
    if tomllib is not None:
        data = tomllib.loads(text)
        assert set(data) == {"build-system"}
        assert set(data["build-system"]) == {"requires", "build-backend"}
        assert data["build-system"]["build-backend"] == "setuptools.build_meta"
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith("#")]
    assert lines[0] == "[build-system]"
    assert [line.split("=")[0].strip() for line in lines[1:]] == [
        "requires", "build-backend"]


def test_setup_cfg_names_the_modules_and_the_script():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"), encoding="utf-8")
    modules = cfg["options"]["py_modules"].replace(",", " ").split()
    assert sorted(modules) == ["logoff", "wtsapi"]
    scripts = [line.strip() for line in
               cfg["options.entry_points"]["console_scripts"].splitlines()
               if line.strip()]
    assert scripts == ["pylogoff = logoff:main"]
    assert cfg["tool:pytest"]["testpaths"].split() == ["tests"]


def test_requirements_pin_zig_and_bound_pytest():
    with open(os.path.join(ROOT, "tests", "requirements.txt"),
              encoding="utf-8") as f:
        reqs = [line.split("#")[0].strip() for line in f]
    reqs = [r for r in reqs if r]
    assert "ziglang==0.17.0" in reqs
    pytest_reqs = [r for r in reqs if re.match(r"pytest\b", r)]
    assert len(pytest_reqs) == 1 and "<" in pytest_reqs[0], pytest_reqs


def _ci_last_command():
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    commands = [line for line in lines if line and not line.startswith("#")]
    return commands[-1], lines


def test_ci_ends_with_the_readme_test_command():
    last, lines = _ci_last_command()
    assert last == README_TEST_COMMAND
    assert "set -euo pipefail" in lines
    # Nothing may turn pytest's exit code into success (5: no tests ran).
    assert "||" not in last and "exit 0" not in lines


def test_readme_gives_the_test_command():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    found = [line for line in readme.splitlines()
             if line.strip().startswith(README_TEST_COMMAND)]
    assert found, "README.md does not give the test command %r" % (
        README_TEST_COMMAND,)


# --- The wheel --------------------------------------------------------------
# (The wheel, venv and elsewhere fixtures are conftest.py's: test_l10n.py
# checks the installed catalogues with them.)

def test_wheel_holds_exactly_the_modules_and_the_entry_point(wheel):
    assert wheel.name == DIST + "-py3-none-any.whl"
    with zipfile.ZipFile(str(wheel)) as z:
        names = set(z.namelist())
        dist_info = DIST + ".dist-info/"
        meta = {n[len(dist_info):] for n in names if n.startswith(dist_info)}
        others = {n for n in names if not n.startswith(dist_info)}
        assert others == MODULES | WHEEL_EXTRA
        assert DIST_INFO_FILES <= meta <= DIST_INFO_FILES | DIST_INFO_OPTIONAL
        read = lambda n: z.read(dist_info + n).decode("utf-8")
        entry_points = configparser.ConfigParser(delimiters=("=",))
        entry_points.optionxform = str
        entry_points.read_string(read("entry_points.txt"))
        assert {s: dict(entry_points[s]) for s in entry_points.sections()} \
            == ENTRY_POINTS
        if "top_level.txt" in meta:
            assert read("top_level.txt").split() == ["logoff", "wtsapi"]
        record = {line.split(",")[0] for line in read("RECORD").splitlines()
                  if line}
        assert record == names
        metadata = read("METADATA")
        wheel_info = read("WHEEL")
    assert re.search(r"^Name: logoff-py$", metadata, re.M)
    assert re.search(r"^Requires-Python: >=3\.8$", metadata, re.M)
    assert not re.search(r"^Requires-Dist:", metadata, re.M), "zero deps"
    assert re.search(r"^Root-Is-Purelib: true$", wheel_info, re.M)
    assert re.search(r"^Tag: py3-none-any$", wheel_info, re.M)


# --- Installed --------------------------------------------------------------

def test_installed_modules_come_from_the_venv(venv, elsewhere):
    code = ("import logoff, wtsapi, importlib.util as u; "
            "print(logoff.__file__); print(wtsapi.__file__); "
            "print(u.find_spec('_logoff'))")
    proc = run_cmd([venv.python, "-c", code], cwd=str(elsewhere))
    check(proc, "import logoff, wtsapi in the venv")
    logoff_file, wtsapi_file, private = decoded(proc.stdout).splitlines()
    venv_root = os.path.realpath(str(venv.path))
    for path in (logoff_file, wtsapi_file):
        path = os.path.realpath(path)
        assert os.path.commonpath([path, venv_root]) == venv_root, path
    assert private == "None"


@pytest.mark.parametrize("how", ["module", "script"])
def test_help_from_any_directory(venv, elsewhere, how):
    proc = run_cmd(venv.command(how) + ["/?"], cwd=str(elsewhere))
    out, err = decoded(proc.stdout), decoded(proc.stderr)
    assert (proc.returncode, err) == (0, ""), out
    prog = "python3 -m logoff" if how == "module" else "pylogoff"
    assert out == logoff.USAGE_BASIC % {"prog": prog} + logoff.USAGE_MORE % {}


@pytest.mark.parametrize("how", ["module", "script"])
def test_logs_off_against_the_double(venv, elsewhere, double_path, how):
    farm_file = farmlib.standard_farm().write(str(elsewhere / "farm.txt"))
    log_file = str(elsewhere / "calls.log")
    proc = run_cmd(venv.command(how) + ["3"], cwd=str(elsewhere),
                env=clean_env(WTSAPI32_DLL=double_path,
                               WTSDOUBLE_FARM=farm_file,
                               WTSDOUBLE_LOG=log_file))
    out, err = decoded(proc.stdout), decoded(proc.stderr)
    assert (proc.returncode, out, err) == (0, "", "")
    with open(log_file, encoding="utf-8") as f:
        log, stats = farmlib.parse_log(f.read())
    changes = [(e.func, e.server, e.session) for e in log
               if e.func in farmlib.Double.STATE_CHANGING]
    assert changes == [("WTSLogoffSession", ".", 3)]
    assert stats == dict(live=0, handles=0, badfrees=0, badhandles=0,
                         inflight=0)
