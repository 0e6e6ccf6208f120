"""Fixtures: the native test double, compiled once per run, and a leak check
around every test."""

import itertools
import os
import shutil
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for path in (ROOT, HERE):
    if path not in sys.path:
        sys.path.insert(0, path)

import farm as farmlib  # noqa: E402
import helpers  # noqa: E402


@pytest.fixture(scope="session")
def double_path(tmp_path_factory):
    path = farmlib.build(str(tmp_path_factory.mktemp("double")))
    # wtsapi loads lazily and once per process; every test shares this one.
    os.environ["WTSAPI32_DLL"] = path
    return path


@pytest.fixture(scope="session")
def _double(double_path):
    return farmlib.Double(double_path)


@pytest.fixture(autouse=True)
def english(monkeypatch):
    """The tests assert English unless they choose a language themselves:
    a developer's LANG=ja_JP.UTF-8 must not turn them red."""
    monkeypatch.setenv("LOGOFF_LANG", "en")


@pytest.fixture(autouse=True)
def double(_double, tmp_path):
    """The test double, reset to an empty farm; fails the test if it leaks a
    buffer or a server handle, or frees or closes anything wrongly."""
    _double.reset()
    before = _double.leaks()
    yield _double
    # Calls cut off by a timeout may still be sleeping in the double; and a
    # thread whose last call just returned is about to free or close what
    # it holds.  Let both settle; a real leak stays and fails below.
    deadline = time.monotonic() + 15
    while _double.in_flight() and time.monotonic() < deadline:
        time.sleep(0.02)
    settle = time.monotonic() + 2
    after = _double.leaks()
    while after != before and time.monotonic() < settle:
        time.sleep(0.02)
        after = _double.leaks()
    assert after == before, "test double: leak or misuse: %r -> %r" % (
        before, after)


@pytest.fixture(scope="session")
def evt_path(tmp_path_factory):
    """The event-log double (tests/evtdouble.c), built once; from then on
    wtsapi takes the event-log functions from it (ADVAPI32_DLL), in this
    process and in every child."""
    path = farmlib.build(str(tmp_path_factory.mktemp("evtdouble")),
                         source=farmlib.EVT_SOURCE,
                         prebuilt="EVTDOUBLE_PREBUILT")
    os.environ["ADVAPI32_DLL"] = path
    return path


@pytest.fixture(scope="session")
def _evt(evt_path):
    return farmlib.EventDouble(evt_path)


@pytest.fixture
def evt(_evt):
    """The event-log double, its log and failure rules reset; fails the
    test if it leaves a source registered or uses a handle wrongly."""
    _evt.reset()
    _evt.allowed_bad = 0            # bad handles a test makes on purpose
    before = _evt.leaks()
    yield _evt
    after = _evt.leaks()
    after["badhandles"] -= _evt.allowed_bad
    assert after == before, "event-log double: leak or misuse: %r -> %r" % (
        before, after)


@pytest.fixture
def load(double, tmp_path):
    """``load(farm)`` makes ``farm`` the double's farm for this test."""
    def _load(farm=None):
        farm = farm or farmlib.standard_farm()
        double.load(farm, tmp_path / "farm.txt")
        return farm
    return _load


class Outcome:
    """The outcome of one CLI run."""

    def __init__(self, code, out, err, log=None, exit_stats=None):
        self.code, self.out, self.err = code, out, err
        self.log, self.exit_stats = log, exit_stats

    def __repr__(self):
        return "Outcome(code=%r, out=%r, err=%r)" % (
            self.code, self.out, self.err)


@pytest.fixture
def cli(load, double, capsys):
    """``cli(*args)`` runs logoff.main in-process against the loaded farm."""
    import logoff

    def _run(*args):
        capsys.readouterr()
        code = logoff.main(list(args))
        out, err = capsys.readouterr()
        return Outcome(code, out, err, double.log())
    return _run


@pytest.fixture
def run_process(double_path, tmp_path):
    """``run_process(farm, *args, env=..., how=...)`` runs the CLI as a real
    child process (as a scheduled task runs it) against ``farm``; the
    double's call log comes back from a file."""
    counter = itertools.count(1)      # next() is atomic: threads may share

    def _run(farm, *args, how="script", env=None, stdin=None, timeout=60,
             encoding=None):
        n = next(counter)
        farm_file = farm.write(str(tmp_path / ("farm%d.txt" % n)))
        log_file = str(tmp_path / ("calls%d.log" % n))
        full_env = dict(os.environ, WTSAPI32_DLL=double_path,
                        WTSDOUBLE_FARM=farm_file, WTSDOUBLE_LOG=log_file)
        full_env.pop("PYTHONIOENCODING", None)
        full_env.update(env or {})
        if how == "script":
            cmd = [sys.executable, os.path.join(ROOT, "logoff.py")]
        elif how == "module":
            cmd = [sys.executable, "-m", "logoff"]
        else:
            raise ValueError(how)
        proc = farmlib.run_child(cmd + list(args), cwd=ROOT, env=full_env,
                              stdin=subprocess.DEVNULL if stdin is None
                              else stdin, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=timeout)
        try:
            with open(log_file, encoding="utf-8") as f:
                log, stats = farmlib.parse_log(f.read())
        except FileNotFoundError:
            log, stats = [], None
        enc = encoding or "utf-8"
        return Outcome(proc.returncode, proc.stdout.decode(enc, "replace"),
                   proc.stderr.decode(enc, "replace"), log, stats)
    return _run


# --- The package: the wheel ``pip install .`` builds, installed -------------

@pytest.fixture(scope="session")
def wheel(tmp_path_factory):
    """The wheel ``pip install .`` builds, from a clean copy of the
    checkout (an in-tree build would leave build/ and .egg-info behind,
    and a stale build/lib/ would end up in the wheel)."""
    base = tmp_path_factory.mktemp("package")
    src = base / "src"
    shutil.copytree(ROOT, str(src), ignore=helpers.BUILD_JUNK)
    out = base / "wheels"
    proc = helpers.run_cmd([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--disable-pip-version-check",
                            "--wheel-dir", out, src], cwd=str(base))
    helpers.check(proc, "pip wheel (needs the package index for setuptools)")
    wheels = sorted(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="session")
def venv(wheel, tmp_path_factory):
    """A fresh virtual environment with the wheel installed (and nothing
    else: no pip when the host's pip can install into it from outside,
    which also spares Debian's python3 without ensurepip)."""
    import venv as venvlib
    v = helpers.Venv(tmp_path_factory.mktemp("venv") / "env")
    outside = helpers.host_pip_can_target()
    venvlib.EnvBuilder(with_pip=not outside).create(str(v.path))
    pip = ([sys.executable, "-m", "pip", "--python", v.python] if outside
           else [v.python, "-m", "pip"])
    proc = helpers.run_cmd(pip + ["install", "--no-deps", "--no-index",
                                  "--disable-pip-version-check", wheel],
                           cwd=str(v.path))
    helpers.check(proc, "pip install " + wheel.name)
    return v


@pytest.fixture
def elsewhere(tmp_path):
    """An empty working directory: nothing of the checkout next to it."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path
