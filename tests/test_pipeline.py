"""The CLI as the pipeline it is (issue: one module): plan, then act; one way
phases run; concurrency bounds; progress on a console; the module's shape."""

import ast
import json
import os
import subprocess
import sys

import pytest

import logoff
from farm import ACTIVE, DISCONNECTED, Farm
from helpers import ROOT, doc, logoffs



def three_servers():
    farm = Farm(caller=1)
    for name in ("A", "B", "C"):
        srv = farm.server(name)
        srv.session(3, "", DISCONNECTED, "u" + name, "CORP")
        srv.session(4, "RDP-Tcp#4", ACTIVE, "v" + name, "CORP")
    return farm


# --- Plan, then act -------------------------------------------------------------

def test_every_server_is_read_before_anything_changes(cli, load):
    load(three_servers())
    r = cli("/state:disc,active", "/server:A,B,C")
    assert r.code == 0, r.err
    funcs = [e.func for e in r.log]
    first_change = funcs.index("WTSLogoffSession")
    assert funcs[:first_change].count("WTSEnumerateSessionsExW") == 3
    assert len(logoffs(r)) == 6


def test_max_changes_nothing_when_the_plan_is_larger(cli, load, double):
    load(three_servers())
    r = cli("/state:disc,active", "/server:A,B,C", "/max:5", "/json")
    d = doc(r)
    assert r.code == d["exit_code"] == 1
    assert logoffs(r) == []
    assert {s["result"] for s in d["sessions"]} == {"not-attempted"}
    assert all("more than /max:5" in s["message"] for s in d["sessions"])
    r = cli("/state:disc,active", "/server:A,B,C", "/max:5")
    assert "holds 6 sessions, more than /max:5" in r.err
    load(three_servers())
    r = cli("/state:disc,active", "/server:A,B,C", "/max:6")
    assert r.code == 0 and len(logoffs(r)) == 6


def test_max_with_whatif_reports_the_plan(cli, load):
    load(three_servers())
    r = cli("/state:disc", "/server:A,B,C", "/max:2", "/whatif")
    assert r.code == 1
    assert r.out.count("What if: log off") == 3
    assert "more than /max:2" in r.err


def test_timeout_does_not_cut_a_named_session(cli, load, double):
    # logoff.exe-style, one session on one server: the drop-in form calls
    # Windows inline, as logoff.exe does, with no /timeout: a server that
    # takes longer than /timeout to answer is waited for, not given up.
    farm = Farm(caller=1)
    farm.server("X").session(2, "RDP-Tcp#2", ACTIVE, "u", "CORP")
    farm.latency("X", "WTSEnumerateSessionsExW", 1000)
    load(farm)
    r = cli("2", "/server:X", "/timeout:0.5")
    assert (r.code, r.err) == (0, "")
    assert logoffs(r) == [("X", 2)]
    assert double.calls("X", "WTSEnumerateSessionsExW") == 1


def test_one_handle_per_server_across_phases(cli, load, double):
    load(three_servers())
    r = cli("/state:active", "/server:A,B,C", "/warn:bye", "/grace:0")
    assert r.code == 0, r.err
    for name in ("A", "B", "C"):
        assert double.calls(name, "WTSOpenServerW") == 1
        assert double.calls(name, "WTSCloseServer") == 1


# --- Progress on long runs ------------------------------------------------------

def _run_with_pty_stderr(double_path, tmp_path, *args):
    import pty
    farm = three_servers()
    for name in ("A", "B", "C"):
        farm.latency(name, "WTSEnumerateSessionsExW", 300)
    farm_file = farm.write(str(tmp_path / "farm.txt"))
    env = dict(os.environ, WTSAPI32_DLL=double_path, WTSDOUBLE_FARM=farm_file)
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "logoff.py"] + list(args), cwd=ROOT,
                         env=env, stdout=subprocess.PIPE, stderr=slave,
                         stdin=subprocess.DEVNULL)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:                  # the child closed the pty
            break
        if not chunk:
            break
        seen += chunk
    out = p.communicate(timeout=60)[0]
    os.close(master)
    return p.returncode, out, seen


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX pseudo-terminal")
def test_progress_line_on_a_console(double_path, tmp_path):
    code, out, err = _run_with_pty_stderr(double_path, tmp_path,
                                          "/state:disc", "/server:A,B,C")
    assert code == 0
    text = err.decode("utf-8")
    assert "\r" in text and "servers 3/3" in text
    assert "3 logged off" in text
    # Then the progress line is cleared, and the summary (issue 17) says it.
    assert out.decode("utf-8").startswith(
        "Logged off 3 session(s), spared 0, failed 0, on 3 server(s) (0 "
        "failed) in ")


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX pseudo-terminal")
def test_progress_line_of_a_disconnect_says_disconnected(double_path,
                                                         tmp_path):
    code, out, err = _run_with_pty_stderr(double_path, tmp_path,
                                          "/state:active", "/disconnect",
                                          "/server:A,B,C")
    assert code == 0
    text = err.decode("utf-8")
    assert "3 disconnected" in text and "logged off" not in text
    assert out.decode("utf-8").startswith("Disconnected 3 session(s)")


