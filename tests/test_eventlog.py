"""/eventlog: every audited action as an Application-log event, written
ahead like /log, through ctypes (RegisterEventSourceW, ReportEventW,
DeregisterEventSource); and /server:@-, server names from stdin (issue 12).

The event-log calls go to tests/evtdouble.c (ADVAPI32_DLL), which records
them; test_abi.py checks the prototypes against winbase.h.  The last test
writes and reads back a real event on real Windows and skips elsewhere."""

import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

import farm as farmlib
import logoff
import wtsapi
from farm import DISCONNECTED, Farm
from helpers import (POSIX, ROOT, logged_off, many_farm, read_lines,
                     warn_farm)

REAL_WINDOWS = (sys.platform == "win32"
                and not os.environ.get("WTSDOUBLE_PREBUILT")
                and not os.environ.get("EVTDOUBLE_PREBUILT"))

def system_text(code):
    """The system's text for a code, as the screen shows it (Wine's and
    Windows' differ: "Access denied." / "Access is denied.")."""
    return wtsapi.error_text(code)


def english_text(code):
    """The text /log, /json and the events carry."""
    return wtsapi.error_text(code, wtsapi.LANGID_EN_US)


INFO, WARNING, ERROR = (wtsapi.EVENTLOG_INFORMATION_TYPE,
                        wtsapi.EVENTLOG_WARNING_TYPE,
                        wtsapi.EVENTLOG_ERROR_TYPE)


@pytest.fixture(autouse=True)
def _event_double(request):
    """Every test here but the real-Windows one runs against the event-log
    double, with its handle check."""
    if request.node.name.startswith("test_real_windows"):
        yield None
    else:
        yield request.getfixturevalue("evt")


def split_event(text):
    """An event's one string: (the sentence, the JSON object)."""
    sentence, crlf, rest = text.partition("\r\n")
    assert crlf and "\n" not in rest and "\r" not in sentence
    assert rest.isascii()
    return sentence, json.loads(rest)


def events(evt):
    """(type, id, sentence, record) of every event the double took."""
    out = []
    for e in evt.events():
        f = e.fields
        assert (f["category"], f["nstrings"], f["datasize"], f["raw"]) == (
            "0", "1", "0", "0"), f
        sentence, record = split_event(e.strings[0])
        out.append((int(f["type"]), int(f["id"]), sentence, record))
    return out


# --- The bindings --------------------------------------------------------------

def test_the_three_functions_are_prototyped_for_the_abi_test():
    import test_abi
    protos = test_abi.prototypes()
    for name in wtsapi._EVENTLOG_FUNCTIONS + ("OpenProcessToken",
                                               "GetTokenInformation"):
        assert wtsapi._SYSTEM_PROTOTYPES[name][0] == "advapi32"
        assert name in protos
        assert wtsapi._SYSTEM_PROTOTYPES[name][3].startswith(
            ("winbase/", "processthreadsapi/", "securitybaseapi/"))
    assert set(("winbase.h", "processthreadsapi.h", "securitybaseapi.h",
                "handleapi.h")) <= set(test_abi.HEADERS)


def test_event_source_writes_through_the_double(evt):
    sid = bytes([1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 32, 2, 0, 0])
    with wtsapi.EventSource("PyLogoff") as src:
        assert evt.leaks()["handles"] == 1
        src.report(WARNING, 103, "caf\u00e9 \u7530\u4e2d \U0001f600", sid=sid)
        src.report(INFO, 900, "no user")
    log = evt.log()
    # One handle throughout (its number depends on what ran before).
    h = log[0].handle
    assert h != 0
    assert [(e.func, e.handle, e.ok) for e in log] == [
        ("RegisterEventSourceW", h, True), ("ReportEventW", h, True),
        ("ReportEventW", h, True), ("DeregisterEventSource", h, True)]
    assert log[0].fields == {"server": "-", "source": "PyLogoff"}
    assert log[1].fields["sid"] == "S-1-5-32-544" == wtsapi.sid_string(sid)
    assert log[1].strings == ["caf\u00e9 \u7530\u4e2d \U0001f600"]
    assert (log[1].fields["type"], log[1].fields["id"]) == ("2", "103")
    assert log[2].fields["sid"] == "-"


