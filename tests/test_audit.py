"""The audit log loses nothing, whatever happens to the run; output can
fail, the work cannot (issue: write-ahead audit)."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

import farm as farmlib
import logoff
import wtsapi
from farm import ACTIVE, DISCONNECTED, Farm
from helpers import (POSIX, ROOT, logged_off, many_farm, read_lines,
                     sigint_after_warnings, warn_farm)



class Child:
    """logoff.py as a real process against a farm, for signals and kills."""

    def __init__(self, double_path, tmp_path, farm, *args, **popen):
        n = len(os.listdir(str(tmp_path)))
        self.farm_file = farm.write(str(tmp_path / ("farm%d.txt" % n)))
        self.calls = str(tmp_path / ("calls%d.log" % n))
        env = dict(os.environ, WTSAPI32_DLL=double_path,
                   WTSDOUBLE_FARM=self.farm_file, WTSDOUBLE_LOG=self.calls)
        env.update(popen.pop("env", {}))
        popen.setdefault("stdout", subprocess.PIPE)
        popen.setdefault("stderr", subprocess.PIPE)
        popen.setdefault("stdin", subprocess.DEVNULL)
        self.p = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "logoff.py")] + list(args),
            cwd=ROOT, env=env, **popen)

    def entries(self):
        try:
            with open(self.calls, encoding="utf-8") as f:
                return farmlib.parse_log(f.read())[0]
        except FileNotFoundError:
            return []

    def wait_for(self, predicate, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return False


def intents(lines):
    return [x for x in lines if x["phase"] == "intent"]


# --- 1. Write ahead ------------------------------------------------------------

@pytest.mark.skipif(not POSIX, reason="SIGKILL")
def test_sigkill_at_any_moment_leaves_no_logoff_without_its_line(
        double_path, tmp_path):
    rng = random.Random(20261201)
    mid_run = 0
    for k in range(10):
        log = tmp_path / ("audit%d.jsonl" % k)
        # 20 ms a logoff, eight in flight: about 0.75 s of logging off,
        # so that most kills land in the middle of it.
        farm = many_farm(300, logoff_ms=2)
        farm.latency("MANY", "WTSLogoffSession", 20)
        child = Child(double_path, tmp_path, farm,
                      "/server:MANY", "/state:disc", "/log:%s" % log)
        time.sleep(rng.uniform(0.05, 1.2))
        child.p.kill()
        child.p.wait(timeout=30)
        done = logged_off(child.entries())
        lines = read_lines(log) if log.exists() else []
        announced = {(x["server"], x["session"]) for x in intents(lines)
                     if x["action"] == "logoff"}
        # Every session the double logged off had its intent line first.
        assert set(done) <= announced, (k, sorted(set(done) - announced))
        if 0 < len(done) < 300:
            mid_run += 1
    # The kills did land in the middle of the work, not only before/after.
    assert mid_run >= 3, mid_run


def test_intent_is_written_before_the_call(cli, load, double, tmp_path,
                                           monkeypatch):
    # The double logs a call when it returns; the log file must already
    # hold the intent when the call starts.
    load(many_farm(3))
    log = tmp_path / "a.jsonl"
    seen = []
    real = wtsapi.Server.logoff

    def watching(self, session_id, wait=False):
        seen.append((session_id, [x["session"] for x in intents(
            read_lines(log))]))
        return real(self, session_id, wait)
    monkeypatch.setattr(wtsapi.Server, "logoff", watching)
    r = cli("/server:MANY", "/state:disc", "/log:%s" % log)
    assert r.code == 0, r.err
    # The three go out at once, each after its intent.
    assert sorted(sid for sid, _ in seen) == [100, 101, 102]
    assert all(sid in announced for sid, announced in seen)


# --- 2. The log or nothing ---------------------------------------------------------

@pytest.mark.skipif(not POSIX, reason="RLIMIT_FSIZE")
def test_a_log_that_fills_up_stops_every_change(double_path, tmp_path):
    import resource

    def small_files():
        # Room for the double's call log of the planning (/json reads the
        # client and the lock state: three queries a session), not for
        # the audit of 40 logoffs.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (12000, 12000))
    log = tmp_path / "full.jsonl"
    child = Child(double_path, tmp_path, many_farm(40), "/server:MANY",
                  "/state:disc", "/json", "/log:%s" % log,
                  preexec_fn=small_files)
    out, err = child.p.communicate(timeout=60)
    doc = json.loads(out.decode("ascii"))
    done = logged_off(child.entries())
    assert 0 < len(done) < 40
    # What was done was announced; after the failure nothing more changed.
    text = log.read_bytes().decode("utf-8")
    whole = [json.loads(x) for x in text.splitlines() if x.endswith("}")]
    announced = {x["session"] for x in intents(whole)}
    assert {sid for _, sid in done} <= announced
    results = {s["id"]: s for s in doc["sessions"]}
    skipped = [s for s in results.values() if s["result"] == "not-attempted"]
    assert skipped and all(
        s["message"] == "not attempted: the audit log cannot be written"
        for s in skipped)
    assert len(skipped) + len(done) + sum(
        1 for s in results.values() if s["result"] == "unknown") == 40
    # Blamed on the log, not on the server; the exit code follows the
    # rules (something was done: 2), the same in JSON and the process.
    assert doc["server_errors"] == []
    assert doc["exit_code"] == child.p.returncode == 2


def test_log_failure_is_reported_as_the_logs(cli, load, double, tmp_path,
                                             monkeypatch):
    # Logoffs go out eight at a time, each batch's intents written first:
    # the first outcome line that cannot be written stops the run after
    # the first batch, with two sessions never tried (partly done).
    load(many_farm(10))
    log = tmp_path / "a.jsonl"
    real_write = os.write

    def failing(fd, data):
        if data.startswith(b"{") and b'"phase": "outcome"' in data:
            raise OSError(28, "No space left on device")
        return real_write(fd, data)
    monkeypatch.setattr(os, "write", failing)
    r = cli("/server:MANY", "/state:disc", "/log:%s" % log)
    assert r.code == 2
    assert len(logged_off(r.log)) == 8
    line = [x for x in r.err.splitlines() if "audit log" in x]
    assert line and str(log) in line[0] and "No space left" in line[0]
    assert "server MANY" not in r.err


def test_a_name_that_cannot_be_utf8_is_escaped(cli, load, double, tmp_path,
                                               monkeypatch):
    load(many_farm(2))
    monkeypatch.setattr(wtsapi, "process_account", lambda: "CORP\\x\udcff")
    log = tmp_path / "a.jsonl"
    r = cli("/server:MANY", "/state:disc", "/log:%s" % log)
    assert r.code == 0, r.err
    lines = read_lines(log)
    # Two intents, two outcomes, the summary.
    assert len(lines) == 5 and len(logged_off(r.log)) == 2
    assert lines[-1]["phase"] == "summary"
    assert all(x["operator"] == "CORP\\x\udcff" for x in lines)


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_log_must_be_a_regular_file(cli, load, double, tmp_path, kind):
    load(many_farm(2))
    if kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs here")
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    elif kind == "directory":
        path = str(tmp_path)
    else:
        path = os.devnull if POSIX else "NUL"
    # A FIFO never hangs us: the run ends on its own (no reader ever comes;
    # the join's bound only keeps a hang from blocking the suite).
    box = []
    t = threading.Thread(target=lambda: box.append(
        cli("/server:MANY", "/state:disc", "/log:%s" % path)), daemon=True)
    t.start()
    t.join(30)
    if t.is_alive() and kind == "fifo":     # let the hung open go
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        t.join(30)
    assert not t.is_alive() and len(box) == 1, "the run hung on the %s" % kind
    r = box[0]
    assert r.code == 1
    why = "%s is not a regular file" % path
    assert r.err == "logoff: cannot open the log file %s: %s\n" % (path, why)
    assert double.calls() == 0


# A review finding: a log path that cannot even be looked at (too long; a
# NUL, through main()) gave a bare "File name too long", or an internal
# error, without naming the log.
@pytest.mark.parametrize("path", ["x" * 5000, "audit\0.jsonl"],
                         ids=["too-long", "nul"])
def test_a_log_path_that_cannot_be_looked_at_is_named(cli, load, double,
                                                      path):
    load(many_farm(2))
    r = cli("/server:MANY", "/state:disc", "/log:%s" % path)
    assert r.code == 1
    (line,) = r.err.splitlines()
    assert line.startswith("logoff: cannot open the log file "), line
    assert "internal error" not in line
    assert double.calls() == 0


# --- 4. Interruption is an outcome ----------------------------------------------------

@pytest.mark.skipif(not POSIX, reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_with_logoffs_in_flight(double_path, tmp_path, sig):
    # S has more sessions than go out at once (eight a server): its first
    # eight are in flight with A's, B's and C's one each when the signal
    # comes; its last two are never started.
    farm = Farm(caller=1)
    for name in ("A", "B", "C"):
        farm.server(name).session(3, "", DISCONNECTED, "u" + name, "CORP")
        farm.latency(name, "WTSLogoffSession", 6000)
    slow = farm.server("S")
    for sid in range(3, 13):
        slow.session(sid, "", DISCONNECTED, "s%d" % sid, "CORP")
    farm.latency("S", "WTSLogoffSession", 6000)
    log = tmp_path / "a.jsonl"
    child = Child(double_path, tmp_path, farm, "/server:A,B,C,S",
                  "/state:disc", "/json", "/log:%s" % log)
    assert child.wait_for(lambda: log.exists() and len(
        intents(read_lines(log))) == 11)
    # Each call goes out as soon as its batch's intents are written; the
    # calls take 6 s, so they are still in flight a moment later.
    time.sleep(0.5)
    child.p.send_signal(sig)
    out, err = child.p.communicate(timeout=30)
    assert b"Traceback" not in err
    doc = json.loads(out.decode("ascii"))
    got = {(s["server"], s["id"]): s for s in doc["sessions"]}
    # The eleven in flight: issued, outcome unknown.  S's other two: never
    # started after the interrupt.
    in_flight = [("A", 3), ("B", 3), ("C", 3)] + [("S", i)
                                                  for i in range(3, 11)]
    unknown = [k for k, s in got.items() if s["result"] == "unknown"]
    assert sorted(unknown) == in_flight
    assert all("interrupted" in got[k]["message"] for k in unknown)
    assert sorted(k for k, s in got.items()
                  if s["result"] == "not-attempted") == [("S", 11), ("S", 12)]
    lines = read_lines(log)
    outcome = {x["seq"]: x for x in lines if x["phase"] == "outcome"}
    assert all(outcome[x["seq"]]["result"] == "unknown"
               for x in intents(lines))
    # Something may have been done: 2, in the JSON and the process alike.
    assert doc["exit_code"] == child.p.returncode == 2
    # The run did not wait for the calls in flight: all eleven were still
    # in the double when the process ended, and none ever answered.
    assert [e for e in child.entries() if e.func == "WTSLogoffSession"] == []
    with open(child.calls, encoding="utf-8") as f:
        assert farmlib.parse_log(f.read())[1]["inflight"] == 11


@pytest.mark.skipif(not POSIX, reason="POSIX signals")
def test_interrupt_before_anything_was_done_exits_1(double_path, tmp_path):
    farm = many_farm(3)
    farm.latency("MANY", "WTSEnumerateSessionsExW", 5000)
    child = Child(double_path, tmp_path, farm, "/server:MANY",
                  "/state:disc", "/json")
    time.sleep(1.0)                      # the enumeration takes 5 s
    child.p.send_signal(signal.SIGINT)
    out, err = child.p.communicate(timeout=30)
    doc = json.loads(out.decode("ascii"))
    assert doc["exit_code"] == child.p.returncode == 1
    assert logged_off(child.entries()) == []


@pytest.mark.skipif(not POSIX, reason="a POSIX signal")
def test_ctrl_c_in_the_grace_period_has_one_exit_code(cli, load, double,
                                                      monkeypatch):
    load(warn_farm())
    # A real SIGINT once the five warnings went out: the grace has begun.
    timers = sigint_after_warnings(monkeypatch, 5)
    try:
        r = cli("/server:W", "/state:active", "/warn:bye", "/grace:5m",
                "/json")
    finally:
        for t in timers:
            t.join()
    doc = json.loads(r.out)
    assert r.code == doc["exit_code"] == 1
    assert "interrupted" in doc["error"]
    assert {s["result"] for s in doc["sessions"]} == {"spared"}
    assert [e for e in r.log if e.func == "WTSLogoffSession"] == []


# A review finding: Ctrl+C while a reminder was still on its way gave its
# server up, and every session was "not attempted" (a failure) instead of
# spared as in any other interrupted grace.
@pytest.mark.skipif(not POSIX, reason="a POSIX signal")
def test_ctrl_c_while_a_reminder_is_on_its_way_spares_the_sessions(
        cli, load, double, monkeypatch, tmp_path):
    monkeypatch.setattr(logoff, "MIN_REMIND", 1)
    load(warn_farm())
    real, sent, timers = wtsapi.Server.send_message, [], []

    def send(self, *args, **kwargs):
        sent.append(args[0])
        if len(sent) == 5:                  # the last warning: then Ctrl+C
            timers.append(threading.Timer(1.3, os.kill,
                                          (os.getpid(), signal.SIGINT)))
            timers[0].start()
        if len(sent) > 5:                   # a reminder: past the bound
            time.sleep(logoff.INTERRUPT_BOUND + 2)
        return real(self, *args, **kwargs)
    monkeypatch.setattr(wtsapi.Server, "send_message", send)
    log = tmp_path / "audit.jsonl"
    try:
        r = cli("/server:W", "/state:active", "/warn:bye", "/grace:5m",
                "/remind:1s", "/json", "/log:%s" % log)
    finally:
        for t in timers:
            t.join()
    doc = json.loads(r.out)
    assert doc["server_errors"] == []
    assert {(s["result"], s["message"]) for s in doc["sessions"]} == {
        ("spared", "interrupted during the grace period")}
    assert r.code == doc["exit_code"] == 1
    assert [e for e in r.log if e.func == "WTSLogoffSession"] == []
    lines = read_lines(log)
    assert {x["result"] for x in lines if x["phase"] == "outcome"
            and x["action"] == "logoff"} == {"spared"}
    reminders = [x for x in lines if x["phase"] == "outcome"
                 and x["action"] == "remind"]
    assert reminders and {(x["result"], x["message"]) for x in reminders} \
        == {("unknown", "issued; the outcome is unknown: the run was "
                        "interrupted")}


def test_a_server_given_up_keeps_done_and_not_attempted_apart(cli, load,
                                                             double,
                                                             tmp_path):
    # /timeout is the wait for one answer: MANY's logoffs take 3 s, so it is
    # given up with its first eight in flight and its last two never tried;
    # FAST, beside it, is done.
    farm = many_farm(10)
    farm.latency("MANY", "WTSLogoffSession", 3000)
    fast = farm.server("FAST")
    for sid in (3, 4):
        fast.session(sid, "", DISCONNECTED, "f%d" % sid, "CORP")
    load(farm)
    log = tmp_path / "a.jsonl"
    r = cli("/server:MANY,FAST", "/state:disc", "/timeout:1", "/json",
            "/log:%s" % log)
    d = json.loads(r.out)
    results = {(s["server"], s["id"]): s["result"] for s in d["sessions"]}
    assert results == dict(
        [(("FAST", 3), "logged-off"), (("FAST", 4), "logged-off")]
        + [(("MANY", i), "unknown") for i in range(100, 108)]
        + [(("MANY", i), "not-attempted") for i in (108, 109)])
    assert [(e["server"], e["error"]) for e in d["server_errors"]] == [
        ("MANY", 1460)]
    lines = read_lines(log)
    by_result = {}
    for x in lines:
        if x["phase"] == "outcome":
            by_result.setdefault(x["result"], set()).add(
                (x["server"], x["session"]))
    for result in ("logged-off", "unknown"):
        assert by_result[result] == {k for k, v in results.items()
                                     if v == result}
    # The two never tried had no intent, so they have no outcome line.
    assert "not-attempted" not in by_result
    assert d["exit_code"] == r.code == 2


# --- 5. Output can fail; the work cannot ---------------------------------------------

@pytest.mark.skipif(not POSIX, reason="a closed pipe")
def test_a_closed_pipe_with_v_stops_nothing(double_path, tmp_path):
    log = tmp_path / "a.jsonl"
    child = Child(double_path, tmp_path, many_farm(500), "/server:MANY",
                  "/state:disc", "/v", "/log:%s" % log)
    child.p.stdout.readline()            # `| more`, then q
    child.p.stdout.close()
    child.p.wait(timeout=60)
    child.p.stderr.read()
    assert len(logged_off(child.entries())) == 500
    lines = read_lines(log)
    assert len(lines) == 1001 and lines[-1]["phase"] == "summary"
    assert child.p.returncode == 0


@pytest.mark.skipif(not POSIX, reason="closing the standard descriptors")
def test_no_stdio_at_all_does_all_the_work(double_path, tmp_path):
    def no_stdio():
        for fd in (0, 1, 2):
            os.close(fd)
    farm = many_farm(3)
    farm.fail("MANY", "WTSLogoffSession", 5, session=101)
    log = tmp_path / "a.jsonl"
    child = Child(double_path, tmp_path, farm, "/server:MANY", "/state:disc",
                  "/v", "/log:%s" % log, preexec_fn=no_stdio, stdout=None,
                  stderr=None)
    child.p.wait(timeout=60)
    assert len(logged_off(child.entries())) == 2
    lines = read_lines(log)
    assert len(lines) == 7 and lines[-1]["phase"] == "summary"
    assert lines[-1]["exit_code"] == 2
    assert child.p.returncode == 2       # as with stdio: partly done


def test_stdout_none_as_under_pythonw(cli, load, double, monkeypatch,
                                      tmp_path):
    load(many_farm(3))
    monkeypatch.setattr(sys, "stdout", None)
    monkeypatch.setattr(sys, "stderr", None)
    log = tmp_path / "a.jsonl"
    code = logoff.main(["/server:MANY", "/state:disc", "/v",
                        "/log:%s" % log])
    assert code == 0
    assert len(logged_off(double.log())) == 3
    lines = read_lines(log)
    assert len(lines) == 7 and lines[-1]["phase"] == "summary"


# --- 6. The operator is who the process runs as -------------------------------

def test_operator_is_not_taken_from_the_environment(run_process, tmp_path):
    log = tmp_path / "a.jsonl"
    r = run_process(many_farm(1), "/server:MANY", "/state:disc",
                    "/log:%s" % log, env={"USERNAME": "ceo",
                                          "USERDOMAIN": "BOARD",
                                          "USER": "ceo", "LOGNAME": "ceo"})
    assert r.code == 0, r.err
    operator = read_lines(log)[0]["operator"]
    assert "ceo" not in operator.lower()
    if POSIX:
        import pwd
        assert operator == pwd.getpwuid(os.getuid()).pw_name
    else:
        assert operator == wtsapi.process_account() and "\\" in operator


def test_warning_title_names_the_real_operator(cli, load, double,
                                               monkeypatch):
    load(warn_farm())
    monkeypatch.setenv("USERNAME", "ceo")
    monkeypatch.setenv("USER", "ceo")
    monkeypatch.setenv("LOGNAME", "ceo")
    r = cli("/server:W", "/user:stays", "/warn:bye", "/grace:0")
    assert r.code == 0, r.err
    sent = [e for e in r.log if e.func == "WTSSendMessageW"][0].fields()
    assert sent["title"] == "Message from %s" % wtsapi.process_account()
    assert "ceo" not in sent["title"]


# --- 7. /json is lossless on any stdout -----------------------------------------

def unicode_users_farm():
    farm = Farm(caller=1)
    srv = farm.server("U")
    srv.session(3, "RDP-Tcp#3", ACTIVE, "田中", "CORP")
    srv.session(4, "RDP-Tcp#4", ACTIVE, "Müller", "CORP")
    return farm


@pytest.mark.parametrize("encoding", ["cp1252", "cp932", "ascii"])
def test_json_is_lossless_on_any_code_page(run_process, encoding):
    r = run_process(unicode_users_farm(), "/query", "/json", "/server:U",
                    env={"PYTHONIOENCODING": encoding}, encoding=encoding)
    assert r.code == 0, r.err
    users = [s["user"] for s in json.loads(r.out)["sessions"]]
    assert users == ["田中", "Müller"]


# --- 3. Wait for the lock on Windows ----------------------------------------------

HOLDER = r"""
import os, sys, time
sys.path.insert(0, sys.argv[1])
import wtsapi, logoff
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_BINARY)
h = wtsapi.file_handle(fd)
wtsapi.lock_byte(h, logoff.Audit.LOCK_OFFSET)
print("locked", flush=True)
time.sleep(float(sys.argv[3]))
if len(sys.argv) > 4:         # a line of its own, the last thing before
    os.write(fd, sys.argv[4].encode("utf-8") + b"\n")   # it lets go
