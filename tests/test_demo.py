"""The first ten minutes: ``python3 tests/farm.py ARGS``, the README's first
command, as a newcomer runs it, and every example of the README run as
written against the demo farm (``farm.demo_farm()``).

farm.py's demo compiles the doubles with a C compiler, so these run where
the tests build the double themselves (not on the Windows leg, where
logoff.py is run directly).  No wall-clock asserts: waits are bounded only so
that a hang fails instead of blocking the run.
"""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

import farm as farmlib
from helpers import decoded

ROOT = farmlib.ROOT
README = os.path.join(ROOT, "README.md")
FARM_PY = os.path.join(ROOT, "tests", "farm.py")
INSTALL_DIR = "C:\\Program Files\\logoff-py\\"      # as the recipes name it

pytestmark = pytest.mark.skipif(
    sys.platform == "win32",
    reason="farm.py's demo builds the doubles with a C compiler; on Windows "
           "logoff.py is run directly")


def _readme():
    with open(README, encoding="utf-8") as f:
        return f.read()


def _newcomer_env(tmpdir, **extra):
    """The environment of a newcomer's shell: no double of the test
    session's (farm.py chooses its own), English, temporary files in
    ``tmpdir`` (to see that farm.py leaves none)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WTSDOUBLE_", "EVTDOUBLE_"))
           and k not in ("WTSAPI32_DLL", "ADVAPI32_DLL")}
    env.update(TMPDIR=str(tmpdir), LOGOFF_LANG="en", PYTHONIOENCODING="utf-8")
    env.update(extra)
    return env


def _demo(args, cwd, tmpdir, stdin=b"", python=None, env=None, timeout=300):
    cmd = [python or sys.executable]
    if python is not None:
        cmd += ["-I", "-S"]          # no site-packages: no ziglang either
    cmd += [FARM_PY] + list(args)
    return subprocess.run(cmd, cwd=str(cwd), input=stdin,
                          env=env if env is not None else _newcomer_env(tmpdir),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout)


def _lines(data):
    return [line for line in decoded(data).splitlines() if line.strip()]


@pytest.fixture
def tmpdir_env(tmp_path):
    """The TMPDIR farm.py is given; empty again once it has run."""
    path = tmp_path / "tmp"
    path.mkdir()
    return path


# --- Setting up: one line, no traceback, nothing left behind -----------------

def test_no_compiler_is_one_line_saying_what_to_install(tmp_path, tmpdir_env):
    # No cc on an empty PATH, CC unset, and no site-packages (-I -S), so no
    # ziglang: nothing to build the double with.
    env = {"PATH": "", "TMPDIR": str(tmpdir_env), "LOGOFF_LANG": "en",
           "HOME": str(tmp_path)}
    r = _demo(["/query"], tmp_path, tmpdir_env,
              python=os.path.realpath(sys.executable), env=env)
    assert r.returncode == farmlib.SETUP_FAILED != 0
    assert r.stdout == b""
    lines = _lines(r.stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("farm.py: no C compiler for the test double")
    assert "apt-get install gcc" in lines[0]
    assert "python3 -m pip install -r tests/requirements.txt" in lines[0]
    assert os.listdir(str(tmpdir_env)) == []


def test_a_compile_error_is_one_line(tmp_path, tmpdir_env):
    cc = tmp_path / "broken-cc"
    cc.write_text("#!/bin/sh\n"
                  "echo 'compiling...'\n"
                  "echo 'wtsdouble.c:12:3: error: boom' >&2\n"
                  "echo '1 error generated.' >&2\n"
                  "exit 1\n")
    cc.chmod(0o755)
    r = _demo(["/query"], tmp_path, tmpdir_env,
              env=_newcomer_env(tmpdir_env, CC=str(cc)))
    assert r.returncode == farmlib.SETUP_FAILED
    assert r.stdout == b""
    lines = _lines(r.stderr)
    assert len(lines) == 1, lines
    assert "did not compile" in lines[0] and "error: boom" in lines[0]
    assert "Traceback" not in decoded(r.stderr)
    assert os.listdir(str(tmpdir_env)) == []


def test_a_compiler_that_cannot_run_is_one_line(tmp_path, tmpdir_env):
    r = _demo(["/query"], tmp_path, tmpdir_env, env=_newcomer_env(
        tmpdir_env, CC=str(tmp_path / "no-such-cc")))
    assert r.returncode == farmlib.SETUP_FAILED
    lines = _lines(r.stderr)
    assert len(lines) == 1 and "apt-get install gcc" in lines[0], lines
    assert os.listdir(str(tmpdir_env)) == []


def test_a_run_leaves_no_temporary_folder(tmp_path, tmpdir_env):
    r = _demo(["/query"], tmp_path, tmpdir_env)
    assert r.returncode == 0, decoded(r.stderr)
    assert "CORP\\chen" in decoded(r.stdout)
    assert os.listdir(str(tmpdir_env)) == []


def test_exit_code_is_logoffs(tmp_path, tmpdir_env):
    r = _demo(["/nosuchswitch"], tmp_path, tmpdir_env)
    assert r.returncode == 1
    assert "Invalid parameter(s)" in decoded(r.stderr)
    assert os.listdir(str(tmpdir_env)) == []


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm-to-farm-py"])
def test_interrupted_run_leaves_no_temporary_folder(tmp_path, tmpdir_env,
                                                    how):
    """Ctrl+C at a terminal signals farm.py and logoff.py alike; a SIGTERM
    to farm.py alone is passed on.  Either way logoff.py ends its run (no
    one logged off during the grace) and the folder goes."""
    audit = tmp_path / "audit.jsonl"
    proc = subprocess.Popen(
        [sys.executable, FARM_PY, "/state:active", "/server:RDSH01",
         "/warn:hello", "/grace:1h", "/log:%s" % audit],
        cwd=str(tmp_path), env=_newcomer_env(tmpdir_env),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120       # a bound, not an assertion
        while True:                             # in the grace period
            text = audit.read_text() if audit.exists() else ""
            if '"action": "warn", "result": "ok"' in text:
                break
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no warning was sent"
            time.sleep(0.05)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # The signal comes only once the warning is out, an hour before any
    # logoff: the run ends in its grace period, every time.
    assert proc.returncode == 1, (proc.returncode, err)
    assert "logoff: interrupted during the grace period: no one was logged " \
        "off." in decoded(err).splitlines()
    assert b"Traceback" not in err
    assert '"result": "logged-off"' not in audit.read_text()
    assert os.listdir(str(tmpdir_env)) == []


def test_eventlog_events_are_shown_on_stderr(tmp_path, tmpdir_env):
    r = _demo(["/state:disc", "/idle:2h", "/server:RDSH01", "/eventlog"],
              tmp_path, tmpdir_env)
    assert r.returncode == 0, decoded(r.stderr)
    lines = _lines(r.stderr)
    where = [line for line in lines if line.startswith("farm.py: ")]
    assert len(where) == 1 and "event-log double" in where[0], lines
    events = lines[lines.index(where[0]) + 1:]
    assert any(re.match(r"\s+101 Information PyLogoff: .*suzuki", line)
               for line in events), events
    assert any(re.match(r"\s+900 Information PyLogoff: ", line)
               for line in events), events
    assert os.listdir(str(tmpdir_env)) == []


def test_no_eventlog_no_event_line(tmp_path, tmpdir_env):
    r = _demo(["/query", "/server:RDSH01"], tmp_path, tmpdir_env)
    assert r.returncode == 0
    assert "event-log double" not in decoded(r.stderr)


# --- The demo farm ---------------------------------------------------------------

def test_demo_farm_holds_what_the_examples_name():
    standard = farmlib.standard_farm().render()
    demo = farmlib.demo_farm()
    local = {s["id"]: s for s in demo.servers["."].sessions}
    assert local[12]["user"] and local[12]["state"] == farmlib.ACTIVE
    server1 = {s["name"]: s for s in demo.servers["Server1"].sessions}
    assert server1["TERM04"]["state"] == farmlib.ACTIVE
    for name in ("RDS1", "RDS2", "DOWN", "RDSH01", "RDSH02"):
        assert name in demo.servers
    # Built beside standard_farm(), never by changing it.
    assert farmlib.standard_farm().render() == standard
    assert "Server1" not in farmlib.standard_farm().servers


# --- The README ------------------------------------------------------------------

TOP_COMMANDS = [
    "python3 tests/farm.py /query     # run the tool: here against a "
    "simulated farm (on Windows: py logoff.py /query)",
    "python3 -m pip install -r tests/requirements.txt && python3 -m pytest"
    "   # run the tests",
]
DOCS = ["docs/test-double.md", "docs/tests.md", "docs/benchmarks.md",
        "docs/bindings.md", "docs/translating.md"]


def test_readme_opens_with_its_two_commands():
    blocks = re.findall(r"```\w*\n(.*?)```", _readme(), re.S)
    assert blocks[0].splitlines() == TOP_COMMANDS


def test_readme_is_the_administrators_page():
    text = _readme()
    assert len(text.splitlines()) <= 460
    for doc in DOCS:
        assert "](%s)" % doc in text, doc
        assert os.path.isfile(os.path.join(ROOT, doc)), doc
    # Every relative link of the README and the docs leads somewhere.
    for page in ["README.md"] + DOCS:
        with open(os.path.join(ROOT, page), encoding="utf-8") as f:
            body = f.read()
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", body):
            path = os.path.normpath(os.path.join(
                ROOT, os.path.dirname(page), target))
            assert os.path.exists(path), (page, target)
    # The recipes install where only administrators can write.
    assert "C:\\Tools\\" not in text and "C:\\Python311\\" not in text


def _farm_txt(text):
    """The server list the recipes keep beside the tool."""
    m = re.search(r"A server list, `farm.txt`, lives beside it:\s*```\n(.*?)```",
                  text, re.S)
    assert m, "the README's farm.txt is gone"
    return m.group(1)


def _split(command):
    """A Windows command line's arguments (the C runtime's rules, as far as
    the README's examples need them: double quotes, no escapes)."""
    lex = shlex.shlex(command, posix=True)
    lex.whitespace_split = True
    lex.escape = ""
    lex.commenters = ""
    return list(lex)