def test_event_source_failures_are_oserrors_with_winerror(evt):
    evt.fail("RegisterEventSourceW")
    with pytest.raises(wtsapi.EventLogError) as info:
        wtsapi.EventSource("PyLogoff")
    assert (info.value.winerror, info.value.function) == (
        5, "RegisterEventSourceW")
    assert isinstance(info.value, OSError)
    assert system_text(5) in str(info.value)
    src = wtsapi.EventSource("PyLogoff")
    evt.fail("ReportEventW")
    with pytest.raises(wtsapi.EventLogError) as info:
        src.report(INFO, 100, "x")
    assert (info.value.winerror, info.value.function) == (1502,
                                                          "ReportEventW")
    assert info.value.strerror == system_text(1502)
    src.report(INFO, 100, "the next one is written")
    src.close()
    src.close()                     # once only
    with pytest.raises(ValueError):
        src.report(INFO, 100, "closed")
    with wtsapi.EventSource("PyLogoff") as src:
        with pytest.raises(ValueError):
            src.report(INFO, 100, "x" * 31840)
        src.report(INFO, 100, "x" * 31839)
    assert [e.func for e in evt.log()].count("DeregisterEventSource") == 2


def test_a_stale_handle_is_refused_and_counted_by_the_double(evt):
    # The double itself, so that the fixture's check means something.
    src = wtsapi.EventSource("PyLogoff")
    handle = src._handle
    src.close()
    before = evt.leaks()["badhandles"]
    for name, args in (("ReportEventW", (4, 0, 1, None, 0, 0, None, None)),
                       ("DeregisterEventSource", ())):
        with pytest.raises(wtsapi.EventLogError) as info:
            wtsapi._event_call(src._api, name, "x", handle, *args)
        assert info.value.winerror == 6
    assert evt.leaks()["badhandles"] == before + 2
    evt.allowed_bad = 2


def test_without_the_variable_off_windows_the_event_log_is_unavailable(
        monkeypatch):
    if not POSIX:
        pytest.skip("on Windows the system's advapi32 is used")
    monkeypatch.delenv("ADVAPI32_DLL")
    with pytest.raises(wtsapi.LibraryUnavailable) as info:
        wtsapi.EventSource("PyLogoff")
    assert "ADVAPI32_DLL" in str(info.value)


def test_sid_string_and_process_sid():
    assert wtsapi.sid_string(bytes([1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0])) \
        == "S-1-5-18"
    big = bytes([1, 0, 1, 0, 0, 0, 0, 0])
    assert wtsapi.sid_string(big) == "S-1-0x010000000000"
    with pytest.raises(ValueError):
        wtsapi.sid_string(b"\x01\x02\0\0\0\0\0\x05")
    sid = wtsapi.process_sid()
    if POSIX:
        assert sid is None          # no token: lpUserSid is NULL
    else:
        assert wtsapi.sid_string(sid).startswith("S-1-")


# --- The events of a run ----------------------------------------------------------

def test_every_record_is_an_event_and_a_summary_ends_the_run(cli, load, evt,
                                                             tmp_path):
    load(many_farm(3))
    log = tmp_path / "a.jsonl"
    r = cli("/server:MANY", "/state:disc", "/eventlog", "/log:%s" % log)
    assert r.code == 0, r.err
    got = events(evt)
    lines = read_lines(log)
    # The same objects, in the same order, with one seq: then the summary,
    # which ends the file too.
    assert [rec for _t, _i, _s, rec in got] == lines
    # The three logoffs go out at once, each after its intent.
    assert [(t, i) for t, i, _s, _r in got] == [(INFO, 100)] * 3 \
        + [(INFO, 101)] * 3 + [(INFO, 900)]
    assert got[0][2] == "Logging off session 100 (CORP\\user0) on server MANY."
    assert got[3][2] == "Logged off session 100 (CORP\\user0) on server MANY."
    _t, _i, sentence, summary = got[-1]
    assert summary["phase"] == "summary" and summary["exit_code"] == 0
    assert summary["counts"] == {"logged-off": 3, "warned": 0,
                                 "server-errors": 0}
    assert summary["run"] == lines[0]["run"] and summary["seq"] == 4
    assert sentence == ("Run %s ended with exit code 0 (3 logged-off)."
                        % summary["run"])
    assert [e.fields["source"] for e in evt.log()
            if e.func == "RegisterEventSourceW"] == ["PyLogoff"]
    assert evt.log()[-1].func == "DeregisterEventSource"