wtsapi.unlock_byte(h, logoff.Audit.LOCK_OFFSET)
os.close(fd)
"""


@pytest.mark.skipif(POSIX, reason="a Windows byte-range lock")
def test_a_run_waits_for_the_log_lock_as_long_as_it_takes(run_process,
                                                          tmp_path):
    # msvcrt.locking gives up after ten tries (about 10 s on Windows, 10 ms
    # under Wine); a writer stalled longer than that must only delay us.
    log = tmp_path / "shared.jsonl"
    release = {"holder": "unlocking"}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, ROOT, str(log), "12",
         json.dumps(release)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL)
    assert holder.stdout.readline().strip() == b"locked", holder.stderr.read()
    r = run_process(many_farm(3), "/server:MANY", "/state:disc",
                    "/log:%s" % log, timeout=120)
    holder.communicate(timeout=60)
    assert r.code == 0, r.err
    assert ("waiting for the log file %s (another run may be writing to "
            "it, or its share is slow)..." % log) in r.err
    # The holder's last line before it let go comes first: the run wrote
    # nothing while the lock was held (12 s, past msvcrt's ten tries).
    lines = read_lines(log)
    assert lines[0] == release
    assert [x["phase"] for x in lines[1:]] == \
        ["intent"] * 3 + ["outcome"] * 3 + ["summary"]
    assert len(logged_off(r.log)) == 3


@pytest.mark.skipif(POSIX, reason="a Windows byte-range lock")
def test_lock_byte_does_not_wait_when_asked_not_to(tmp_path):
    path = str(tmp_path / "x.log")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, ROOT, path, "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL)
    assert holder.stdout.readline().strip() == b"locked"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_BINARY)
    try:
        h = wtsapi.file_handle(fd)
        assert wtsapi.lock_byte(h, logoff.Audit.LOCK_OFFSET,
                                wait=False) is False
    finally:
        os.close(fd)
        holder.kill()
        holder.communicate()