def _exclude_txt(text):
    """The safelist the 15-minute recipe keeps beside farm.txt."""
    m = re.search(r"never the accounts in `exclude.txt`[^\n]*:\s*```\n(.*?)```",
                  text, re.S)
    assert m, "the README's exclude.txt is gone"
    return m.group(1)


def _examples(text):
    """(label, args, stdin) for every example of the README that runs
    logoff.py, in the forms the README gives them."""
    found = []
    blocks = re.findall(r"```(\w*)\n(.*?)```", text, re.S)
    for lang, body in blocks:
        for line in body.splitlines():
            line = line.strip()
            if lang == "bat":
                line = re.sub(r"\s+::.*$", "", line)
                m = re.match(r"^logoff(?:\s+(.*))?$", line)
                if m:
                    found.append((line, _split(m.group(1) or ""), b""))
                    continue
                m = re.match(r"^py logoff\.py\s+(.*)$", line)
                if m:
                    found.append((line, _split(m.group(1)), b""))
                    continue
                m = re.search(r'/tr "(.*)"$', line)
                if m:                                   # schtasks
                    args = _split(m.group(1).replace('\\"', '"'))
                    assert args[1].endswith("logoff.py"), args
                    found.append((line, args[2:], b""))
            elif lang == "powershell":
                m = re.search(r"(\|\s*)?\bpy logoff\.py\s+([^|]*)", line)
                if m:
                    stdin = _farm_txt(text).encode() if m.group(1) else b""
                    found.append((line, _split(m.group(2)), stdin))
                    continue
                m = re.search(r"& '[^']*python\.exe' '[^']*logoff\.py' (.*)$",
                              line)
                if m:                                   # remoting
                    found.append((line, _split(m.group(1)), b""))
            elif lang in ("sh", "yaml"):
                m = re.search(r'logoff\.py" ([^\']*)\'', line)
                if m:                                   # Salt
                    found.append((line, _split(m.group(1)), b""))
        if lang == "yaml" and "argv:" in body:          # Ansible
            items = re.search(r"argv:\n((?:\s+- .*\n)+)", body).group(1)
            argv = [item.strip()[2:] for item in items.splitlines()]
            assert argv[:2] == ['"{{ python }}"', '"{{ logoff }}"'], argv
            found.append(("ansible argv", argv[2:], b""))
    return found