def test_intent_event_is_written_before_the_call(cli, load, evt,
                                                 monkeypatch):
    load(many_farm(3))
    seen = []
    real = wtsapi.Server.logoff
    # The three calls run at once on workers; the double's EV_Log snapshot
    # is valid only until its next call: one reader at a time.
    reading = threading.Lock()

    def watching(self, session_id, wait=False):
        with reading:
            seen.append((session_id, [rec["session"] for t, i, s, rec in
                                      events(evt) if i == 100]))
        return real(self, session_id, wait)
    monkeypatch.setattr(wtsapi.Server, "logoff", watching)
    r = cli("/server:MANY", "/state:disc", "/eventlog:Ops Audit")
    assert r.code == 0, r.err
    assert sorted(sid for sid, _ in seen) == [100, 101, 102]
    assert all(sid in announced for sid, announced in seen)
    assert evt.log()[0].fields["source"] == "Ops Audit"


def test_levels_follow_the_outcome(cli, load, evt):
    farm = warn_farm()
    farm.server("W").session(16, "", DISCONNECTED, "away", "CORP")
    farm.fail("W", "WTSSendMessageW", 5, session=14)
    farm.fail("W", "WTSLogoffSession", 5, session=15)
    farm.mutate("WTSSendMessageW:3", "W", 13, remove=1)
    load(farm)
    r = cli("/server:W", "/user:left,stays*,away", "/warn:bye", "/grace:0",
            "/json", "/eventlog")
    assert r.code == 2
    got = [(t, i, rec["session"]) for t, i, _s, rec in events(evt)]
    # A batch's intents first, then its outcomes: the successes as they
    # answer, the failures once sorted (gone, or failed).
    assert got == [
        (INFO, 110, 13), (INFO, 110, 14), (INFO, 110, 15),
        (INFO, 111, 13), (INFO, 111, 15),          # warned
        (ERROR, 112, 14),                          # could not warn
        (INFO, 104, 13),                           # gone in the grace: spared
        (INFO, 100, 15), (INFO, 100, 16),
        (INFO, 101, 16),                           # not warned, logged off
        (ERROR, 102, 15),                          # logoff failed
        (WARNING, 900, None)]
    sentences = {(i, rec["session"]): s for _t, i, s, rec in events(evt)}
    assert sentences[(112, 14)] == ("Warning session 14 (CORP\\stays) on "
                                    "server W: could not warn: %s"
                                    % english_text(5))
    assert sentences[(104, 13)] == ("Spared session 13 (CORP\\left) on "
                                    "server W: the session has ended")
    assert sentences[(102, 15)].startswith("Could not log off session 15")
    summary = events(evt)[-1][3]
    assert summary["exit_code"] == json.loads(r.out)["exit_code"] == 2
    assert summary["counts"] == {"failed": 2, "spared": 1, "logged-off": 1,
                                 "warned": 2, "server-errors": 0}


def test_an_unknown_outcome_is_a_warning(cli, load, evt):
    farm = many_farm(2)
    farm.latency("MANY", "WTSLogoffSession", 1500)
    load(farm)
    r = cli("/server:MANY", "/state:disc", "/timeout:0.5", "/eventlog")
    # Both logoffs went out at once; neither answered within /timeout: the
    # server is given up (its own event), both outcomes are unknown, and
    # nothing more is asked of it.  Issued, perhaps done: 2.
    assert r.code == 2
    got = [(t, i) for t, i, _s, _r in events(evt)]
    assert got == [(INFO, 100), (INFO, 100), (ERROR, 120), (WARNING, 103),
                   (WARNING, 103), (WARNING, 900)]
    server = events(evt)[2][3]
    assert (server["phase"], server["server"], server["result"],
            server["error"]) == ("server", "MANY", "failed", 1460)


