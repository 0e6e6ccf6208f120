"""What more than one test module uses: constants, farms, readers of a run's
outcome, and the package helpers behind conftest's wheel and venv fixtures.

Test modules import from here (``from helpers import ...``; conftest.py puts
tests/ on sys.path), never from one another.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import farm as farmlib
from farm import ACTIVE, CLOCK, DISCONNECTED, HOUR, Farm, standard_farm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WINDOWS = sys.platform == "win32"
POSIX = not WINDOWS
OWN = 0xFFFFFFFF            # WTS_CURRENT_SESSION, as the double logs it


# --- A run's outcome ---------------------------------------------------------

def doc(run):
    """The /json document a run printed."""
    return json.loads(run.out)


def logged_off(entries):
    """(server, session) of each logoff that succeeded, sorted."""
    return sorted((e.server, e.session) for e in entries
                  if e.func == "WTSLogoffSession" and e.ok)


def logoffs(run):
    """``logged_off`` of a run's call log."""
    return logged_off(run.log)


def messages(run):
    """(server, session) of each message sent, sorted."""
    return sorted((e.server, e.session) for e in run.log
                  if e.func == "WTSSendMessageW")


def read_lines(path):
    """The records of a /log file (JSON lines); a blank line is an error."""
    with open(str(path), "rb") as f:
        return [json.loads(x) for x in f.read().decode("utf-8").splitlines()]


# --- Farms -------------------------------------------------------------------

def many_farm(n, server="MANY", logoff_ms=None):
    """``n`` disconnected sessions (100, 101, ...) on ``server``; each
    logoff taking ``logoff_ms`` when given."""
    farm = Farm(caller=1)
    srv = farm.server(server)
    for i in range(n):
        srv.session(100 + i, "", DISCONNECTED, "user%d" % i, "CORP",
                    disconnect=CLOCK - HOUR)
    if logoff_ms:
        farm.latency(server, "WTSLogoffSession", logoff_ms)
    return farm


def warn_farm():
    """Five active sessions on W: warnings reach only active sessions."""
    farm = Farm(caller=1)
    s = farm.server("W")
    s.session(1, "Console", ACTIVE, "admin", "CORP")
    for sid, user in ((11, "gone"), (12, "swapped"), (13, "left"),
                      (14, "stays"), (15, "stays2")):
        s.session(sid, "RDP-Tcp#%d" % sid, ACTIVE, user, "CORP",
                  input=CLOCK - 3 * HOUR)
    return farm


def reference_farm():
    """The reference page's examples: session 12 here, TERM04 on Server1."""
    farm = standard_farm()
    farm.server(".").session(12, "RDP-Tcp#12", ACTIVE, "kim", "CORP")
    server1 = farm.server("Server1")
    server1.session(1, "Console", ACTIVE, "admin", "CORP")
    server1.session(2, "TERM04", ACTIVE, "lee", "CORP")
    server1.session(3, "TERM05", DISCONNECTED, "max", "CORP")
    return farm


# --- The package (conftest's wheel and venv fixtures) ------------------------

DIST = "logoff_py-0.1.0"                  # the wheel's name-version
# Files the wheel carries besides the modules and its .dist-info: the
# compiled catalogues, declared as data files in setup.cfg.
LANGUAGES = ("ja", "zh_CN")
WHEEL_EXTRA = {"%s.data/data/share/logoff-py/locale/%s/LC_MESSAGES/logoff.mo"
               % (DIST, lang) for lang in LANGUAGES}

# Not part of a checkout's state: never copied into the build.
BUILD_JUNK = shutil.ignore_patterns(".git", "build", "dist", "*.egg-info",
                                    "__pycache__", ".pytest_cache", "*.pyc")


def decoded(data):
    return data.decode("utf-8", "replace")


def clean_env(**extra):
    """os.environ without what would steer Python or pip elsewhere."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONSAFEPATH",
                 "PIP_TARGET", "PIP_PREFIX", "PIP_USER",
                 "PIP_REQUIRE_VIRTUALENV", "PIP_NO_INDEX"):
        env.pop(name, None)
    env.update(extra)
    return env


def run_cmd(cmd, timeout=600, **kw):
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("env", clean_env())
    return farmlib.run_child([str(c) for c in cmd], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=timeout, **kw)


def check(proc, what):
    assert proc.returncode == 0, "%s failed (exit %s):\n%s\n%s" % (
        what, proc.returncode, decoded(proc.stdout), decoded(proc.stderr))


class Venv:
    def __init__(self, path):
        self.path = path
        bindir = path / ("Scripts" if WINDOWS else "bin")
        self.python = bindir / ("python.exe" if WINDOWS else "python")
        self.script = bindir / ("pylogoff.exe" if WINDOWS else "pylogoff")

    def command(self, how):
        return ([self.python, "-m", "logoff"] if how == "module"
                else [self.script])


def host_pip_can_target():
    """pip --python (run the host's pip for another interpreter): 22.3+."""
    try:
        import pip
    except ImportError:
        return False
    version = tuple(int(x) for x in re.findall(r"\d+", pip.__version__)[:2])
    return version >= (22, 3)


def sigint_after_warnings(monkeypatch, count):
    """A real SIGINT (POSIX) a moment after the ``count``-th warning went
    out in this process: the grace period has begun.  Returns the timers,
    to join once the run is over."""
    import signal
    import threading
    import wtsapi
    real = wtsapi.Server.send_message
    sent, timers = [], []

    def send(self, *args, **kwargs):
        answer = real(self, *args, **kwargs)
        sent.append(args[0])
        if len(sent) == count:
            timers.append(threading.Timer(0.3, os.kill,
                                          (os.getpid(), signal.SIGINT)))
            timers[0].start()
        return answer
    monkeypatch.setattr(wtsapi.Server, "send_message", send)
    return timers