@pytest.mark.skipif(sys.platform == "win32", reason="a POSIX pseudo-terminal")
def test_no_progress_with_json(double_path, tmp_path):
    code, out, err = _run_with_pty_stderr(double_path, tmp_path,
                                          "/state:disc", "/server:A,B,C",
                                          "/json")
    assert code == 0 and b"servers" not in err
    json.loads(out.decode("ascii"))


def test_no_progress_when_stderr_is_redirected(run_process):
    farm = three_servers()
    r = run_process(farm, "/state:disc", "/server:A,B,C")
    assert (r.code, r.err) == (0, "")


# --- The module's shape ------------------------------------------------------

# Optional leaves, imported where they are used (see the guide); anything
# else is imported at the top.  gettext, sysconfig and re serve a translated
# screen only (an English run imports none of them: test_l10n); queue serves
# the threaded runs only (the drop-in forms run inline, with no thread);
# ipaddress the server-name checks, as socket; traceback LOGOFF_DEBUG; csv
# /fo:csv; threading, as queue, the threaded runs.
LAZY_OK = {"json", "fnmatch", "socket", "unicodedata", "signal", "gettext",
           "pwd", "msvcrt", "locale", "datetime", "sysconfig", "re", "queue",
           "ipaddress", "traceback", "csv", "threading"}


@pytest.mark.parametrize("module", ["logoff.py", "wtsapi.py"])
def test_imports_at_the_top_except_optional_leaves(module):
    tree = ast.parse(open(os.path.join(ROOT, module), encoding="utf-8").read())
    inner = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import):
                    inner.update(a.name.split(".")[0] for a in sub.names)
                elif isinstance(sub, ast.ImportFrom):
                    inner.add(sub.module.split(".")[0])
    assert inner <= LAZY_OK, inner - LAZY_OK


def test_error_codes_are_named_not_bare():
    # 5, 259, 1460, 1722, 7022, 7045 come from wtsapi by name.
    tree = ast.parse(open(os.path.join(ROOT, "logoff.py"),
                          encoding="utf-8").read())
    bare = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Constant)
            and type(n.value) is int
            and n.value in (5, 259, 1460, 1722, 7022, 7045)]
    assert bare == []


def test_logoff_is_one_module():
    assert logoff.__name__ == "logoff"
    assert os.path.abspath(logoff.__file__) == os.path.join(ROOT, "logoff.py")
    assert logoff.main.__module__ == "logoff"
    assert not os.path.exists(os.path.join(ROOT, "_logoff.py"))


def test_the_drop_in_forms_import_no_thread_or_socket_machinery(double_path,
                                                                tmp_path):
    """`logoff 12 /server:X` starts no thread, so it imports neither
    threading nor queue; and it names this machine without socket (on
    Windows, socket brings selectors and select: tens of milliseconds on
    a cold start).  A bare interpreter (-S: no site, which may import
    them for its own reasons)."""
    farm = Farm(caller=99999)
    farm.server("X").session(12, "RDP-Tcp#12", ACTIVE, "u12", "CORP")
    code = ("import sys; sys.path.insert(0, %r); import logoff; "
            "code = logoff.main(['12', '/server:X']); "
            "print(code, sorted(m for m in ('socket', 'threading', 'queue', "
            "'selectors') if m in sys.modules))" % ROOT)
    env = dict(os.environ, WTSAPI32_DLL=double_path,
               WTSDOUBLE_FARM=farm.write(str(tmp_path / "farm.txt")))
    done = subprocess.run([sys.executable, "-S", "-c", code], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "[]"], done.stdout