def test_summary_levels_follow_the_exit_code(cli, load, evt):
    load()
    assert cli("/server:DOWN", "/state:disc", "/eventlog").code == 1
    assert events(evt)[-1][:2] == (ERROR, 900)
    evt.reset()
    assert cli("/server:DOWN,RDS1", "/state:disc", "/eventlog").code == 2
    assert events(evt)[-1][:2] == (WARNING, 900)
    evt.reset()
    load()                          # dave again
    assert cli("/server:RDS1", "/state:disc", "/whatif", "/eventlog").code == 0
    got = events(evt)
    assert [(t, i) for t, i, _s, _r in got] == [(INFO, 900)]
    assert got[0][3]["counts"]["would-log-off"] == 1


def test_own_session_is_audited_too(cli, load, evt, tmp_path):
    load()
    log = tmp_path / "a.jsonl"
    assert cli("/eventlog", "/log:%s" % log).code == 0
    got = events(evt)
    assert [i for _t, i, _s, _r in got] == [100, 101, 900]
    assert got[2][3]["counts"] == {"logged-off": 1, "warned": 0,
                                   "server-errors": 0}
    assert [rec for _t, _i, _s, rec in got] == read_lines(log)
    assert got[0][3]["session"] == 2 and got[0][3]["user"] == "operator"
    assert got[0][2] == ("Logging off session 2 (CORP\\operator) on the "
                         "local server.")


def test_a_run_that_fails_as_a_whole_still_ends_with_its_summary(
        cli, load, evt, monkeypatch):
    # As a scheduled task under pythonw.exe: no one sees stderr.  The
    # run's first Windows call finds no wtsapi32 (a remote-only selection
    # no longer needs the caller's session ID, so its failure alone would
    # not fail the run).
    load()
    why = "cannot load wtsapi32.dll: not found"

    def no_library():
        raise wtsapi.LibraryUnavailable(why)
    monkeypatch.setattr(wtsapi, "current_session_id", no_library)
    r = cli("/server:RDS1", "/state:disc", "/eventlog")
    assert r.code == 1 and r.err == "logoff: %s\n" % why
    got = events(evt)
    assert [(t, i) for t, i, _s, _r in got] == [(ERROR, 900)]
    summary = got[0][3]
    assert (summary["exit_code"], summary["message"]) == (1, why)
    assert got[0][2] == ("Run %s ended with exit code 1 (nothing done): %s"
                         % (summary["run"], why))


def test_names_stay_lossless_in_ascii_json(cli, load, evt, monkeypatch):
    farm = Farm(caller=1)
    farm.server("U").session(3, "", DISCONNECTED, "\u7530\u4e2d", "\u00c9T\u00c9")
    load(farm)
    monkeypatch.setattr(wtsapi, "process_account", lambda: "CORP\\x\udcff")
    r = cli("/server:U", "/state:disc", "/eventlog")
    assert r.code == 0, r.err
    text = evt.events()[0].strings[0]
    assert "\\u7530\\u4e2d" in text and "\\udcff" in text
    _s, record = split_event(text)
    assert record["user"] == "\u7530\u4e2d"
    assert record["operator"] == "CORP\\x\udcff"


# --- Write ahead, or nothing ----------------------------------------------------------

def test_a_source_that_cannot_be_registered_means_nothing_done(cli, load,
                                                               double, evt,
                                                               tmp_path):
    load(many_farm(3))
    evt.fail("RegisterEventSourceW")
    log = tmp_path / "a.jsonl"
    r = cli("/server:MANY", "/state:disc", "/eventlog", "/log:%s" % log)
    assert r.code == 1 and r.out == ""
    assert r.err.startswith("logoff: cannot register the event source "
                            "PyLogoff: RegisterEventSourceW failed: %s "
                            "(error 5)" % system_text(5))
    assert len(r.err.splitlines()) == 1
    assert double.calls() == 0
    # The log, open already, holds the run's summary alone.
    summary, = read_lines(log)
    assert (summary["phase"], summary["exit_code"], summary["message"]) == (
        "summary", 1, "cannot register the event source PyLogoff: "
        "RegisterEventSourceW failed: %s (error 5)" % english_text(5))
    assert not any(summary["counts"].get(k) for k in (
        "logged-off", "not-attempted", "failed", "server-errors"))
    log.unlink()
    # With /json: the one document, saying why, and nothing on stderr.
    evt.reset()
    evt.fail("RegisterEventSourceW")
    r = cli("/server:MANY", "/state:disc", "/eventlog", "/log:%s" % log,
            "/json")
    assert (r.code, r.err) == (1, "")
    assert json.loads(r.out) == {
        "sessions": [], "server_errors": [],
        "error": "cannot register the event source PyLogoff: "
                 "RegisterEventSourceW failed: %s (error 5)" % english_text(5),
        "exit_code": 1}
    assert double.calls() == 0
    assert [x["phase"] for x in read_lines(log)] == ["summary"]