EXAMPLES = _examples(_readme())


def test_readme_examples_are_all_found():
    labels = [label for label, _, _ in EXAMPLES]
    for needle in ("logoff 12", "logoff TERM04 /server:Server1", "/tr ",
                   "& '", "ansible argv", "cmd.run_all", "- name: '",
                   "| py logoff.py /server:@-", "/warn:"):
        assert any(needle in label for label in labels), needle
    assert len(EXAMPLES) >= 15, labels


def _on_linux(args, cwd):
    """The example's arguments with the install folder mapped to ``cwd``,
    and the grace period cut to nothing (the double needs no time to
    read a message)."""
    out = []
    for arg in args:
        arg = arg.replace(INSTALL_DIR, str(cwd) + os.sep)
        arg = re.sub(r"^/grace:.*$", "/grace:0", arg)
        out.append(arg)
    return out


@pytest.mark.parametrize("label,args,stdin", EXAMPLES,
                         ids=[label for label, _, _ in EXAMPLES])
def test_readme_example_runs_against_the_demo_farm(tmp_path, tmpdir_env,
                                                   label, args, stdin):
    cwd = tmp_path / "work"
    cwd.mkdir()
    (cwd / "farm.txt").write_text(_farm_txt(_readme()), encoding="utf-8")
    (cwd / "exclude.txt").write_text(_exclude_txt(_readme()),
                                     encoding="utf-8")
    r = _demo(_on_linux(args, cwd), cwd, tmpdir_env, stdin=stdin)
    servers = " ".join(a for a in args if a.lower().startswith("/server:"))
    expected = 2 if "DOWN" in servers else 0
    assert r.returncode == expected, (label, decoded(r.stdout),
                                      decoded(r.stderr))
    assert "Traceback" not in decoded(r.stderr)
    if "/json" in [a.lower() for a in args]:
        doc = json.loads(decoded(r.stdout))
        assert doc["exit_code"] == r.returncode
    assert os.listdir(str(tmpdir_env)) == []


def test_readme_yildiz_example_matches_no_one(tmp_path, tmpdir_env):
    example = [e for e in EXAMPLES if "/user:yildiz" in e[0]]
    assert example, "the README's /user:yildiz example is gone"
    r = _demo(example[0][1], tmp_path, tmpdir_env)
    assert r.returncode == 0
    assert "Yıldız" not in decoded(r.stdout)
