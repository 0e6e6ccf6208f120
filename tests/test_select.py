"""Beyond logoff.exe: selection, warnings, many servers, JSON, audit log."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import logoff
import wtsapi
from farm import (ACTIVE, CLOCK, CONNECTED, DISCONNECTED, HOUR, IDLE, MINUTE,
                  Farm, standard_farm)
from helpers import (ROOT, doc, logoffs, messages, sigint_after_warnings,
                     warn_farm)



def state_changes(run):
    return [e for e in run.log if e.func in (
        "WTSLogoffSession", "WTSDisconnectSession", "WTSSendMessageW")]


# --- /query ------------------------------------------------------------------------

def test_query_lists_every_session(cli, load, double):
    load()
    r = cli("/query")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0].split() == ["SERVER", "ID", "SESSIONNAME", "USERNAME",
                                "STATE", "IDLE", "TIME", "LOGON", "TIME"]
    ids = [int(line[1:].split()[1]) for line in lines[1:]]
    assert ids == [0, 1, 2, 3, 4, 5, 65536]
    own = [line for line in lines if line.startswith(">")]
    assert len(own) == 1 and "CORP\\operator" in own[0]
    row = {int(line[1:].split()[1]): line for line in lines[1:]}
    assert "CORP\\alice" in row[3] and " 30 " in row[3]
    assert "Disconnected" in row[4] and " 3:00 " in row[4]
    assert "田中" in row[5]
    assert "Listen" in row[65536]
    assert state_changes(r) == []


def test_query_with_selection_lists_what_it_selects(cli, load):
    load()
    r = cli("/query", "/state:disc,active")
    assert r.code == 0
    ids = sorted(int(l[1:].split()[1]) for l in r.out.splitlines()[1:])
    assert ids == [3, 4, 5]          # never 0, 1 (console), 2 (own), 65536
    assert state_changes(r) == []


def test_query_json(cli, load):
    load()
    r = cli("/query", "/json", "/server:RDS1,DOWN")
    assert r.code == 2
    d = doc(r)
    assert [(s["server"], s["id"], s["result"]) for s in d["sessions"]] == [
        ("RDS1", 0, "listed"), ("RDS1", 2, "listed"), ("RDS1", 3, "listed"),
        ("RDS1", 65536, "listed")]
    dave = d["sessions"][2]
    assert dave["state"] == "disconnected" and dave["state_code"] == 4
    assert dave["idle_seconds"] == 5 * 3600
    assert dave["logon_time"].endswith("Z")
    assert [(e["server"], e["error"]) for e in d["server_errors"]] == [
        ("DOWN", 1722)]
    assert r.err == ""


# --- Selection ----------------------------------------------------------------------

@pytest.mark.parametrize("switches,expected", [
    (["/state:disc"], [4]),
    (["/state:DISCONNECTED"], [4]),
    (["/state:active"], [3, 5]),
    (["/user:ALI*"], [3]),
    (["/user:corp\\b?b"], [4]),
    (["/user:other\\bob"], []),
    (["/user:*"], [3, 4, 5]),
    (["/user:alice,田中"], [3, 5]),
    (["/user:*", "/state:active"], [3, 5]),
    (["/idle:1h"], [4]),
    (["/idle:30m"], [3, 4]),                 # exactly 30m is enough
    (["/idle:1800"], [3, 4]),
    (["/idle:31m"], [4]),
    (["/idle:0"], [3, 4, 5]),
    (["/user:bob", "/state:active"], []),
    (["/user:admin"], []),                   # the console's user
    (["/user:operator"], []),                # the caller's own session
])
def test_selection(cli, load, double, switches, expected):
    load()
    r = cli("/json", *switches)
    assert r.code == 0, r.err
    assert [s["id"] for s in doc(r)["sessions"]] == expected
    assert logoffs(r) == [(".", i) for i in expected]
    assert all(s["result"] == "logged-off" for s in doc(r)["sessions"])


def test_states_are_numbers_not_text(cli, load):
    farm = Farm(caller=1)
    srv = farm.server("S")
    for sid, state in ((2, IDLE), (3, CONNECTED), (4, DISCONNECTED),
                       (5, ACTIVE), (6, 42)):
        srv.session(sid, "", state, "u%d" % sid, "CORP")
    load(farm)
    r = cli("/query", "/json", "/server:S", "/state:idle,connected")
    assert [s["id"] for s in doc(r)["sessions"]] == [2, 3]
    r = cli("/query", "/json", "/server:S", "/user:u6")
    assert doc(r)["sessions"][0]["state_code"] == 42


def test_idle_uses_the_server_clock(cli, load):
    far = CLOCK + 20000 * HOUR
    farm = Farm(caller=1)
    farm.server("FAR", clock=far).session(
        3, "RDP-Tcp#3", ACTIVE, "amy", "CORP", input=far - 2 * HOUR)
    farm.server("FAR").session(
        4, "", DISCONNECTED, "ben", "CORP", input=far - 30 * HOUR,
        disconnect=far - 10 * MINUTE)
    farm.server("FAR").session(5, "RDP-Tcp#5", ACTIVE, "cy", "CORP")
    load(farm)
    r = cli("/json", "/whatif", "/server:FAR", "/idle:1h")
    assert [s["id"] for s in doc(r)["sessions"]] == [3]
    assert doc(r)["sessions"][0]["idle_seconds"] == 2 * 3600


def test_nothing_matches_is_success(cli, load):
    load()
    r = cli("/user:nobody", "/v")
    assert r.code == 0
    assert r.out.startswith("No session matches the selection.\n")
    # Issue 17: a selection run ends with one line that says what happened.
    r = cli("/user:nobody")
    assert (r.code, r.err) == (0, "")
    assert r.out.startswith("Logged off 0 session(s), spared 0, failed 0, "
                            "on 1 server(s) (0 failed) in ")


@pytest.mark.parametrize("args,why", [
    (["3", "/user:x"], "cannot be combined"),
    (["/state:sleepy"], "unknown state"),
    (["/idle:abc"], "not a duration"),
    (["/idle:-5m"], "not a duration"),
    (["/idle:5w"], "not a duration"),
    (["/idle:1e3"], "not a duration"),
    (["/idle:nan"], "not a duration"),
    (["/user:,"], "needs"),
    (["/grace:5m", "/state:disc"], "/grace goes with /warn"),
    (["/parallel:0", "/state:disc"], "/parallel"),
    (["/parallel:x", "/state:disc"], "/parallel"),
    (["/timeout:0", "/state:disc"], "/timeout"),
    (["/wait:", "/state:disc"], "/wait"),
    (["/query", "/whatif"], "cannot be combined"),
    (["3", "/server:A,B"], "exactly one server"),
    (["/state:disc", "/server:@"], "file"),
    (["/state:disc", "/server:@/no/such/file"], "cannot read"),
])
def test_bad_extension_arguments(cli, load, double, args, why):
    load()
    r = cli(*args)
    assert r.code == 1
    assert r.err.startswith("Invalid parameter(s)") and why in r.err
    assert double.calls() == 0


def test_durations():
    assert logoff.parse_duration("90s", "x") == 90
    assert logoff.parse_duration("15m", "x") == 900
    assert logoff.parse_duration("2H", "x") == 7200
    assert logoff.parse_duration("1d", "x") == 86400
    assert logoff.parse_duration("45", "x") == 45
    assert logoff.parse_duration("0.5", "x") == 0.5


# --- Calls per operation (deterministic, counted by the double) ---------------------

@pytest.mark.parametrize("n", [10, 100])
def test_calls_per_operation(cli, load, double, n):
    farm = Farm(caller=1)
    srv = farm.server("N")
    for i in range(n):
        srv.session(10 + i, "", DISCONNECTED if i % 2 else ACTIVE,
                    "user%d" % i, "CORP", disconnect=CLOCK - i * MINUTE,
                    input=CLOCK - i * MINUTE)
    load(farm)
    # Select by user or state: one enumeration.
    r = cli("/whatif", "/server:N", "/user:user1*", "/state:disc")
    assert double.calls("N", "WTSEnumerateSessionsExW") == 1
    assert double.rpcs("N") == 1
    # By idle: one enumeration plus one query per session past the others
    # (three with /json, which carries the client name and address: the
    # lock state comes with the times).
    load(farm)
    r = cli("/whatif", "/json", "/server:N", "/state:disc", "/idle:5m")
    passed_other_filters = n // 2
    assert double.calls("N", "WTSQuerySessionInformationW") == \
        3 * passed_other_filters
    assert double.rpcs("N") == 1 + 3 * passed_other_filters
    selected = len(doc(r)["sessions"])
    # Logging off k sessions: k logoff calls.
    load(farm)
    r = cli("/server:N", "/state:disc", "/idle:5m")
    assert double.calls("N", "WTSLogoffSession") == selected
    assert double.rpcs("N") == 1 + passed_other_filters + selected
    # A warned run adds k messages and one re-enumeration; each session's
    # times are read when planned (the logon the warning goes to) and once
    # more after the grace (still that logon?).  Only active sessions can
    # read a message.
    load(farm)
    r = cli("/server:N", "/state:active", "/warn:bye", "/grace:0")
    assert double.calls("N", "WTSSendMessageW") == n // 2
    assert double.calls("N", "WTSEnumerateSessionsExW") == 2
    assert double.calls("N", "WTSQuerySessionInformationW") == 2 * (n // 2)
    assert double.calls("N", "WTSLogoffSession") == n // 2
    assert double.rpcs("N") == 2 + 4 * (n // 2)


# --- /whatif -----------------------------------------------------------------------

def test_whatif_changes_nothing(cli, load, double):
    load()
    r = cli("/whatif", "/state:disc,active", "/server:RDS1,RDS2")
    assert r.code == 0
    assert state_changes(r) == []
    assert r.out.splitlines() == [
        "What if: log off session 2 (RDP-Tcp#1, CORP\\carol, Active) on "
        "server RDS1.",
        "What if: log off session 3 (CORP\\dave, Disconnected) on server "
        "RDS1.",
        "What if: log off session 4 (RDP-Tcp#3, CORP\\erin, Active) on "
        "server RDS2.",
        "What if: 3 session(s) would be logged off on 2 server(s)."]


def test_whatif_with_warn_sends_nothing(cli, load):
    load()
    r = cli("/whatif", "/warn:bye", "/grace:10m", "/user:alice")
    assert r.code == 0
    assert state_changes(r) == []
    assert r.out.startswith("What if: warn session 3")
    assert "wait 10m, then log it off if it still matches" in r.out


def test_whatif_explicit_session(cli, load):
    load()
    r = cli("3", "/whatif")
    assert r.code == 0 and state_changes(r) == []
    assert r.out.startswith("What if: log off session 3 (RDP-Tcp#8")


# --- /warn and the grace period ---------------------------------------------------------

def test_warn_then_logoff_rechecks(cli, load, double):
    farm = warn_farm()
    after = "WTSSendMessageW:5"           # once every warning has gone out
    farm.mutate(after, "W", 11, remove=1)
    farm.mutate(after, "W", 12, user="intruder")
    farm.mutate(after, "W", 13, state=DISCONNECTED)
    load(farm)
    r = cli("/server:W", "/state:active", "/warn:Maintenance in 1 minute",
            "/grace:0.2", "/json")
    assert r.code == 0, r.err
    assert messages(r) == [("W", i) for i in (11, 12, 13, 14, 15)]
    sent = [e for e in r.log if e.func == "WTSSendMessageW"][0].fields()
    assert sent["text"] == "Maintenance in 1 minute" and sent["wait"] == "0"
    assert logoffs(r) == [("W", 14), ("W", 15)]
    got = {s["id"]: s for s in doc(r)["sessions"]}
    assert {k: v["result"] for k, v in got.items()} == {
        11: "spared", 12: "spared", 13: "spared", 14: "logged-off",
        15: "logged-off"}
    assert got[11]["message"] == "the session has ended"
    assert "intruder" in got[12]["message"]
    assert "now disconnected" in got[13]["message"]
    assert all(s["warned"] for s in got.values())
    # Everything sent happened before the re-enumeration, and every logoff
    # after it.
    funcs = [e.func for e in r.log if e.server == "W"]
    second_enum = [i for i, f in enumerate(funcs)
                   if f == "WTSEnumerateSessionsExW"][1]
    assert "WTSSendMessageW" not in funcs[second_enum:]
    assert "WTSLogoffSession" not in funcs[:second_enum]


def test_warn_failure_spares_the_session(cli, load, double):
    farm = warn_farm()
    farm.fail("W", "WTSSendMessageW", 5, session=14)
    load(farm)
    r = cli("/server:W", "/user:stays*", "/warn:bye", "/grace:0")
    assert r.code == 2
    assert logoffs(r) == [("W", 15)]
    assert "could not warn session 14" in r.err and "(error 5)" in r.err
    assert double.exists("W", 14)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signal")
def test_ctrl_c_during_grace_logs_off_no_one(cli, load, double, monkeypatch):
    load(warn_farm())
    # A real SIGINT once the five warnings went out: the grace has begun.
    timers = sigint_after_warnings(monkeypatch, 5)
    try:
        r = cli("/server:W", "/state:active", "/warn:bye", "/grace:5m")
    finally:
        for t in timers:
            t.join()
    assert r.code == 1
    assert "no one was logged off" in r.err
    assert len(messages(r)) == 5
    assert logoffs(r) == []
    assert [e.func for e in r.log].count("WTSLogoffSession") == 0


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signal")
def test_ctrl_c_during_grace_real_process(double_path, tmp_path):
    farm_file = warn_farm().write(str(tmp_path / "farm.txt"))
    log_file = str(tmp_path / "calls.log")
    env = dict(os.environ, WTSAPI32_DLL=double_path, WTSDOUBLE_FARM=farm_file,
               WTSDOUBLE_LOG=log_file)
    p = subprocess.Popen([sys.executable, "logoff.py", "/server:W",
                          "/state:active", "/warn:bye", "/grace:60"],
                         cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if os.path.exists(log_file) and open(log_file).read().count(
                "WTSSendMessageW") == 5:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 1
    assert b"no one was logged off" in err and b"Traceback" not in err
    assert "WTSLogoffSession" not in open(log_file).read()


# --- /wait ------------------------------------------------------------------------

def test_wait_polls_instead_of_bwait(cli, load):
    # bWait=TRUE is reported to block forever: /wait issues the logoff
    # without it and then looks for the session to go.
    load()
    r = cli("/state:disc", "/wait")
    assert r.code == 0
    assert [e.extra for e in r.log if e.func == "WTSLogoffSession"] == [
        "wait=0"]
    funcs = [e.func for e in r.log if e.server == "."]
    assert funcs.index("WTSLogoffSession") < len(funcs) - 1 - funcs[
        ::-1].index("WTSEnumerateSessionsExW")


def test_wait_limit_reports_slow_session(cli, load, double):
    farm = Farm(caller=1)
    s = farm.server("S")
    s.session(3, "", DISCONNECTED, "slow", "CORP", logoff_ms=3000)
    s.session(4, "", DISCONNECTED, "fast", "CORP")
    load(farm)
    r = cli("/server:S", "/state:disc", "/wait:0.3", "/json")
    assert r.code == 2
    got = {x["id"]: x for x in doc(r)["sessions"]}
    assert got[4]["result"] == "logged-off"
    assert got[3]["result"] == "failed" and got[3]["error"] == 1460
    assert "did not finish" in got[3]["message"]


# --- Many servers ---------------------------------------------------------------------

def test_server_list_and_file(cli, load, tmp_path):
    load()
    listing = tmp_path / "farm.txt"
    listing.write_text("# the farm\nRDS1\n\n  rds2  # second\nrds1\n",
                       encoding="utf-8")
    r = cli("/whatif", "/json", "/state:disc,active",
            "/server:@%s,RDS2,\\\\RDS1" % listing)
    assert r.code == 0
    assert sorted({s["server"] for s in doc(r)["sessions"]}) == [
        "RDS1", "rds2"]


def test_one_server_failing_never_stops_the_others(cli, load):
    load()
    r = cli("/state:disc", "/server:DOWN,RDS1")
    assert r.code == 2
    assert logoffs(r) == [("RDS1", 3)]
    assert r.err == (
        "logoff: Server DOWN: %s The server cannot be reached: it is down or "
        "the name is wrong, a firewall blocks RPC, or the Remote Desktop "
        "Services service (TermService) is not running on it. (error 1722)\n"
        % wtsapi.error_text(1722, wtsapi.LANGID_EN_US))
    r = cli("/state:disc", "/server:DOWN")
    assert r.code == 1


def slow_farm(count, func, ms):
    """``count`` servers with one disconnected session each, ``func``
    (or ``*``) taking ``ms`` on every one."""
    farm = Farm(caller=1)
    names = ["H%02d" % i for i in range(count)]
    for name in names:
        farm.server(name).session(3, "", DISCONNECTED, "u", "CORP")
        farm.latency(name, func, ms)
    return farm, names


def test_fifty_slow_servers_run_concurrently(cli, load, double):
    farm, names = slow_farm(50, "*", 200)
    load(farm)
    r = cli("/state:disc", "/server:" + ",".join(names))
    assert r.code == 0, r.err
    assert len(logoffs(r)) == 50
    # Per server: open, enumerate, log off, close = 4 calls of 200 ms; not
    # one after another but sixteen servers at once (/parallel's default)
    # in every step; the handles all at once at the end (up to /parallel x
    # IN_FLIGHT).  (benchmarks/run.py's fan-out times it.)
    for func in ("WTSOpenServerW", "WTSEnumerateSessionsExW",
                 "WTSLogoffSession"):
        assert double.max_in_flight_for(None, func) == 16, func
    assert double.max_in_flight_for(None, "WTSCloseServer") == 50
    assert double.max_in_flight() == 50


def test_parallel_bounds_concurrency(cli, load, double):
    farm, names = slow_farm(8, "WTSEnumerateSessionsExW", 100)
    load(farm)
    r = cli("/state:disc", "/parallel:3", "/server:" + ",".join(names))
    assert r.code == 0
    assert double.max_in_flight() == 3


def test_hung_server_is_cut_off(cli, load, double):
    farm = standard_farm()
    farm.latency("RDS2", "WTSEnumerateSessionsExW", 2500)
    load(farm)
    r = cli("/state:disc,active", "/server:RDS1,RDS2", "/timeout:0.5",
            "/json")
    assert r.code == 2
    # The run is over before RDS2's enumeration returns (the double logs a
    # call when it returns): cut off, not waited for.
    assert [e.func for e in r.log if e.server == "RDS2"] == [
        "WTSOpenServerW"]
    assert double.in_flight() == 1
    d = doc(r)
    assert [(e["server"], e["error"]) for e in d["server_errors"]] == [
        ("RDS2", 1460)]
    assert logoffs(r) == [("RDS1", 2), ("RDS1", 3)]
    # The abandoned worker must not log anyone off on RDS2 when it wakes.
    deadline = time.monotonic() + 10
    while double.in_flight() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)
    assert double.exists("RDS2", 4)
    assert not [e for e in double.log() if e.func == "WTSLogoffSession"
                and e.server == "RDS2"]


# --- /json ---------------------------------------------------------------------------

SESSION_KEYS = {"server", "id", "name", "user", "domain", "state",
                "state_code", "idle_seconds", "logon_time", "own", "action",
                "result", "warned", "error", "message", "client_name",
                "client_address", "locked"}


def test_json_schema(cli, load):
    farm = standard_farm()
    farm.fail("RDS1", "WTSLogoffSession", 5, session=3)
    load(farm)
    r = cli("/json", "/state:disc,active", "/server:RDS1,RDS2,DOWN")
    assert r.code == 2
    d = doc(r)
    assert set(d) == {"sessions", "server_errors", "error", "exit_code"}
    assert d["exit_code"] == 2
    assert d["error"] is None           # no failure of the run as a whole
    assert [(x["server"], x["id"], x["result"]) for x in d["sessions"]] == [
        ("RDS1", 2, "logged-off"), ("RDS1", 3, "failed"),
        ("RDS2", 4, "logged-off")]
    s = d["sessions"][1]
    assert set(s) == SESSION_KEYS
    assert (s["server"], s["id"], s["user"], s["domain"], s["action"],
            s["result"], s["error"]) == ("RDS1", 3, "dave", "CORP", "logoff",
                                         "failed", 5)
    assert isinstance(s["message"], str) and s["message"]
    (e,) = d["server_errors"]
    assert set(e) == {"server", "function", "error", "message"}
    assert (e["server"], e["function"], e["error"]) == (
        "DOWN", "WTSEnumerateSessionsExW", 1722)
    assert r.err == ""


def test_json_local_server_is_null(cli, load):
    load()
    r = cli("3", "/json")
    (s,) = doc(r)["sessions"]
    assert s["server"] is None and s["result"] == "logged-off"


# --- /log --------------------------------------------------------------------------

def test_audit_log(cli, load, tmp_path):
    farm = warn_farm()
    farm.mutate("WTSSendMessageW:5", "W", 11, remove=1)
    load(farm)
    log = tmp_path / "audit.jsonl"
    r = cli("/server:W", "/state:active", "/warn:bye", "/grace:0",
            "/log:%s" % log)
    assert r.code == 0
    lines = [json.loads(x) for x in log.read_text("utf-8").splitlines()]
    # Written ahead: an intent before every change, its outcome after; a
    # batch's intents (up to eight) first, then its outcomes; the summary
    # last.
    expected = [("intent", "warn", sid, None) for sid in (11, 12, 13, 14, 15)]
    expected += [("outcome", "warn", sid, "ok")
                 for sid in (11, 12, 13, 14, 15)]
    expected.append(("outcome", "logoff", 11, "spared"))
    expected += [("intent", "logoff", sid, None) for sid in (12, 13, 14, 15)]
    expected += [("outcome", "logoff", sid, "logged-off")
                 for sid in (12, 13, 14, 15)]
    expected.append(("summary", None, None, None))
    assert [(x["phase"], x["action"], x["session"], x["result"])
            for x in lines] == expected
    first = lines[0]
    assert set(first) == {"time", "run", "seq", "phase", "operator",
                          "server", "session", "user", "domain", "action",
                          "result", "error", "message", "warned"}
    assert first["time"].endswith("Z") and first["server"] == "W"
    assert first["user"] == "gone"
    # Intent and outcome pair up by run and seq; one run id per run.
    assert len({x["run"] for x in lines}) == 1
    intents = {x["seq"]: x for x in lines if x["phase"] == "intent"}
    outcomes = [x for x in lines if x["phase"] == "outcome"]
    paired = [x for x in outcomes if x["seq"] in intents]
    assert len(paired) == len(intents) == 9
    assert all(intents[x["seq"]]["session"] == x["session"] and
               intents[x["seq"]]["action"] == x["action"] for x in paired)


def test_audit_log_cannot_open_means_nothing_done(cli, load, double):
    load()
    r = cli("/state:disc", "/log:%s" % os.path.join(ROOT, "no", "such",
                                                   "dir", "x.log"))
    assert r.code == 1 and "cannot open the log file" in r.err
    assert double.calls() == 0


def test_audit_log_two_concurrent_writers(run_process, tmp_path):
    import threading
    farm = Farm(caller=1)
    srv = farm.server("MANY")
    for i in range(150):
        srv.session(100 + i, "", DISCONNECTED, "user%d" % i, "CORP")
    log = tmp_path / "shared.jsonl"
    results = []

    def one():
        results.append(run_process(farm, "/server:MANY", "/state:disc",
                                   "/log:%s" % log))
    # run_process writes its own farm file per call: two threads, two files.
    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.code for r in results] == [0, 0], [r.err for r in results]
    lines = log.read_text("utf-8").splitlines()
    # An intent and an outcome each, and a summary a run.
    assert len(lines) == 602
    entries = [json.loads(x) for x in lines]
    outcomes = [e for e in entries if e["phase"] == "outcome"]
    assert sorted(e["session"] for e in outcomes) == sorted(
        list(range(100, 250)) * 2)
    summaries = [e for e in entries if e["phase"] == "summary"]
    assert len({e["run"] for e in summaries}) == 2
    assert all(e["counts"]["logged-off"] == 150 for e in summaries)
    assert len({(e["run"], e["seq"]) for e in entries}) == 302


# --- Exit codes and help ------------------------------------------------------------

def test_exit_codes(cli, load):
    farm = standard_farm()
    farm.fail("RDS2", "WTSLogoffSession", 5)
    load(farm)
    assert cli("/state:disc", "/server:RDS1").code == 0
    assert cli("/state:active", "/server:RDS2").code == 1
    load(farm)
    assert cli("/state:disc,active", "/server:RDS1,RDS2").code == 2
    assert cli("/state:bogus").code == 1


def test_help_documents_every_switch():
    usage = logoff.USAGE_BASIC % {"prog": "pylogoff"} + logoff.USAGE_MORE % {}
    for name in logoff._SWITCHES:
        assert "/%s" % name.upper() in usage, name
    assert usage.index("pylogoff [sessionname") < usage.index("/QUERY")
    for code in ("0 ", "1 ", "2 "):
        assert code in usage.split("Exit codes:")[1]


def test_session_ending_mid_selection_is_dropped(cli, load, double):
    farm = standard_farm()
    farm.mutate("WTSEnumerateSessionsExW:1", "RDS1", 3, remove=1)
    load(farm)
    r = cli("/json", "/whatif", "/idle:0", "/server:RDS1")
    assert r.code == 0, r.err
    assert [s["id"] for s in doc(r)["sessions"]] == [2]


def test_recheck_asks_for_the_own_session_once(cli, load):
    farm = standard_farm()
    load(farm)
    r = cli("/state:disc", "/warn:bye", "/grace:0")
    assert r.code == 0
    own = [e for e in r.log if e.func == "WTSQuerySessionInformationW"
           and e.session == 0xFFFFFFFF]
    assert len(own) == 1
    assert logoffs(r) == [(".", 4)]


@pytest.mark.skipif(not hasattr(time, "tzset"), reason="time.tzset")
@pytest.mark.parametrize("zone,day", [
    ("America/New_York", "2024-03-10"), ("America/New_York", "2024-11-03"),
    ("Australia/Lord_Howe", "2024-04-07"),     # a half-hour DST change
    ("Australia/Lord_Howe", "2024-10-06"), ("Asia/Kolkata", "2024-01-01"),
    ("UTC", "1970-01-01")])
def test_logon_minutes_are_local_across_changes_of_offset(monkeypatch, zone,
                                                          day):
    """The table formats a logon time from one localtime() an hour where
    that is exact; every minute of a day with a change of offset reads as
    time.localtime() reads it."""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        start = int(time.mktime(time.strptime(day, "%Y-%m-%d"))) - 86400
        cache = {}
        for minute in range(0, 3 * 1440):
            unix = start + minute * 60
            ticks = (unix + 11644473600) * 10 ** 7 + 4321
            assert logoff._local_minute(ticks, cache) == time.strftime(
                "%Y-%m-%d %H:%M", time.localtime(unix)), (zone, unix)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_a_long_listing_has_every_row_once(cli, load):
    """The table is written a bounded text at a time: not a row lost or
    repeated where one text ends and the next begins."""
    farm = Farm()
    srv = farm.server("BIG")
    for i in range(1, 2502):
        srv.session(i, "RDP-Tcp#%d" % i, ACTIVE, "u%d" % i, "CORP")
    load(farm)
    r = cli("/query", "/server:BIG")
    assert r.code == 0, r.err
    ids = [int(line.split()[1]) for line in r.out.splitlines()[1:]]
    assert ids == list(range(1, 2502))
    r = cli("/query", "/server:BIG", "/nh")
    assert len(r.out.splitlines()) == 2501