@pytest.mark.parametrize("nth", [1, 17])
def test_an_event_that_cannot_be_written_stops_every_change(cli, load, evt,
                                                            tmp_path, nth):
    load(many_farm(10))
    log = tmp_path / "a.jsonl"
    evt.fail("ReportEventW", nth=nth, count=0)
    r = cli("/server:MANY", "/state:disc", "/eventlog", "/log:%s" % log,
            "/json")
    d = json.loads(r.out)
    done = logged_off(r.log)
    written = [rec for _t, _i, _s, rec in events(evt)]
    lines = read_lines(log)
    # Logoffs go out eight at a time, a batch's intents first.  nth=1: the
    # first intent fails, nothing is done, exit 1; nth=17: the second
    # batch's first intent fails after the first batch (eight intents, eight
    # outcomes) was done, exit 2 (partly done).
    assert len(done) == (0 if nth == 1 else 8)
    assert d["exit_code"] == r.code == (1 if nth == 1 else 2)
    # Every logoff done has its intent and outcome in both sinks.
    assert {rec["session"] for rec in written if rec["phase"] == "intent"} \
        == {sid for _srv, sid in done}
    # The intent the event log refused went to the file first; its
    # not-attempted outcome follows there at once, so it never looks in
    # flight.
    refused = lines[2 * len(done)]
    closing = lines[2 * len(done) + 1]
    assert refused["phase"] == "intent"
    assert (closing["phase"], closing["seq"], closing["result"],
            closing["message"]) == (
        "outcome", refused["seq"], "not-attempted",
        "not attempted: the event log cannot be written")
    # Then only the summary: no intent after the failure.
    assert len(lines) == 2 * len(done) + 3
    assert lines[-1]["phase"] == "summary"
    # Blamed on the event log, once, and every remaining session is
    # not attempted for that reason.
    assert d["server_errors"] == []
    skipped = [s for s in d["sessions"] if s["result"] == "not-attempted"]
    assert len(skipped) == 10 - len(done)
    assert all(s["message"] == "not attempted: the event log cannot be "
               "written" for s in skipped)


def test_an_outcome_that_cannot_be_written_stops_the_rest(cli, load, evt,
                                                        tmp_path):
    # The first batch (eight intents, then their outcomes) goes out; the
    # second outcome event fails: the first batch is done, the last two
    # sessions are never started.
    load(many_farm(10))
    log = tmp_path / "a.jsonl"
    evt.fail("ReportEventW", nth=10, count=0)     # the second outcome
    r = cli("/server:MANY", "/state:disc", "/eventlog", "/log:%s" % log,
            "/json")
    assert len(logged_off(r.log)) == 8
    assert json.loads(r.out)["exit_code"] == r.code == 2
    lines = read_lines(log)
    # The file has every outcome; the event log lacks all but the first,
    # which therefore read there as in flight: unknown.
    batch = range(100, 108)
    assert [(x["phase"], x["session"]) for x in lines] == [
        ("intent", i) for i in batch] + [("outcome", i) for i in batch] + [
        ("summary", None)]
    assert [(i, rec["session"]) for _t, i, _s, rec in events(evt)] == [
        (100, i) for i in batch] + [(101, 100)]


def test_the_event_log_failure_is_reported_as_its_own(cli, load, evt,
                                                      tmp_path):
    load(many_farm(3))
    evt.fail("ReportEventW", nth=4)         # the first outcome
    log = tmp_path / "a.jsonl"
    r = cli("/server:MANY", "/state:disc", "/eventlog:Ops", "/log:%s" % log)
    assert r.code == 2
    assert len(logged_off(r.log)) == 3
    line = [x for x in r.err.splitlines() if "event log" in x]
    assert line == ["logoff: the event log (source Ops) cannot be written: "
                    "ReportEventW failed: %s (error 1502)"
                    % system_text(1502)]
    assert "audit log" not in r.err


def test_a_failed_summary_makes_the_exit_code_follow_the_rules(cli, load,
                                                              evt):
    load(many_farm(2))
    evt.fail("ReportEventW", nth=5)        # 2 x (intent, outcome), summary
    r = cli("/server:MANY", "/state:disc", "/eventlog", "/json")
    assert len(logged_off(r.log)) == 2
    assert json.loads(r.out)["exit_code"] == r.code == 2
    evt.reset()
    load(many_farm(2))
    evt.fail("ReportEventW", nth=1)
    r = cli("/server:MANY", "/state:disc", "/whatif", "/eventlog", "/json")
    doc = json.loads(r.out)
    assert doc["exit_code"] == r.code == 2      # would-log-off: done
    # An audit failure is the run's own error, in the one document.
    assert doc["error"].startswith("the event log (source PyLogoff) cannot "
                                   "be written")


def test_own_session_with_a_refused_intent_does_nothing(cli, load, double,
                                                        evt):
    load()
    evt.fail("ReportEventW", count=0)
    r = cli("/eventlog")
    assert r.code == 1
    assert double.calls(func="WTSLogoffSession") == 0
    # The same line as any run's (the own session goes through the same
    # pipeline), and nothing else.
    assert r.err == ("logoff: the event log (source PyLogoff) cannot be "
                     "written: ReportEventW failed: %s (error 1502)\n"
                     % system_text(1502))


@pytest.mark.skipif(not POSIX, reason="SIGKILL")
def test_sigkill_leaves_no_logoff_without_its_intent_event(double_path,
                                                           evt_path,
                                                           tmp_path):
    rng = random.Random(12)
    mid_run = 0
    for k in range(6):
        farm = many_farm(200)
        # Eight logoffs in flight at once: 25 batches of 30 ms.
        farm.latency("MANY", "WTSLogoffSession", 30)
        farm_file = farm.write(str(tmp_path / ("farm%d.txt" % k)))
        calls = tmp_path / ("calls%d.log" % k)
        evlog = tmp_path / ("events%d.log" % k)
        env = dict(os.environ, WTSAPI32_DLL=double_path, ADVAPI32_DLL=evt_path,
                   WTSDOUBLE_FARM=farm_file, WTSDOUBLE_LOG=str(calls),
                   EVTDOUBLE_LOG=str(evlog))
        p = subprocess.Popen([sys.executable, os.path.join(ROOT, "logoff.py"),
                              "/server:MANY", "/state:disc", "/eventlog"],
                             env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.1, 0.9))
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        done = []
        if calls.exists():
            done = logged_off(farmlib.parse_log(calls.read_text("utf-8"))[0])
        announced = set()
        if evlog.exists():
            for e in farmlib.parse_event_log(evlog.read_text("utf-8"))[0]:
                if e.func == "ReportEventW" and e.fields["id"] == "100":
                    rec = split_event(e.strings[0])[1]
                    announced.add((rec["server"], rec["session"]))
        assert set(done) <= announced, k
        if 0 < len(done) < 200:
            mid_run += 1
    assert mid_run >= 2, mid_run


def test_a_child_process_deregisters_its_source(run_process, evt, tmp_path):
    evlog = tmp_path / "events.log"
    r = run_process(many_farm(2), "/server:MANY", "/state:disc", "/eventlog",
                    env={"EVTDOUBLE_LOG": str(evlog)})
    assert r.code == 0, r.err
    entries, stats = farmlib.parse_event_log(evlog.read_text("utf-8"))
    assert [e.func for e in entries] == (
        ["RegisterEventSourceW"] + ["ReportEventW"] * 5
        + ["DeregisterEventSource"])
    assert stats == {"handles": 0, "badhandles": 0}
    # From the second outcome of the first batch of eight on, every event
    # fails: that batch is done, the last two sessions are not.
    r = run_process(many_farm(10), "/server:MANY", "/state:disc", "/eventlog",
                    env={"EVTDOUBLE_LOG": str(evlog),
                         "EVTDOUBLE_FAIL": "ReportEventW:10:0"})
    assert r.code == 2 and "(error 1502)" in r.err
    assert len(logged_off(r.log)) == 8


# --- The switch ----------------------------------------------------------------------

@pytest.mark.parametrize("arg", ["/eventlog:", "/eventlog: ",
                                 "/eventlog:a\\b", "/eventlog:a\tb",
                                 "/eventlog:" + "x" * 256])
def test_bad_sources_are_invalid_parameters(cli, load, double, evt, arg):
    load()
    r = cli("/state:disc", arg)
    assert r.code == 1 and "Invalid parameter(s)" in r.err
    assert double.calls() == 0 and evt.calls() == 0


def test_the_switch_is_documented_and_takes_an_optional_value():
    assert logoff._SWITCHES["eventlog"] is False
    usage = logoff.USAGE_BASIC % {"prog": "pylogoff"} + logoff.USAGE_MORE % {}
    assert "/EVENTLOG[:SOURCE]" in usage
    assert "@-" in usage
    opts = logoff.parse_args(["/state:disc", "/EventLog"])
    assert opts.eventlog == "PyLogoff"
    assert logoff.parse_args(["/state:disc", "-eventlog:Ops"]).eventlog == \
        "Ops"
    with pytest.raises(logoff.UsageError):
        logoff.parse_args(["/eventlog", "/eventlog:x", "/state:disc"])


def test_event_ids_are_fixed_and_within_eventcreates_range():
    ids = [i for i, _level in logoff.EVENT_IDS.values()] + [
        logoff.EVENT_SUMMARY]
    assert len(set(ids)) == len(ids)
    assert all(1 <= i <= 1000 for i in ids)
    # One table: each record's ID and level, and its sentence.
    assert logoff.EVENT_IDS == {k: v[:2] for k, v in logoff.RECORDS.items()}
    assert all(isinstance(v[2], str) and v[2] for v in
               logoff.RECORDS.values())
    assert logoff.EVENT_IDS[("server", None, "failed")] == (120, ERROR)


# --- /server:@- -------------------------------------------------------------------------

class FakeStdin:
    def __init__(self, data):
        self.buffer = io.BytesIO(data)


@pytest.mark.parametrize("data", [
    b"RDS1\r\nRDS2\r\n",                              # PowerShell 7, cmd
    "\ufeffRDS1\nRDS2\n".encode("utf-8"),            # PowerShell 5 UTF8
    "RDS1\r\nRDS2\r\n".encode("utf-16-le"),           # UTF-16, no BOM
    b"\xff\xfe" + "RDS1\nRDS2".encode("utf-16-le"),
    b"# farm\nRDS1   # first\n\nrds2\nRDS1\n"],
    ids=["utf8", "utf8-bom", "utf16-nobom", "utf16-bom", "comments"])
def test_server_names_from_stdin(cli, load, monkeypatch, data):
    load()
    monkeypatch.setattr(sys, "stdin", FakeStdin(data))
    r = cli("/whatif", "/json", "/state:disc,active", "/server:@-")
    assert r.code == 0, r.err
    assert sorted({s["server"].upper() for s in json.loads(r.out)["sessions"]}
                  ) == ["RDS1", "RDS2"]


def test_stdin_mixes_with_names_and_files(cli, load, monkeypatch, tmp_path):
    load()
    listing = tmp_path / "farm.txt"
    listing.write_text("RDS2\n", encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", FakeStdin(b"RDS1\n"))
    r = cli("/whatif", "/json", "/state:disc,active",
            "/server:DOWN,@-,@%s" % listing)
    assert r.code == 2
    d = json.loads(r.out)
    assert [e["server"] for e in d["server_errors"]] == ["DOWN"]
    assert sorted({s["server"] for s in d["sessions"]}) == ["RDS1", "RDS2"]


@pytest.mark.parametrize("data, why", [
    (b"RDS1\nRD\x01S2\n", "line 2 holds a control character"),
    (b"\xff\xfeR\x00D\x00\x00\xd8", "not UTF-8 or UTF-16"),
    (b"a\n" * (1 << 19) + b"b", "larger than 1 MiB"),
    (b"", "needs a server name"),
    ("".join("h%d\n" % i for i in range(100001)).encode(), "more than 100000"),
], ids=["control", "bad-utf16", "over-1mib", "empty", "over-100000-names"])
def test_stdin_has_the_files_caps_and_refusals(cli, load, double, monkeypatch,
                                               data, why):
    load()
    monkeypatch.setattr(sys, "stdin", FakeStdin(data))
    r = cli("/state:disc", "/server:@-")
    assert r.code == 1 and why in r.err, r.err
    assert double.calls() == 0


@pytest.mark.parametrize("stdin", [None, "closed", "nobuffer"])
def test_no_stdin_is_a_one_line_usage_error(cli, load, double, monkeypatch,
                                           stdin):
    load()
    if stdin == "closed":
        stdin = FakeStdin(b"RDS1\n")
        stdin.buffer.close()
    elif stdin == "nobuffer":
        stdin = object()
    monkeypatch.setattr(sys, "stdin", stdin)
    r = cli("/state:disc", "/server:@-")
    assert r.code == 1
    first = r.err.splitlines()[0]
    assert first == ("Invalid parameter(s): /server:@- reads server names "
                     "from standard input, but there is none")
    assert double.calls() == 0


def test_an_empty_stdin_in_a_child(run_process):
    # run_process gives the child the null device as stdin.
    r = run_process(farmlib.standard_farm(), "/query", "/server:@-")
    assert r.code == 1 and "/server: needs a server name" in r.err


def test_a_real_pipe_into_a_child(double_path, tmp_path):
    # As `Get-RDSessionHost ... | % SessionHost | py logoff.py /server:@-`
    # under Windows PowerShell 5 with $OutputEncoding = Unicode: UTF-16.
    farm_file = farmlib.standard_farm().write(str(tmp_path / "farm.txt"))
    env = dict(os.environ, WTSAPI32_DLL=double_path, WTSDOUBLE_FARM=farm_file)
    p = farmlib.run_child([sys.executable, os.path.join(ROOT, "logoff.py"),
                           "/query", "/json", "/server:@-"],
                          input="RDS1\r\nRDS2\r\n".encode("utf-16"),
                          capture_output=True, env=env, cwd=ROOT, timeout=60)
    assert p.returncode == 0, p.stderr
    servers = {s["server"] for s in json.loads(p.stdout)["sessions"]}
    assert servers == {"RDS1", "RDS2"}


@pytest.mark.skipif(not POSIX, reason="closing descriptor 0")
def test_a_closed_stdin_descriptor_in_a_child(double_path, tmp_path):
    farm_file = farmlib.standard_farm().write(str(tmp_path / "farm.txt"))
    env = dict(os.environ, WTSAPI32_DLL=double_path, WTSDOUBLE_FARM=farm_file)
    p = subprocess.run([sys.executable, os.path.join(ROOT, "logoff.py"),
                        "/state:disc", "/server:@-"], env=env, cwd=ROOT,
                       capture_output=True, timeout=60,
                       preexec_fn=lambda: os.close(0))
    assert p.returncode == 1
    err = p.stderr.decode("utf-8")
    assert err.splitlines()[0] == (
        "Invalid parameter(s): /server:@- reads server names from standard "
        "input, but there is none")
    assert "Traceback" not in err


# --- Real Windows -------------------------------------------------------------------------

def _query_events(source, marker, timeout=10):
    """The XML of the newest events of ``source`` holding ``marker``."""
    query = "*[System[Provider[@Name='%s']]]" % source
    deadline = time.monotonic() + timeout
    while True:
        p = subprocess.run(["wevtutil", "qe", "Application", "/q:" + query,
                            "/rd:true", "/c:20", "/f:xml"],
                           capture_output=True, timeout=60)
        xml = p.stdout.decode("utf-8", "replace")
        found = [e for e in xml.split("</Event>") if marker in e]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


@pytest.mark.skipif(not REAL_WINDOWS, reason="needs real Windows and its "
                    "event log (not Wine, not the double)")
def test_real_windows_writes_and_reads_back_one_event(monkeypatch):
    monkeypatch.delenv("ADVAPI32_DLL", raising=False)
    marker = "pylogoff-test-%s" % uuid.uuid4().hex
    sid = wtsapi.process_sid()
    with wtsapi.EventSource(logoff.DEFAULT_SOURCE) as src:
        src.report(INFO, logoff.EVENT_SUMMARY, "test event %s" % marker, sid)
    found = _query_events(logoff.DEFAULT_SOURCE, marker)
    assert len(found) == 1, found
    event = found[0]
    assert "<EventID" in event and ">900</EventID>" in event
    assert "<Level>4</Level>" in event           # information
    assert "UserID='%s'" % wtsapi.sid_string(sid) in event
