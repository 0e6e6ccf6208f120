"""wtsapi.py against the native test double: marshalling, errors, memory."""

import ctypes
import os
import pickle
import subprocess
import sys
import threading
import time
import types

import pytest

import wtsapi
from farm import (ACTIVE, CLOCK, DISCMSG_ERROR, DISCONNECTED, HOUR, LISTEN,
                  MINUTE, OPEN_NULL, SECOND, Double, Farm, parse_log,
                  run_child, standard_farm)
from wtsapi import WTS_CONNECTSTATE_CLASS as ST
from wtsapi import Server, WTSError
from helpers import ROOT



def run_python(code, env):
    return run_child([sys.executable, "-c", code], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=60)


# --- Loading -------------------------------------------------------------------

def test_import_loads_nothing(double_path):
    env = dict(os.environ, WTSAPI32_DLL=os.path.join(ROOT, "no-such.dll"))
    r = run_python("import sys, wtsapi; print(wtsapi._api is None)", env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "True"


@pytest.mark.skipif(sys.platform == "win32", reason="off-Windows behaviour")
def test_off_windows_without_override_names_the_variable():
    env = dict(os.environ)
    env.pop("WTSAPI32_DLL", None)
    r = run_python(
        "import wtsapi\n"
        "try:\n    wtsapi.Server()\n"
        "except wtsapi.LibraryUnavailable as e:\n    print('ERR', e)\n", env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ERR") and "WTSAPI32_DLL" in r.stdout


def test_missing_override_is_a_clear_error():
    env = dict(os.environ, WTSAPI32_DLL=os.path.join(ROOT, "no-such.dll"))
    r = run_python(
        "import wtsapi\n"
        "try:\n    wtsapi.Server()\n"
        "except OSError as e:\n"
        "    print(type(e).__name__, '|', e)\n", env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("LibraryUnavailable |")
    assert "no-such.dll" in r.stdout


def test_loaded_the_override(double_path, load):
    load()
    with Server() as local:
        local.sessions()
    assert os.path.samefile(wtsapi._load().path, double_path)


# --- Enumeration ---------------------------------------------------------------

def test_sessions_marshal_every_field(load):
    load()
    with Server() as local:
        sessions = local.sessions()
    by_id = {s.id: s for s in sessions}
    assert [s.id for s in sessions] == [0, 1, 2, 3, 4, 5, 65536]
    assert by_id[3].server is None
    assert by_id[3].name == "RDP-Tcp#8"
    assert by_id[3].state is ST.WTSActive
    assert (by_id[3].user, by_id[3].domain) == ("alice", "CORP")
    assert by_id[3].account == "CORP\\alice"
    assert by_id[4].state is ST.WTSDisconnected and by_id[4].name == ""
    assert by_id[5].user == "田中"
    assert by_id[65536].state is ST.WTSListen and by_id[65536].account == ""
    with pytest.raises(AttributeError):
        by_id[3].user = "mallory"            # a snapshot, immutable


def test_sessions_non_bmp_and_long_names(load):
    farm = Farm(caller=1)
    farm.server("RDS9").session(7, "RDP-Tcp#70", ACTIVE, "émile😀",
                                "DOMAINE-ÉTÉ", input=CLOCK)
    farm.server("RDS9").session(8, "x" * 31, DISCONNECTED, "u" * 20, "d" * 15)
    load(farm)
    with Server("rds9") as s:
        got = s.sessions()
    assert [(x.id, x.name, x.user, x.domain) for x in got] == [
        (7, "RDP-Tcp#70", "émile😀", "DOMAINE-ÉTÉ"),
        (8, "x" * 31, "u" * 20, "d" * 15)]
    assert got[0].server == "rds9"


def test_sessions_is_one_call_on_500_sessions(load, double):
    farm = Farm(caller=1)
    big = farm.server("BIG")
    for i in range(500):
        big.session(i + 1, "RDP-Tcp#%d" % i, ACTIVE, "user%d" % i, "CORP")
    load(farm)
    with Server("BIG") as s:
        sessions = s.sessions()
    assert len(sessions) == 500
    assert sessions[499].user == "user499"
    assert double.calls("BIG", "WTSEnumerateSessionsExW") == 1
    assert double.rpcs("BIG") == 1            # nothing else went to BIG
    assert double.calls(None, "WTSFreeMemoryExW") == 1
    assert double.calls(None, "WTSFreeMemory") == 0


def test_sessions_falls_back_where_ex_answers_120(load, double):
    farm = Farm(caller=1)
    old = farm.server("OLD", noex=True)
    old.session(1, "Console", ACTIVE, "admin", "CORP")
    old.session(3, "", DISCONNECTED, "bob", "CORP")
    load(farm)
    with Server("OLD") as s:
        first = s.sessions()
        second = s.sessions()
    assert first == second
    assert [(x.id, x.name, x.state, x.user, x.domain) for x in first] == [
        (1, "Console", ST.WTSActive, "admin", "CORP"),
        (3, "", ST.WTSDisconnected, "bob", "CORP")]
    # The Ex function is asked once per server, then not again.
    assert double.calls("OLD", "WTSEnumerateSessionsExW") == 1
    assert double.calls("OLD", "WTSEnumerateSessionsW") == 2
    assert double.calls("OLD", "WTSQuerySessionInformationW") == 8
    assert double.calls(None, "WTSFreeMemory") == 2 + 8


def test_fallback_skips_a_session_that_left_meanwhile(load, double):
    farm = Farm(caller=1)
    old = farm.server("OLD", noex=True)
    old.session(1, "Console", ACTIVE, "admin", "CORP")
    old.session(3, "", DISCONNECTED, "bob", "CORP")
    farm.mutate("WTSEnumerateSessionsW:1", "OLD", 3, remove=1)
    load(farm)
    with Server("OLD") as s:
        assert [x.id for x in s.sessions()] == [1]


def test_session_gone_codes():
    assert wtsapi.ERROR_FILE_NOT_FOUND == 2
    assert wtsapi.SESSION_GONE_CODES == (2, 7022)
    assert "SESSION_GONE_CODES" in wtsapi.__all__


def _old_server(farm, **flags):
    old = farm.server("OLD", noex=True, **flags)
    old.session(1, "Console", ACTIVE, "admin", "CORP")
    old.session(3, "", DISCONNECTED, "bob", "CORP")
    old.session(4, "RDP-Tcp#2", ACTIVE, "cy", "CORP")
    return old


@pytest.mark.parametrize("missing", [2, 7022])
def test_fallback_drops_a_vanished_session_after_one_more_look(
        load, double, missing):
    farm = Farm(caller=1)
    _old_server(farm, missing=missing)
    farm.mutate("WTSEnumerateSessionsW:1", "OLD", 3, remove=1)   # it ends
    load(farm)
    with Server("OLD") as s:
        got = s.sessions()
    assert [x.id for x in got] == [1, 4]
    assert double.calls("OLD", "WTSEnumerateSessionsW") == 2
    queries = [(e.session, e.ok, e.error) for e in double.log()
               if e.func == "WTSQuerySessionInformationW"]
    assert queries == [(1, True, 0), (1, True, 0), (3, False, missing),
                       (4, True, 0), (4, True, 0)]


def test_fallback_raises_for_a_listed_session_it_may_not_query(load, double):
    # 7022 also means "no WINSTATION_QUERY permission" ([MS-TSTS]): a
    # session still listed is not gone, and must not silently vanish.
    farm = Farm(caller=1)
    _old_server(farm).session(5, "RDP-Tcp#3", ACTIVE, "dee", "CORP",
                              noquery=1)
    load(farm)
    with Server("OLD") as s, pytest.raises(WTSError) as info:
        s.sessions()
    e = info.value
    assert (e.winerror, e.function, e.server, e.session) == (
        7022, "WTSQuerySessionInformationW", "OLD", 5)
    assert double.calls("OLD", "WTSEnumerateSessionsW") == 2


def test_fallback_looks_again_once_for_several_sessions(load, double):
    farm = Farm(caller=1)
    old = _old_server(farm, missing=2)
    old.session(5, "RDP-Tcp#3", ACTIVE, "dee", "CORP", noquery=1)
    farm.mutate("WTSEnumerateSessionsW:1", "OLD", 3, remove=1)
    farm.mutate("WTSEnumerateSessionsW:1", "OLD", 4, remove=1)
    load(farm)
    with Server("OLD") as s:
        with pytest.raises(WTSError) as info:
            s.sessions()                      # 3 and 4 ended, 5 is refused
        assert (info.value.winerror, info.value.session) == (7022, 5)
        assert double.calls("OLD", "WTSEnumerateSessionsW") == 2
        farm.server("OLD").sessions.pop()     # again, without the refused
        load(farm)
        assert [x.id for x in s.sessions()] == [1]
        assert double.calls("OLD", "WTSEnumerateSessionsW") == 2


def test_fallback_other_errors_raise_without_a_second_look(load, double):
    farm = Farm(caller=1)
    _old_server(farm)
    farm.fail("OLD", "WTSQuerySessionInformationW", 5, session=3)
    load(farm)
    with Server("OLD") as s, pytest.raises(WTSError) as info:
        s.sessions()
    assert (info.value.winerror, info.value.session) == (5, 3)
    assert double.calls("OLD", "WTSEnumerateSessionsW") == 1


@pytest.mark.parametrize("missing, code", [(None, 7022), (7022, 7022),
                                           (2, 2)])
def test_a_missing_session_answers_the_servers_code(load, double, missing,
                                                    code):
    farm = Farm(caller=1)
    flags = {} if missing is None else {"missing": missing}
    farm.server("RDS7", **flags).session(3, "RDP-Tcp#1", ACTIVE, "u", "C")
    load(farm)
    with Server("RDS7") as s:
        for ask in (lambda: s.times(9), lambda: s.logoff(9),
                    lambda: s.disconnect(9),
                    lambda: s.send_message(9, "t", "x")):
            with pytest.raises(WTSError) as info:
                ask()
            assert (info.value.winerror, info.value.session) == (code, 9)
        assert s.times(3).user == "u"


def test_a_session_one_may_not_query_is_listed_but_refused(load, double):
    farm = Farm(caller=1)
    srv = farm.server("RDS7", missing=2)
    srv.session(3, "RDP-Tcp#1", ACTIVE, "u", "C")
    srv.session(5, "RDP-Tcp#2", ACTIVE, "v", "C", noquery=1)
    load(farm)
    with Server("RDS7") as s:
        assert [(x.id, x.user) for x in s.sessions()] == [(3, "u"),
                                                         (5, "v")]
        for ask in (lambda: s.times(5), lambda: s.logoff(5),
                    lambda: s.disconnect(5),
                    lambda: s.send_message(5, "t", "x")):
            with pytest.raises(WTSError) as info:
                ask()
            assert (info.value.winerror, info.value.session) == (7022, 5)
    assert double.exists("RDS7", 5)
    assert double.state("RDS7", 5) == ACTIVE
    api = wtsapi._load()                      # the legacy listing too
    info, count = ctypes.POINTER(wtsapi.WTS_SESSION_INFOW)(), wtsapi.DWORD()
    with Server("RDS7") as s:
        try:
            assert api.WTSEnumerateSessionsW(s._enter(), 0, 1,
                                             ctypes.byref(info),
                                             ctypes.byref(count))
        finally:
            s._leave()
    try:
        assert [r.SessionId for r in info[:count.value]] == [3, 5]
    finally:
        api.WTSFreeMemory(info)


def test_no_visible_sessions_is_error_259_not_an_empty_list(load, double):
    # 259 means "this account may see no session here" (no Query
    # Information permission), never "an empty server": it used to be
    # swallowed as [], which made a server one may not read look idle.
    farm = standard_farm()
    farm.server("NOPERM", noquery=True).session(3, "RDP-Tcp#1", ACTIVE, "u")
    farm.server("NOPERMOLD", noquery=True, noex=True).session(3, "x", ACTIVE)
    farm.server("EMPTY")
    load(farm)
    for name, function in (("NOPERM", "WTSEnumerateSessionsExW"),
                           ("NOPERMOLD", "WTSEnumerateSessionsW"),
                           ("EMPTY", "WTSEnumerateSessionsExW")):
        with Server(name) as s, pytest.raises(WTSError) as info:
            s.sessions()
        e = info.value
        assert (e.winerror, e.function, e.server, e.session) == (
            wtsapi.ERROR_NO_MORE_ITEMS, function, name, None)
    # The legacy path was tried only where Ex answered 120, not for 259.
    assert double.calls("NOPERM", "WTSEnumerateSessionsW") == 0
    assert double.calls("NOPERMOLD", "WTSEnumerateSessionsExW") == 1


def test_no_query_permission_denies_session_queries(load, double):
    farm = standard_farm()
    farm.server("NOPERM", noquery=True).session(3, "RDP-Tcp#1", ACTIVE, "u")
    load(farm)
    with Server("NOPERM") as s, pytest.raises(WTSError) as info:
        s.times(3)
    assert (info.value.winerror, info.value.session) == (5, 3)


def test_buffer_freed_when_copy_out_fails(load, double, monkeypatch):
    load()
    made = []

    class Exploding(wtsapi.Session):
        __slots__ = ()

        def __new__(cls, *args):
            if len(made) == 3:
                raise RuntimeError("boom in the middle of the copy")
            made.append(args)
            return super().__new__(cls, *args)
    monkeypatch.setattr(wtsapi, "Session", Exploding)
    with Server() as local, pytest.raises(RuntimeError):
        local.sessions()
    assert double.calls(None, "WTSFreeMemoryExW") == 1
    # ... and the autouse fixture checks that nothing is left allocated.


# --- Processes -------------------------------------------------------------------

def _process_farm(**flags):
    farm = standard_farm()
    rds1 = farm.server("RDS1", **flags)
    rds1.process(0, 0)                        # the System Idle Process
    rds1.process(0, 4, "System")
    rds1.process(2, 4242, "excel.exe")
    rds1.process(3, 5151, "wörd 😀.exe")
    rds1.process(9, 6000, "orphan.exe")       # no such session: not listed
    farm.server(".").process(2, 77, "python.exe")
    farm.server(".").process(3, 88, "notepad.exe")
    return farm


def test_processes_marshal_every_field_in_one_call(load, double):
    load(_process_farm())
    with Server("RDS1") as s:
        got = s.processes()
    assert got == [("RDS1", 0, 0, ""), ("RDS1", 0, 4, "System"),
                   ("RDS1", 2, 4242, "excel.exe"),
                   ("RDS1", 3, 5151, "wörd 😀.exe")]
    p = got[2]
    assert isinstance(p, wtsapi.Process)
    assert (p.server, p.session_id, p.pid, p.name) == (
        "RDS1", 2, 4242, "excel.exe")
    with pytest.raises(AttributeError):
        p.name = "evil.exe"
    assert double.rpcs("RDS1") == 1
    [entry] = [e for e in double.log() if e.func not in Double.LOCAL_ONLY]
    assert (entry.func, entry.fields()) == (
        "WTSEnumerateProcessesExW",
        {"level": "0", "session": str(wtsapi.WTS_ANY_SESSION)})
    assert double.calls(None, "WTSFreeMemoryExW") == 1
    assert double.calls(None, "WTSFreeMemory") == 0


def test_a_logoff_ends_the_sessions_processes(load, double):
    load(_process_farm())
    with Server("RDS1") as s:
        s.logoff(2)
        assert [p.pid for p in s.processes()] == [0, 4, 5151]


def test_an_empty_process_list_is_freed_too(load, double):
    farm = standard_farm()
    farm.server("RDS1")
    load(farm)
    with Server("RDS1") as s:
        assert s.processes() == []
    assert double.calls(None, "WTSFreeMemoryExW") == 1   # ... and no leak


def test_processes_fall_back_where_ex_answers_120(load, double):
    load(_process_farm(noex=True))
    with Server("RDS1") as s:
        first = s.processes()
        assert s.sessions()[0].id == 0        # Ex is not asked again
        second = s.processes()
    assert first == second
    assert [p.pid for p in first] == [0, 4, 4242, 5151]
    assert double.calls("RDS1", "WTSEnumerateProcessesExW") == 1
    assert double.calls("RDS1", "WTSEnumerateSessionsExW") == 0
    assert double.calls("RDS1", "WTSEnumerateProcessesW") == 2
    assert double.calls(None, "WTSFreeMemoryExW") == 0


def test_processes_fall_back_where_ex_is_missing(load, double, monkeypatch):
    load(_process_farm())
    monkeypatch.setattr(wtsapi._load(), "WTSEnumerateProcessesExW", None)
    with Server("RDS1") as s:
        assert [p.pid for p in s.processes()] == [0, 4, 4242, 5151]
    assert double.calls("RDS1", "WTSEnumerateProcessesExW") == 0
    assert double.calls("RDS1", "WTSEnumerateProcessesW") == 1
    assert double.calls(None, "WTSFreeMemory") == 1


def test_processes_without_administrator_rights(load, double):
    # sdk-api: other users' sessions' processes need Administrators.
    farm = _process_farm(fullcontrol=False)
    farm.caller_fullcontrol = False
    load(farm)
    with Server() as local:
        assert [(p.session_id, p.pid) for p in local.processes()] == [
            (2, 77)]
    with Server("RDS1") as s:
        assert s.processes() == []


def test_process_calls_fail_and_wait_like_the_others(load, double):
    farm = _process_farm()
    farm.fail("RDS1", "WTSEnumerateProcessesExW", 1726, count=1)
    farm.latency("RDS1", "WTSEnumerateProcessesExW", 300)
    load(farm)
    with Server("RDS1") as s:
        with pytest.raises(WTSError) as info:
            s.processes()
        assert (info.value.winerror, info.value.function,
                info.value.server, info.value.session) == (
            1726, "WTSEnumerateProcessesExW", "RDS1", None)
        assert len(s.processes()) == 4
    with Server("DOWN") as s, pytest.raises(WTSError) as info:
        s.processes()
    assert info.value.winerror == 1722
    assert double.max_in_flight_for("RDS1", "WTSEnumerateProcessesExW") == 1


def test_the_double_catches_a_wrong_process_free(double_path, tmp_path):
    farm_file = _process_farm().write(str(tmp_path / "farm.txt"))
    log_file = str(tmp_path / "calls.log")
    env = dict(os.environ, WTSAPI32_DLL=double_path, WTSDOUBLE_FARM=farm_file,
               WTSDOUBLE_LOG=log_file)
    r = run_python(
        "import ctypes, wtsapi\n"
        "api, T = wtsapi._load(), wtsapi.WTS_TYPE_CLASS\n"
        "def enum():\n"
        "    level, buf, n = wtsapi.DWORD(0), wtsapi.PVOID(), wtsapi.DWORD()\n"
        "    assert api.WTSEnumerateProcessesExW(None, ctypes.byref(level),\n"
        "        wtsapi.WTS_ANY_SESSION, ctypes.byref(buf), ctypes.byref(n))\n"
        "    return buf, n.value\n"
        "buf, n = enum()\n"
        "api.WTSFreeMemory(buf)                         # the wrong function\n"
        "buf, n = enum()\n"
        "assert not api.WTSFreeMemoryExW(T.WTSTypeSessionInfoLevel1, buf, n)\n"
        "buf, n = enum()\n"
        "assert not api.WTSFreeMemoryExW(T.WTSTypeProcessInfoLevel0, buf,\n"
        "                                n + 1)         # the wrong count\n"
        "buf, n = enum()\n"
        "assert api.WTSFreeMemoryExW(T.WTSTypeProcessInfoLevel0, buf, n)\n",
        env)
    assert r.returncode == 0, r.stderr
    with open(log_file, encoding="utf-8") as f:
        _log, stats = parse_log(f.read())
    assert (stats["badfrees"], stats["live"]) == (3, 0)


# --- Errors --------------------------------------------------------------------

def test_unreachable_server_fails_with_1722_and_closes_once(load, double):
    load()
    s = Server("DOWN")
    with pytest.raises(WTSError) as info:
        s.sessions()
    s.close()
    s.close()
    e = info.value
    assert isinstance(e, OSError)
    assert (e.winerror, e.function, e.server, e.session) == (
        1722, "WTSEnumerateSessionsExW", "DOWN", None)
    assert "1722" in str(e) and "DOWN" in str(e)
    assert double.calls("DOWN", "WTSCloseServer") == 1
    assert double.calls("DOWN", "WTSOpenServerW") == 1
    with pytest.raises(ValueError):
        s.sessions()                      # a closed Server refuses, no call


# --- Closing, from any thread ---------------------------------------------------

def test_close_twice_closes_once(load, double):
    load()
    remote, local = Server("RDS1"), Server()
    for server in (remote, local, remote, local):
        server.close()
    assert double.calls("RDS1", "WTSCloseServer") == 1
    assert double.calls(None, "WTSCloseServer") == 1     # never the local one
    for server in (remote, local):
        with pytest.raises(ValueError, match="closed Server"):
            server.sessions()
    assert double.rpcs() == 0


def test_close_from_another_thread_waits_for_the_call_in_flight(load,
                                                                double):
    # A coordinator gives a server up while a worker's call is still in
    # the library: closing the handle under that call would make it a bad
    # (or, on Windows, a reused) handle.
    farm = standard_farm()
    farm.latency("RDS1", "WTSQuerySessionInformationW", 2000)
    load(farm)
    s = Server("RDS1")
    got = []
    worker = threading.Thread(target=lambda: got.append(s.times(2)))
    worker.start()
    assert _poll(lambda: double.in_flight() == 1)
    closer = threading.Thread(target=s.close)
    closer.start()
    closer.join(10)
    assert not closer.is_alive()              # close() itself never waits
    closes = double.calls("RDS1", "WTSCloseServer")
    assert double.in_flight() == 1, "the call returned too soon to tell"
    assert closes == 0                        # not under the call in flight
    with pytest.raises(ValueError, match="closed Server"):
        s.sessions()                          # a later call: refused
    worker.join(10)
    assert not worker.is_alive()
    assert [t.user for t in got] == ["carol"]   # the call itself succeeded
    assert double.calls("RDS1", "WTSCloseServer") == 1   # at its return
    assert double.leaks()["badhandles"] == 0
    with pytest.raises(ValueError, match="closed Server"):
        s.times(2)
    s.close()
    assert double.calls("RDS1", "WTSCloseServer") == 1
    assert double.calls("RDS1", "WTSQuerySessionInformationW") == 1
    assert double.calls("RDS1", "WTSEnumerateSessionsExW") == 0


def test_a_server_closed_while_it_connects_closes_its_handle_on_return(
        load, double):
    # A coordinator gives a server up while a worker still waits in
    # WTSOpenServerW: the handle that comes later is closed when it comes,
    # and nothing else is ever called on it.
    farm = standard_farm()
    farm.latency("RDS1", "WTSOpenServerW", 1000)
    load(farm)
    s = Server("RDS1", connect=False)
    assert double.calls("RDS1", "WTSOpenServerW") == 0
    with pytest.raises(ValueError, match="not connected"):
        s.sessions()                # never the local server by mistake
    assert double.rpcs() == 0
    worker = threading.Thread(target=s.connect)
    worker.start()
    assert _poll(lambda: double.in_flight() == 1)
    s.close()                        # returns at once
    assert double.in_flight() == 1, "the open returned too soon to tell"
    assert double.calls("RDS1", "WTSCloseServer") == 0
    worker.join(10)
    assert not worker.is_alive()
    assert double.calls("RDS1", "WTSCloseServer") == 1
    assert double.leaks()["handles"] == 0
    with pytest.raises(ValueError, match="closed Server"):
        s.connect()
    assert double.calls("RDS1", "WTSEnumerateSessionsExW") == 0


# A review finding: a second connect() opened a second handle over the
# first, which was never closed.
def test_connect_twice_is_refused_and_leaks_nothing(load, double):
    load(standard_farm())
    s = Server("RDS1", connect=False)
    s.connect()
    with pytest.raises(ValueError, match="already connected"):
        s.connect()
    assert double.calls("RDS1", "WTSOpenServerW") == 1
    s.close()
    assert double.leaks()["handles"] == 0


def test_the_last_call_in_flight_closes_the_handle_once(load, double):
    farm = standard_farm()
    farm.latency("RDS1", "WTSQuerySessionInformationW", 1000)
    farm.fail("RDS1", "WTSQuerySessionInformationW", 1726, session=0)
    load(farm)
    s = Server("RDS1")
    results = {}

    def ask(sid):
        try:
            results[sid] = s.times(sid).user
        except WTSError as e:                 # a failing call unregisters too
            results[sid] = e.winerror
    threads = [threading.Thread(target=ask, args=(sid,))
               for sid in (0, 2, 3)]
    for t in threads:
        t.start()
    assert _poll(lambda: double.in_flight() == 3)
    s.close()
    closes = double.calls("RDS1", "WTSCloseServer")
    assert double.in_flight() == 3, "the calls returned too soon to tell"
    assert closes == 0
    for t in threads:
        t.join(10)
    assert results == {0: 1726, 2: "carol", 3: "dave"}
    assert double.calls("RDS1", "WTSCloseServer") == 1
    assert double.leaks()["badhandles"] == 0


def test_a_failed_call_leaves_nothing_in_flight(load, double):
    farm = standard_farm()
    farm.fail("RDS1", "WTSLogoffSession", 5)
    load(farm)
    s = Server("RDS1")
    with pytest.raises(WTSError):
        s.logoff(2)
    with pytest.raises(ValueError):
        s.times(2**32)                        # refused before registering
    s.close()                                 # nothing in flight: now
    assert double.calls("RDS1", "WTSCloseServer") == 1


def test_unknown_server_behaves_as_unreachable(load):
    load()
    with Server("NO-SUCH-HOST") as s, pytest.raises(WTSError) as info:
        s.sessions()
    assert info.value.winerror == 1722


def test_local_server_handle_is_never_closed(load, double):
    load()
    with Server() as local:
        local.sessions()
    assert double.calls(None, "WTSCloseServer") == 0
    assert double.calls(None, "WTSOpenServerW") == 0


def test_error_text_and_fields(load):
    farm = standard_farm()
    farm.caller_fullcontrol = False
    load(farm)
    with Server() as local, pytest.raises(WTSError) as info:
        local.logoff(3)
    e = info.value
    assert (e.winerror, e.function, e.server, e.session) == (
        5, "WTSLogoffSession", None, 3)
    assert e.strerror
    if sys.platform != "win32":
        assert e.strerror == "Access is denied."
    copy = pickle.loads(pickle.dumps(e))
    assert (copy.winerror, copy.session, str(copy)) == (5, 3, str(e))


def test_failure_without_last_error_still_raises(load):
    farm = standard_farm()
    farm.fail(".", "WTSLogoffSession", 0)
    load(farm)
    with Server() as local, pytest.raises(WTSError) as info:
        local.logoff(3)
    assert info.value.winerror == 0
    assert "unknown" in info.value.strerror


def test_stale_last_error_is_not_reported(load):
    # A failure that sets no error right after one that did must not show
    # the earlier code.
    farm = standard_farm()
    farm.fail(".", "WTSLogoffSession", 0, session=3)
    load(farm)
    with Server() as local:
        with pytest.raises(WTSError) as first:
            local.logoff(99)              # 7022, from the double
        with pytest.raises(WTSError) as second:
            local.logoff(3)
    assert first.value.winerror == 7022
    assert second.value.winerror == 0


def test_injected_failure_counts(load, double):
    farm = standard_farm()
    farm.fail("RDS1", "WTSEnumerateSessionsExW", 1726, count=1)
    load(farm)
    with Server("RDS1") as s:
        with pytest.raises(WTSError) as info:
            s.sessions()
        assert info.value.winerror == 1726
        assert [x.user for x in s.sessions()] == ["", "carol", "dave", ""]


@pytest.mark.parametrize("bad", [-1, 2 ** 32, 2 ** 64 + 3, True, "3", 3.0])
def test_session_ids_are_checked_before_any_call(load, double, bad):
    load()
    with Server() as local:
        for action in (local.logoff, local.disconnect, local.times,
                       lambda sid: local.send_message(sid, "t", "x")):
            with pytest.raises((ValueError, TypeError)):
                action(bad)
    assert double.calls() == 0


@pytest.mark.skipif(sys.platform == "win32", reason="table used off Windows")
def test_builtin_error_table():
    assert wtsapi.error_text(1722) == "The RPC server is unavailable."
    assert wtsapi.error_text(7022) == "The specified session cannot be found."
    assert wtsapi.error_text(123456) == "Unknown error 123456."


@pytest.mark.skipif(sys.platform != "win32", reason="FormatMessage")
def test_error_text_comes_from_the_system():
    for code in (5, 87, 1722):
        assert wtsapi.error_text(code)
        assert not wtsapi.error_text(code).startswith("Unknown error")


# --- Actions -------------------------------------------------------------------

def test_logoff_removes_the_session(load, double):
    load()
    with Server("RDS1") as s:
        s.logoff(2)
        assert [x.id for x in s.sessions()] == [0, 3, 65536]
        with pytest.raises(WTSError) as info:
            s.logoff(2)
    assert info.value.winerror == 7022
    calls = [e for e in double.log() if e.func == "WTSLogoffSession"]
    assert [(e.server, e.session, e.ok, e.extra) for e in calls] == [
        ("RDS1", 2, True, "wait=0"), ("RDS1", 2, False, "wait=0")]


def test_own_session_needs_no_rights(load, double):
    farm = standard_farm()
    farm.caller_fullcontrol = False
    load(farm)
    with Server() as local:
        assert local.session_id() == 2
        local.logoff(wtsapi.WTS_CURRENT_SESSION, wait=True)
    assert not double.exists(".", 2)


def test_current_session_id(load):
    load()
    assert wtsapi.current_session_id() == 2


def _own_session_query_fails(load):
    # What Windows does when Remote Desktop Services is not running
    # (sdk-api, WTSQuerySessionInformationW); the code is a stand-in.
    farm = standard_farm()
    farm.fail(".", "WTSQuerySessionInformationW", 1722, session=2)
    load(farm)


@pytest.mark.skipif(sys.platform == "win32", reason="off-Windows behaviour")
def test_current_session_id_has_no_fallback_off_windows(load, double):
    _own_session_query_fails(load)
    with pytest.raises(WTSError) as info:
        wtsapi.current_session_id()
    assert (info.value.winerror, info.value.function) == (
        1722, "WTSQuerySessionInformationW")
    assert double.rpcs() == 1


@pytest.mark.skipif(sys.platform != "win32", reason="kernel32 fallback")
def test_current_session_id_falls_back_to_the_process_session(load, double):
    _own_session_query_fails(load)
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    expected = ctypes.c_uint32(0xDEAD)
    assert kernel32.ProcessIdToSessionId(ctypes.c_uint32(os.getpid()),
                                         ctypes.byref(expected))
    assert wtsapi.current_session_id() == expected.value
    [entry] = [e for e in double.log()
               if e.func == "WTSQuerySessionInformationW"]
    assert not entry.ok                       # the WTS call was tried first


def _as_if_on_windows(monkeypatch, fake_system, session=None):
    """The Windows branch, anywhere: the double stays wtsapi32, kernel32 is
    a stand-in whose ProcessIdToSessionId answers ``session`` (None: it
    fails with 5) and whose FormatMessageW knows no text."""
    monkeypatch.setattr(wtsapi, "_WINDOWS", sys.platform == "win32")
    wtsapi._load()                            # the double, loaded as usual
    monkeypatch.setattr(wtsapi, "_WINDOWS", True)

    def to_session(pid, out):
        assert pid == os.getpid()
        if session is None:
            return fake_system.fail(wtsapi.ERROR_ACCESS_DENIED)
        ctypes.c_uint32.from_address(out).value = session
        return 1
    fake_system.install(
        "kernel32", ProcessIdToSessionId=to_session,
        GetCurrentProcessId=os.getpid,
        FormatMessageW=lambda *a: fake_system.fail(
            wtsapi.ERROR_MR_MID_NOT_FOUND))


def test_current_session_id_fallback_logic(load, double, monkeypatch,
                                           fake_system):
    _own_session_query_fails(load)
    _as_if_on_windows(monkeypatch, fake_system, session=7)
    assert wtsapi.current_session_id() == 7
    assert [c[0] for c in fake_system.calls
            if c[0] != "FormatMessageW"] == [      # (the WTSError's text)
        "GetCurrentProcessId", "ProcessIdToSessionId"]


def test_current_session_id_fallback_failing_raises_the_first_error(
        load, double, monkeypatch, fake_system):
    _own_session_query_fails(load)
    _as_if_on_windows(monkeypatch, fake_system, session=None)
    with pytest.raises(WTSError) as info:
        wtsapi.current_session_id()
    assert (info.value.winerror, info.value.function) == (
        1722, "WTSQuerySessionInformationW")
    assert "ProcessIdToSessionId" in [c[0] for c in fake_system.calls]


def test_current_session_id_needs_no_fallback_when_the_call_works(
        load, double, monkeypatch, fake_system):
    load()
    _as_if_on_windows(monkeypatch, fake_system, session=7)
    assert wtsapi.current_session_id() == 2
    assert fake_system.calls == []


def test_disconnect(load, double):
    load()
    with Server() as local:
        local.disconnect(3, wait=True)
        assert {s.id: s.state for s in local.sessions()}[3] \
            is ST.WTSDisconnected
        times = local.times(3)
    assert times.disconnect == times.current
    assert times.idle == 0


def test_disconnect_without_waiting_stamps_the_server_clock(load, double):
    clock = CLOCK + 77 * HOUR
    farm = standard_farm()
    farm.server("RDS1", clock=clock)
    load(farm)
    with Server("RDS1") as s:
        s.disconnect(2)
        t = s.times(2)
    assert double.state("RDS1", 2) == DISCONNECTED
    assert (t.state, t.disconnect_ticks, t.current_ticks) == (
        ST.WTSDisconnected, clock, clock)
    assert t.user == "carol"                  # still logged on
    [entry] = [e for e in double.log() if e.func == "WTSDisconnectSession"]
    assert (entry.server, entry.session, entry.ok, entry.extra) == (
        "RDS1", 2, True, "wait=0")


def test_disconnecting_a_disconnected_session_changes_nothing(load, double):
    # What real Windows answers here is unverified; the double succeeds
    # and keeps the first DisconnectTime.
    load()
    with Server("RDS1") as s:
        before = s.times(3)
        s.disconnect(3)
        s.disconnect(3, wait=True)
        after = s.times(3)
    assert before.state is ST.WTSDisconnected
    assert after == before
    assert after.disconnect_ticks == CLOCK - 5 * HOUR
    assert [e.ok for e in double.log()
            if e.func == "WTSDisconnectSession"] == [True, True]


@pytest.mark.parametrize("fullcontrol", [True, False])
def test_disconnect_refuses_as_logoff_does(load, double, fullcontrol):
    # Console, session 0, a listener, the own session, another user's:
    # the double answers a disconnect as it answers a logoff.
    outcomes = {}
    for action in ("logoff", "disconnect"):
        farm = standard_farm()
        farm.caller_fullcontrol = fullcontrol
        load(farm)
        with Server() as local:
            for sid in (0, 1, 2, 3, 65536, 99):
                try:
                    getattr(local, action)(sid)
                    outcomes[action, sid] = "ok"
                except WTSError as e:
                    outcomes[action, sid] = e.winerror
    for sid in (0, 1, 2, 3, 65536, 99):
        assert outcomes["disconnect", sid] == outcomes["logoff", sid], sid
    assert outcomes["disconnect", 65536] == 87
    assert outcomes["disconnect", 99] == 7022
    assert outcomes["disconnect", 2] == "ok"  # the own session
    expected = "ok" if fullcontrol else 5
    for sid in (0, 1, 3):
        assert outcomes["disconnect", sid] == expected, sid


def test_send_message_marshals_lengths(load, double):
    load()
    text = "Maintenance à 22h — 維護 😀, save your work"
    with Server() as local:
        assert local.send_message(3, "Admin 😀", text) == wtsapi.IDASYNC
        assert local.send_message(5, "t", "x", timeout=30,
                                  wait=True) == wtsapi.IDOK
    sent = [e for e in double.log() if e.func == "WTSSendMessageW"]
    assert [e.ok for e in sent] == [True, True]
    f = sent[0].fields()
    assert (f["title"], f["text"], f["wait"]) == ("Admin 😀", text, "0")
    assert sent[1].fields()["timeout"] == "30"


def test_send_message_response_timeout(load):
    farm = Farm(caller=1)
    farm.server(".").session(1, "Console", ACTIVE, "admin", "CORP")
    farm.server(".").session(3, "RDP-Tcp#1", ACTIVE, "u", "CORP",
                             response="timeout")
    load(farm)
    with Server() as local:
        assert local.send_message(3, "t", "x", timeout=5,
                                  wait=True) == wtsapi.IDTIMEOUT


# --- Times ------------------------------------------------------------------------

def test_times_use_the_server_clock(load):
    clock = CLOCK + 1000 * HOUR            # far from any host clock
    farm = Farm(caller=1)
    srv = farm.server("FAR", clock=clock)
    srv.session(3, "RDP-Tcp#1", ACTIVE, "alice", "CORP",
                logon=clock - 2 * HOUR, connect=clock - HOUR,
                input=clock - 25 * MINUTE)
    srv.session(4, "", DISCONNECTED, "bob", "CORP", logon=clock - 9 * HOUR,
                input=clock - 8 * HOUR, disconnect=clock - 3 * HOUR)
    srv.session(5, "Console", ACTIVE, "admin", "CORP")
    load(farm)
    with Server("FAR") as s:
        active, disc, bare = s.times(3), s.times(4), s.times(5)
    assert active.state is ST.WTSActive
    assert active.idle == 25 * 60
    assert (active.current - active.last_input).total_seconds() == 25 * 60
    assert (active.current - active.logon).total_seconds() == 2 * 3600
    assert active.disconnect is None
    assert active.current.tzinfo is not None
    assert disc.idle == 3 * 3600            # since the disconnect
    assert bare.idle is None and bare.logon is None
    expected = (clock - 116444736000000000) / SECOND  # FILETIME -> Unix
    assert active.current.timestamp() == pytest.approx(expected)


def test_idle_rules():
    idle = wtsapi.idle_seconds
    logon = CLOCK - 2 * HOUR
    assert idle(ST.WTSActive, CLOCK - MINUTE, 0, CLOCK) == 60
    assert idle(ST.WTSActive, CLOCK - MINUTE, 0, CLOCK, logon) == 60
    assert idle(ST.WTSActive, CLOCK, 0, CLOCK, logon) == 0
    assert idle(ST.WTSDisconnected, CLOCK - HOUR, CLOCK - MINUTE, CLOCK,
                logon) == 60                           # since the disconnect
    assert idle(4, 0, CLOCK - MINUTE, CLOCK, logon) == 60   # a plain int state
    # Unknown rather than wrong:
    assert idle(ST.WTSActive, 0, 0, CLOCK) is None             # no last input
    assert idle(ST.WTSDisconnected, CLOCK, 0, CLOCK) is None   # no disconnect
    assert idle(ST.WTSActive, CLOCK - MINUTE, 0, 0) is None    # no current
    assert idle(ST.WTSActive, CLOCK + SECOND, 0, CLOCK) is None  # clock skew
    assert idle(ST.WTSActive, logon - SECOND, 0, CLOCK, logon) is None
    assert idle(ST.WTSDisconnected, logon - SECOND, CLOCK - MINUTE, CLOCK,
                logon) is None               # the record contradicts itself
    assert idle(ST.WTSDisconnected, 0, logon - HOUR, CLOCK,
                logon) is None               # longer than the session's age
    assert idle(ST.WTSActive, CLOCK - MINUTE, 0, CLOCK,
                CLOCK + HOUR) is None        # a logon after "now"
    beyond = wtsapi._FILETIME_MAX + 1
    assert idle(ST.WTSActive, CLOCK, 0, beyond) is None
    assert idle(ST.WTSActive, -5, 0, CLOCK) is None


def test_listener_state_by_number(load):
    farm = Farm()                         # no caller: just these two sessions
    farm.server(".").session(65536, "RDP-Tcp", LISTEN)
    farm.server(".").session(70000, "Future", 42)
    load(farm)
    with Server() as local:
        states = [s.state for s in local.sessions()]
    assert states == [ST.WTSListen, 42]


def test_sessions_fall_back_where_ex_is_missing(load, double, monkeypatch):
    # Older systems do not export WTSEnumerateSessionsExW at all.
    load()
    monkeypatch.setattr(wtsapi._load(), "WTSEnumerateSessionsExW", None)
    with Server("RDS1") as s:
        got = s.sessions()
    assert [(x.id, x.user) for x in got] == [
        (0, ""), (2, "carol"), (3, "dave"), (65536, "")]
    assert double.calls("RDS1", "WTSEnumerateSessionsExW") == 0
    assert double.calls("RDS1", "WTSEnumerateSessionsW") == 1


@pytest.mark.skipif(sys.platform != "win32", reason="Windows loading rule")
def test_windows_loads_from_the_system_directory_only(tmp_path):
    # A planted wtsapi32.dll in the current directory must not be taken.
    (tmp_path / "wtsapi32.dll").write_bytes(b"MZ not a real DLL")
    env = dict(os.environ)
    env.pop("WTSAPI32_DLL", None)
    code = ("import sys; sys.path.insert(0, %r); import wtsapi; "
            "print(wtsapi._load().path)" % ROOT)
    r = run_child([sys.executable, "-c", code], cwd=str(tmp_path),
                       env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    path = r.stdout.strip().lower()
    assert path.endswith("\\system32\\wtsapi32.dll"), path
    assert not path.startswith(str(tmp_path).lower())


# --- Calls, sizes, snapshots -------------------------------------------------------

def test_the_session_id_is_written_once_per_call(load, double):
    # Server._call(name, session, *args) made every call site repeat the id;
    # now _session_call passes it, and names it in the error, once.
    assert not hasattr(Server, "_call") and not hasattr(Server, "_h")
    farm = standard_farm()
    farm.fail("RDS1", "WTSQuerySessionInformationW", 1726, session=2)
    load(farm)
    with Server("RDS1") as s:
        with pytest.raises(WTSError) as info:
            s.times(2)
        s.logoff(3)
    assert (info.value.function, info.value.session) == (
        "WTSQuerySessionInformationW", 2)
    assert [(e.func, e.session) for e in double.log()
            if e.func in ("WTSQuerySessionInformationW", "WTSLogoffSession")
            ] == [("WTSQuerySessionInformationW", 2), ("WTSLogoffSession", 3)]


def test_a_short_answer_is_refused_and_still_freed(load, double):
    farm = standard_farm()
    farm.querysize("RDS1", wtsapi.WTS_INFO_CLASS.WTSSessionInfo,
                   ctypes.sizeof(wtsapi.WTSINFOW) - 1)
    farm.querysize("RDS1", wtsapi.WTS_INFO_CLASS.WTSSessionId, 2)
    load(farm)
    with Server("RDS1") as s:
        for ask in (lambda: s.times(2), lambda: s.session_id(2)):
            with pytest.raises(WTSError) as info:
                ask()
            assert (info.value.winerror, info.value.session) == (87, 2)
    assert double.calls(None, "WTSFreeMemory") == 2   # ... and no leak


def test_a_string_is_read_only_within_the_size_returned(load, double):
    # The server says its answer is one WCHAR long: the rest of the buffer
    # (here the remaining "arol") is not the caller's to read.
    farm = standard_farm()
    farm.server("RDS1", noex=True)
    farm.querysize("RDS1", wtsapi.WTS_INFO_CLASS.WTSUserName,
                   ctypes.sizeof(ctypes.c_wchar), session=2)
    load(farm)
    with Server("RDS1") as s:
        users = {x.id: x.user for x in s.sessions()}
    assert users[2] == "c"
    assert users[3] == "dave"


def test_states_are_looked_up_not_converted():
    assert wtsapi._state(4) is ST.WTSDisconnected
    assert wtsapi._state(42) == 42 and type(wtsapi._state(42)) is int
    assert set(wtsapi._STATES.values()) == set(ST)


def test_session_times_carry_identity_and_raw_ticks(load):
    load()
    with Server() as local:
        t = local.times(3)
    assert (t.session_id, t.user, t.domain, t.account) == (
        3, "alice", "CORP", "CORP\\alice")
    assert t.state is ST.WTSActive
    assert t.logon_ticks == CLOCK - 3 * HOUR
    assert t.last_input_ticks == CLOCK - 30 * MINUTE
    assert (t.connect_ticks, t.disconnect_ticks) == (0, 0)
    assert t.current_ticks == CLOCK
    assert t.idle == 30 * 60


def test_session_times_are_immutable_values(load):
    load()
    with Server() as local:
        a, b, c = local.times(3), local.times(3), local.times(5)
    for attr in ("idle", "logon", "user", "logon_ticks", "anything"):
        with pytest.raises(AttributeError):
            setattr(a, attr, None)
    with pytest.raises(AttributeError):
        del a.user
    with pytest.raises(TypeError):
        tuple(a)                  # not the namedtuple it replaces
    assert a == b and hash(a) == hash(b) and a != c
    assert pickle.loads(pickle.dumps(a)) == a
    assert "alice" in repr(a) and "logon_ticks=" in repr(a)
    assert not hasattr(wtsapi, "_EPOCH")


def test_session_times_build_datetimes_only_when_read(double_path, tmp_path):
    farm_file = standard_farm().write(str(tmp_path / "farm.txt"))
    env = dict(os.environ, WTSAPI32_DLL=double_path, WTSDOUBLE_FARM=farm_file)
    env.pop("WTSDOUBLE_LOG", None)
    r = run_python(
        "import sys, wtsapi\n"
        "with wtsapi.Server() as s:\n"
        "    t = [s.times(i) for i in (1, 2, 3, 4)]\n"
        "print([x.idle for x in t], 'datetime' in sys.modules)\n"
        "print(t[2].logon.isoformat(), 'datetime' in sys.modules)\n", env)
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.splitlines()
    assert first == "[10.0, 2.0, 1800.0, 10800.0] False"
    assert second == "%s True" % wtsapi.filetime(CLOCK - 3 * HOUR).isoformat()
    assert second.startswith("2024-01-17T18:20:00+00:00")


def test_times_from_an_absurd_server_never_fail(load):
    # "date value out of range" must not fail a server: unrepresentable
    # FILETIMEs read as None, and idle is then unknown.
    huge = 2 ** 63 - 1
    farm = Farm(caller=1)
    odd = farm.server("ODD", clock=huge)
    odd.session(3, "RDP-Tcp#1", ACTIVE, "u", "CORP", logon=huge,
                connect=huge, input=huge)
    skew = farm.server("SKEW")            # last input after "now"
    skew.session(3, "RDP-Tcp#1", ACTIVE, "u", "CORP", logon=CLOCK - HOUR,
                 input=CLOCK + MINUTE)
    early = farm.server("EARLY")          # last input before the logon
    early.session(3, "RDP-Tcp#1", ACTIVE, "u", "CORP", logon=CLOCK - HOUR,
                  input=CLOCK - 2 * HOUR)
    old = farm.server("OLDER")            # disconnected before the logon
    old.session(4, "", DISCONNECTED, "u", "CORP", logon=CLOCK - HOUR,
                disconnect=CLOCK - 5 * HOUR)
    stopped = farm.server("NOCLOCK", clock=0)
    stopped.session(3, "RDP-Tcp#1", ACTIVE, "u", "CORP", logon=1,
                    input=CLOCK)
    nouser = farm.server("NOUSER")        # times, but nobody logged on
    nouser.session(3, "RDP-Tcp#1", ACTIVE, "", "", logon=CLOCK - HOUR,
                   input=CLOCK - MINUTE)
    load(farm)
    with Server("ODD") as s:
        t = s.times(3)
    assert t.logon_ticks == huge
    assert (t.logon, t.connect, t.last_input, t.current, t.idle) == (
        None, None, None, None, None)
    for name, sid in (("SKEW", 3), ("EARLY", 3), ("OLDER", 4),
                      ("NOCLOCK", 3), ("NOUSER", 3)):
        with Server(name) as s:
            assert s.times(sid).idle is None, name
    with Server("NOCLOCK") as s:
        t = s.times(3)
    assert t.current is None
    assert t.logon.year == 1601              # 100 ns after the epoch


def test_filetime_edges():
    assert wtsapi.filetime(0) is None and wtsapi.filetime(-1) is None
    last = wtsapi.filetime(wtsapi._FILETIME_MAX)
    assert (last.year, last.month, last.day, last.microsecond) == (
        9999, 12, 31, 999999)
    assert wtsapi.filetime(wtsapi._FILETIME_MAX + 1) is None
    assert wtsapi.filetime(116444736000000000).timestamp() == 0


# --- Client name and address, lock state ------------------------------------------

def _client_farm():
    farm = standard_farm()
    rds1 = farm.server("RDS1")
    rds1.session(5, "RDP-Tcp#5", ACTIVE, "eve", "CORP", client="LAPTOP-ÉVE😀",
                 address="10.20.30.40", locked=1, logon=CLOCK - HOUR,
                 input=CLOCK - MINUTE)
    rds1.session(6, "RDP-Tcp#6", ACTIVE, "fay", "CORP", client="PC6",
                 address="2001:db8::5", locked=0)
    rds1.session(7, "RDP-Tcp#7", ACTIVE, "gus", "CORP", client="PC7",
                 address="::1",
                 locked="unknown")
    rds1.session(8, "RDP-Tcp#8", ACTIVE, "hal", "CORP",
                 address="fe80:0:0:0:1:2:3:4")
    return farm


def test_client_name_and_address(load, double):
    load(_client_farm())
    with Server("RDS1") as s:
        got = {sid: s.client(sid) for sid in (2, 5, 6, 7, 8)}
    assert got[5] == ("LAPTOP-ÉVE😀", "10.20.30.40")
    assert isinstance(got[5], wtsapi.Client)
    assert (got[5].name, got[5].address) == ("LAPTOP-ÉVE😀", "10.20.30.40")
    assert got[6] == ("PC6", "2001:db8::5")
    assert got[7] == ("PC7", "::1")
    assert got[8] == ("", "fe80::1:2:3:4")
    assert got[2] == ("", "")                 # no client: AF_UNSPEC
    with pytest.raises(AttributeError):
        got[5].address = "1.2.3.4"
    classes = [e.extra for e in double.log()
               if e.func == "WTSQuerySessionInformationW"]
    assert classes == ["class=10", "class=14"] * 5
    assert double.calls(None, "WTSFreeMemory") == 10


def test_client_address_layout():
    # AF_INET at Address[2..5] (sdk-api); AF_INET6 at Address[2..17]
    # (unverified, see _client_address); anything else is no address.
    a = wtsapi.WTS_CLIENT_ADDRESS()
    a.AddressFamily = wtsapi.AF_INET
    a.Address[0:6] = [0x0D, 0x3D, 192, 168, 0, 1]     # a port, then the IP
    assert wtsapi._client_address(a) == "192.168.0.1"
    a.AddressFamily = wtsapi.AF_INET6
    a.Address[2:18] = [0xFF, 0xFF] + [0] * 13 + [1]
    assert wtsapi._client_address(a) == "ffff::1"
    import ipaddress
    for text in ("::", "::1", "1::", "2001:db8::5", "fe80::1:2:3:4",
                 "1:0:2:0:0:3:0:0", "1:0:0:2:0:0:3:4", "0:1:2:3:4:5:6:7",
                 "1:2:3:4:5:6:7:8", "2001:db8:0:0:1:0:0:1"):
        packed = ipaddress.IPv6Address(text).packed
        a.Address[2:18] = list(packed)
        assert wtsapi._client_address(a) == \
            ipaddress.IPv6Address(packed).compressed, text
    for family in (wtsapi.AF_UNSPEC, 6, 17):          # AF_IPX, AF_NETBIOS
        a.AddressFamily = family
        assert wtsapi._client_address(a) == ""
    assert (wtsapi.AF_UNSPEC, wtsapi.AF_INET, wtsapi.AF_INET6) == (0, 2, 23)


def test_client_refuses_the_current_session_remotely(load, double):
    load()
    with Server("RDS1") as s:
        for ask in (lambda: s.client(wtsapi.WTS_CURRENT_SESSION),
                    lambda: s.times_ex(wtsapi.WTS_CURRENT_SESSION)):
            with pytest.raises(ValueError):
                ask()
    assert double.calls() == 2                # open and close only


def test_times_ex_reads_the_lock_state(load, double):
    load(_client_farm())
    with Server("RDS1") as s:
        ex = {sid: s.times_ex(sid) for sid in (2, 5, 6, 7)}
        plain = s.times(5)
    assert [ex[sid].locked for sid in (2, 5, 6, 7)] == [None, True, False,
                                                         None]
    assert plain.locked is None
    t = ex[5]
    assert (t.session_id, t.state, t.user, t.domain, t.account) == (
        5, ST.WTSActive, "eve", "CORP", "CORP\\eve")
    assert (t.logon_ticks, t.last_input_ticks, t.current_ticks) == (
        CLOCK - HOUR, CLOCK - MINUTE, CLOCK)
    assert t.idle == 60
    # The same record but for the lock state: same times, same identity.
    assert t != plain
    assert t == wtsapi.SessionTimes(*(plain._fields[:9] + (True,)))
    assert "locked=True" in repr(t)
    assert pickle.loads(pickle.dumps(t)) == t
    classes = [e.extra for e in double.log()
               if e.func == "WTSQuerySessionInformationW"]
    assert classes == ["class=25"] * 4 + ["class=24"]


def test_times_ex_of_the_own_session_and_long_names(load, double):
    farm = Farm(caller=3)
    farm.server(".").session(3, "n" * 40, ACTIVE, "u" * 25, "d" * 25,
                             locked=1)
    load(farm)
    with Server() as local:
        t = local.times_ex(wtsapi.WTS_CURRENT_SESSION)
        plain = local.times(wtsapi.WTS_CURRENT_SESSION)
    assert (t.session_id, t.locked) == (3, True)
    # WTSINFOEX_LEVEL1_W holds one more WCHAR of the domain than WTSINFOW.
    assert (t.user, t.domain) == ("u" * 20, "d" * 17)
    assert (plain.user, plain.domain) == ("u" * 20, "d" * 16)


def test_times_ex_refuses_a_short_answer_and_frees_it(load, double):
    farm = _client_farm()
    farm.querysize("RDS1", wtsapi.WTS_INFO_CLASS.WTSSessionInfoEx,
                   ctypes.sizeof(wtsapi.WTSINFOEXW) - 1)
    farm.querysize("RDS1", wtsapi.WTS_INFO_CLASS.WTSClientAddress, 5)
    load(farm)
    with Server("RDS1") as s:
        for ask in (lambda: s.times_ex(5), lambda: s.client(5)):
            with pytest.raises(WTSError) as info:
                ask()
            assert (info.value.winerror, info.value.session) == (87, 5)
    assert double.calls(None, "WTSFreeMemory") == 3


def test_times_many_is_times_for_each_with_errors_in_place(load, double):
    """One registration, the same calls: each answer as times() or
    times_ex() gives it, a failed or short one as its WTSError in its
    place, and every buffer freed."""
    farm = _client_farm()
    farm.querysize("RDS1", wtsapi.WTS_INFO_CLASS.WTSSessionInfoEx,
                   ctypes.sizeof(wtsapi.WTSINFOEXW) - 1, session=6)
    load(farm)
    with Server("RDS1") as s:
        one = [s.times(sid) for sid in (2, 5, 7)]
        many = s.times_many([2, 5, 99, 7])
        ex = s.times_many([5, 6, 7], ex=True)
        assert s.times_many([]) == []
        with pytest.raises(ValueError):
            s.times_many([5, 2 ** 32])          # checked before any call
    assert many[:2] + many[3:] == one
    assert (many[2].winerror, many[2].session, many[2].function) == (
        7022, 99, "WTSQuerySessionInformationW")
    assert (ex[0].locked, ex[2].locked) == (True, None)
    assert isinstance(ex[1], WTSError) and (ex[1].winerror,
                                            ex[1].session) == (87, 6)
    queries = [e for e in double.log()
               if e.func == "WTSQuerySessionInformationW"]
    assert len(queries) == 3 + 4 + 3
    ok = sum(1 for e in queries if e.ok)
    assert double.calls(None, "WTSFreeMemory") == ok


# A review finding: the ids were read twice, and an iterator's second pass
# is empty: no query, and [] without a word.
def test_times_many_takes_any_iterable(load, double):
    load(_client_farm())
    with Server("RDS1") as s:
        assert s.times_many(i for i in (2, 5)) == [s.times(2), s.times(5)]


def test_times_ex_reads_level_1_only():
    x = wtsapi.WTSINFOEXW()
    x.Level = 1
    x.Data.WTSInfoExLevel1.SessionId = 9
    x.Data.WTSInfoExLevel1.UserName = "u"
    for flags, locked in ((0, True), (1, False), (-1, None), (7, None)):
        x.Data.WTSInfoExLevel1.SessionFlags = flags
        t = wtsapi._times_from_info_ex(x)
        assert (t.session_id, t.user, t.locked) == (9, "u", locked)
    x.Level = 2
    assert wtsapi._times_from_info_ex(x) is None
    assert (wtsapi.WTS_SESSIONSTATE_LOCK, wtsapi.WTS_SESSIONSTATE_UNLOCK,
            wtsapi.WTS_SESSIONSTATE_UNKNOWN) == (0, 1, 0xFFFFFFFF)


def test_session_times_stay_one_slot():
    assert wtsapi.SessionTimes.__slots__ == ("_fields",)
    t = wtsapi.SessionTimes(1, ST.WTSActive, "u", "d")
    assert t.locked is None and len(t._fields) == 10
    with pytest.raises(AttributeError):
        t.locked = True


@pytest.mark.parametrize("bad", ["10.0.0", "10.0.0.256", "1:2:3:4:5:6:7",
                                 "1::2::3", ":1", "1:", "12345::1",
                                 "1:2:3:4:5:6:7:8:9", "::1.2.3.4", "x"])
def test_the_double_rejects_a_bad_address(double, tmp_path, bad):
    farm = Farm()
    farm.server(".").session(1, "c", ACTIVE, address=bad)
    with pytest.raises(ValueError, match="rejected line"):
        double.load(farm, tmp_path / "farm.txt")


# --- The caller's own session -------------------------------------------------------

def test_times_of_the_current_session_locally(load, double):
    load()
    with Server() as local:
        t = local.times(wtsapi.WTS_CURRENT_SESSION)
    assert (t.session_id, t.user) == (2, "operator")
    [entry] = [e for e in double.log()
               if e.func == "WTSQuerySessionInformationW"]
    assert entry.session == wtsapi.WTS_CURRENT_SESSION


def test_the_current_session_is_refused_on_a_remote_handle(load, double):
    # Windows' answer there is inconsistent (sdk-api), so nothing is asked.
    load()
    with Server("RDS1") as s:
        for ask in (lambda: s.times(wtsapi.WTS_CURRENT_SESSION),
                    lambda: s.session_id(),
                    lambda: s.logoff(wtsapi.WTS_CURRENT_SESSION),
                    lambda: s.disconnect(wtsapi.WTS_CURRENT_SESSION),
                    lambda: s.send_message(wtsapi.WTS_CURRENT_SESSION, "t",
                                           "x")):
            with pytest.raises(ValueError) as info:
                ask()
            assert "local server only" in str(info.value)
    assert double.rpcs("RDS1") == 0


def test_own_session_is_one_call(load, double):
    load()
    own = wtsapi.own_session()
    assert isinstance(own, wtsapi.SessionTimes)
    assert (own.session_id, own.user, own.domain) == (2, "operator", "CORP")
    assert own.logon_ticks == CLOCK - HOUR
    assert double.rpcs() == 1
    [entry] = [e for e in double.log() if e.func not in Double.LOCAL_ONLY]
    assert (entry.func, entry.server, entry.session, entry.extra) == (
        "WTSQuerySessionInformationW", ".", wtsapi.WTS_CURRENT_SESSION,
        "class=24")
    assert wtsapi.current_session_id() == 2


# --- What the field shows, through the double ----------------------------------------

def test_open_may_return_null_for_a_down_server(load, double):
    farm = standard_farm()
    farm.server("GONE", unreachable=OPEN_NULL)
    load(farm)
    with pytest.raises(WTSError) as info:
        Server("GONE")
    e = info.value
    assert (e.winerror, e.function, e.server, e.session) == (
        1722, "WTSOpenServerW", "GONE", None)
    assert double.calls("GONE", "WTSCloseServer") == 0   # nothing to close
    # The other mode stays: a handle, then the first call fails.
    with Server("DOWN") as s, pytest.raises(WTSError) as info:
        s.sessions()
    assert (info.value.winerror, info.value.function) == (
        1722, "WTSEnumerateSessionsExW")


def test_host_and_farm_names_are_null(load, double):
    load()
    api = wtsapi._load()
    level, count = wtsapi.DWORD(1), wtsapi.DWORD(0)
    info = ctypes.POINTER(wtsapi.WTS_SESSION_INFO_1W)()
    with Server("RDS1") as s:
        try:
            assert api.WTSEnumerateSessionsExW(s._enter(),
                                               ctypes.byref(level), 0,
                                               ctypes.byref(info),
                                               ctypes.byref(count))
        finally:
            s._leave()
    try:
        rows = info[:count.value]
        assert rows and all(r.pHostName is None and r.pFarmName is None
                            for r in rows)
        assert [r.pUserName for r in rows] == ["", "carol", "dave", ""]
    finally:
        api.WTSFreeMemoryExW(wtsapi.WTS_TYPE_CLASS.WTSTypeSessionInfoLevel1,
                             info, count.value)


def test_a_message_to_a_disconnected_session_fails(load, double):
    load()
    with Server() as local, pytest.raises(WTSError) as info:
        local.send_message(4, "Admin", "Please save your work")
    e = info.value
    assert (e.winerror, e.function, e.session) == (
        DISCMSG_ERROR, "WTSSendMessageW", 4)
    assert e.winerror == wtsapi.ERROR_CTX_CLOSE_PENDING


def test_a_message_to_a_disconnected_session_may_succeed_silently(load):
    farm = standard_farm()
    farm.server("RDS1", discmsg="ok")
    farm.server("RDS2").session(5, "", DISCONNECTED, "fay", "CORP",
                                discmsg="ok")
    farm.server("RDS2").session(6, "", DISCONNECTED, "gus", "CORP",
                                discmsg=7050)
    load(farm)
    with Server("RDS1") as s:
        assert s.send_message(3, "t", "x") == wtsapi.IDASYNC
        assert s.send_message(3, "t", "x", timeout=5,
                              wait=True) == wtsapi.IDTIMEOUT
        assert s.send_message(2, "t", "x", wait=True) == wtsapi.IDOK
    with Server("RDS2") as s:
        assert s.send_message(5, "t", "x") == wtsapi.IDASYNC
        with pytest.raises(WTSError) as info:
            s.send_message(6, "t", "x")
    assert info.value.winerror == 7050


def _poll(condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_logoff_without_waiting_returns_at_once_the_session_goes_later(
        load, double):
    farm = standard_farm()
    farm.server("RDS1").session(7, "RDP-Tcp#5", ACTIVE, "hal", "CORP",
                                logon=CLOCK - HOUR, logoff_ms=400)
    load(farm)
    with Server("RDS1") as s:
        s.logoff(7)
        s.logoff(7)                       # still there: fine, same deadline
        # Both returned at once (bWait=FALSE, nothing left in flight) with
        # the session still there: it goes only when its 400 ms are up.
        assert double.in_flight() == 0
        assert [e.extra for e in double.log()
                if e.func == "WTSLogoffSession"] == ["wait=0", "wait=0"]
        assert 7 in [x.id for x in s.sessions()]     # still listed ...
        assert s.times(7).user == "hal"              # ... and queried
        assert double.exists("RDS1", 7)
        assert _poll(lambda: not double.exists("RDS1", 7))
        assert 7 not in [x.id for x in s.sessions()]
        with pytest.raises(WTSError) as info:
            s.times(7)
    assert info.value.winerror == 7022


def test_logoff_waiting_returns_after_logoff_ms_with_the_session_gone(
        load, double):
    farm = standard_farm()
    farm.server("RDS1").session(7, "RDP-Tcp#5", ACTIVE, "hal", "CORP",
                                logoff_ms=300)
    load(farm)
    with Server("RDS1") as s:
        s.logoff(7, wait=True)
        # It returned only once the session had gone (its 300 ms up).
        assert [e.extra for e in double.log()
                if e.func == "WTSLogoffSession"] == ["wait=1"]
        assert not double.exists("RDS1", 7)
        assert 7 not in [x.id for x in s.sessions()]


def test_a_waiting_logoff_may_hang_after_the_session_is_gone(load, double):
    farm = standard_farm()
    farm.server("RDS1").session(7, "RDP-Tcp#5", ACTIVE, "hal", "CORP",
                                logoff_ms=100, logoff_hang=1)
    load(farm)
    done = threading.Event()
    errors = []

    def log_off():
        try:
            with Server("RDS1") as s:
                s.logoff(7, wait=True)
        except Exception as e:            # reported below
            errors.append(e)
        done.set()
    worker = threading.Thread(target=log_off, daemon=True)
    worker.start()
    assert _poll(lambda: not double.exists("RDS1", 7))   # logged off ...
    assert double.in_flight() == 1                       # ... yet it blocks
    assert not done.is_set()
    double.reset()                        # the bounded hang ends with a reset
    assert done.wait(5)
    worker.join(5)
    assert not errors


def test_max_in_flight_per_server_and_function(load, double):
    farm = standard_farm()
    farm.latency("RDS1", "WTSQuerySessionInformationW", 400)
    farm.latency("RDS2", "WTSQuerySessionInformationW", 400)
    load(farm)
    barrier = threading.Barrier(4)

    def ask(server, sid):
        with Server(server) as s:
            barrier.wait()
            s.times(sid)
    threads = [threading.Thread(target=ask, args=a) for a in
               (("RDS1", 2), ("RDS1", 3), ("RDS1", 0), ("RDS2", 4))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    with Server("RDS1") as s:
        s.times(2)                        # alone: does not raise the maximum
    q = "WTSQuerySessionInformationW"
    assert double.max_in_flight_for("RDS1", q) == 3
    assert double.max_in_flight_for("rds1", q) == 3       # names: any case
    assert double.max_in_flight_for("RDS2", q) == 1
    assert double.max_in_flight_for("RDS1") == 3
    assert double.max_in_flight_for(None, q) == 4
    assert double.max_in_flight_for(None, "WTSLogoffSession") == 0
    assert double.max_in_flight_for("RDS1", "NoSuchFunction") == 0
    assert double.max_in_flight_for() == double.max_in_flight() >= 4
    double.reset()
    assert double.max_in_flight_for("RDS1", q) == 0


# --- Error texts and codes -------------------------------------------------------------

def test_named_constants_for_every_code_the_cli_uses():
    for name, code in (("ERROR_ACCESS_DENIED", 5),
                       ("ERROR_INVALID_PARAMETER", 87),
                       ("ERROR_CALL_NOT_IMPLEMENTED", 120),
                       ("ERROR_NO_MORE_ITEMS", 259),
                       ("ERROR_TIMEOUT", 1460),
                       ("RPC_S_SERVER_UNAVAILABLE", 1722),
                       ("ERROR_CTX_CLOSE_PENDING", 7007),
                       ("ERROR_CTX_WINSTATION_NOT_FOUND", 7022),
                       ("ERROR_CTX_WINSTATION_ACCESS_DENIED", 7045),
                       ("ERROR_RESOURCE_LANG_NOT_FOUND", 1815),
                       ("ERROR_MUI_FILE_NOT_FOUND", 15100),
                       ("ERROR_MUI_FILE_NOT_LOADED", 15105)):
        assert getattr(wtsapi, name) == code, name


@pytest.mark.skipif(sys.platform == "win32", reason="table used off Windows")
def test_builtin_table_speaks_english_whatever_the_language():
    assert wtsapi.error_text(7045, 0x0411) == \
        "The requested session access is denied."
    assert wtsapi.error_text(5, wtsapi.LANGID_EN_US) == "Access is denied."
    for code in (7007, 7038, 7044, 7051, 7054, 15100, 15105, 1815):
        assert not wtsapi.error_text(code).startswith("Unknown"), code
    assert wtsapi.error_text(7051) == \
        "The requested session is not configured to allow remote control."


def test_wtserror_names_the_current_session():
    e = WTSError(5, "WTSLogoffSession", None, wtsapi.WTS_CURRENT_SESSION)
    assert "the current session" in str(e)


class FakeSystem:
    """Stand-ins for kernel32/secur32/advapi32 on any OS, called through
    ctypes with wtsapi's own prototypes: the caller's side marshals exactly
    as against the real DLLs, the stand-in reads and writes raw memory."""

    def __init__(self, monkeypatch):
        self.error = 0
        self.calls = []
        self.buffers = {}             # FormatMessage's allocations, by address
        self.freed = 0
        self._keep = []
        monkeypatch.setattr(wtsapi, "_WINDOWS", True)
        monkeypatch.setattr(wtsapi, "_system_apis", {})

    def get_error(self):
        return self.error

    def set_error(self, value):
        self.error = value

    def install(self, dll_name, **functions):
        dll = types.SimpleNamespace()
        for name, py in functions.items():
            owner, restype, argtypes, _doc = wtsapi._SYSTEM_PROTOTYPES[name]
            assert owner == dll_name, name
            raw = [ctypes.c_void_p if self._pointer(t) else t
                   for t in argtypes]
            fn = ctypes.CFUNCTYPE(restype, *raw)(self._record(name, py))
            self._keep.append(fn)
            setattr(dll, name, fn)
        wtsapi._system_apis[dll_name] = wtsapi._SystemApi(
            dll, dll_name, self.get_error, self.set_error)

    @staticmethod
    def _pointer(ctype):
        return issubclass(ctype, ctypes._Pointer) or ctype in (
            ctypes.c_void_p, ctypes.c_wchar_p)

    def _record(self, name, py):
        def call(*args):
            self.calls.append((name,) + args)
            return py(*args)
        return call

    def asked(self, name, index):
        """Argument ``index`` of every call of ``name`` so far."""
        return [c[index + 1] for c in self.calls if c[0] == name]

    def fail(self, error, result=0):
        self.error = error
        return result

    @staticmethod
    def write(address, text):
        data = (ctypes.c_wchar * len(text))(*text)
        ctypes.memmove(address, data, ctypes.sizeof(data))

    def format_message(self, texts):
        """FormatMessageW answering texts[(code, langid)]: a str, or an
        int error code."""
        def fn(flags, source, code, langid, out, size, args):
            assert flags == (wtsapi.FORMAT_MESSAGE_ALLOCATE_BUFFER |
                             wtsapi.FORMAT_MESSAGE_FROM_SYSTEM |
                             wtsapi.FORMAT_MESSAGE_IGNORE_INSERTS)
            answer = texts.get((code, langid), wtsapi.ERROR_MR_MID_NOT_FOUND)
            if isinstance(answer, int):
                return self.fail(answer)
            buf = ctypes.create_unicode_buffer(answer + "\r\n")
            self.buffers[ctypes.addressof(buf)] = buf
            ctypes.c_void_p.from_address(out).value = ctypes.addressof(buf)
            return len(answer) + 2

        def local_free(handle):
            assert self.buffers.pop(handle, None) is not None, "bad LocalFree"
            self.freed += 1
            return None
        self.install("kernel32", FormatMessageW=fn, LocalFree=local_free)


@pytest.fixture
def fake_system(monkeypatch):
    return FakeSystem(monkeypatch)


def test_error_text_asks_windows_in_the_users_language(fake_system):
    fake_system.format_message({(5, 0x0400): "アクセスが拒否されました。"})
    assert wtsapi.error_text(5) == "アクセスが拒否されました。"
    assert fake_system.asked("FormatMessageW", 2) == [5]
    assert fake_system.asked("FormatMessageW", 3) == [wtsapi.LANG_USER_DEFAULT]
    assert not fake_system.buffers and fake_system.freed == 1
    assert WTSError(5, "WTSLogoffSession").strerror == \
        "アクセスが拒否されました。"


@pytest.mark.parametrize("missing", [15100, 15105, 1815, 317])
def test_error_text_falls_back_to_language_0(fake_system, missing):
    fake_system.format_message({(5, 0x0411): missing,
                                (5, 0): "Access is denied."})
    assert wtsapi.error_text(5, 0x0411) == "Access is denied."
    assert fake_system.asked("FormatMessageW", 3) == [0x0411, 0]
    assert not fake_system.buffers and fake_system.freed == 1


def test_error_text_in_an_explicit_language(fake_system):
    fake_system.format_message({(5, 0x0804): "拒绝访问。",
                                (87, 0x0804): wtsapi.ERROR_ACCESS_DENIED})
    assert wtsapi.error_text(5, 0x0804) == "拒绝访问。"
    # Another failure is not "language missing": the English table then.
    assert wtsapi.error_text(87, 0x0804) == "The parameter is incorrect."
    assert fake_system.asked("FormatMessageW", 3) == [0x0804, 0x0804]
    assert not fake_system.buffers


def test_error_text_in_english_is_never_another_language(fake_system):
    fake_system.format_message({(7022, 0x0409): 15100,
                                (7022, 0): "指定されたセッションが見つかりません。",
                                (5, 0x0409): "Access is denied."})
    assert wtsapi.error_text(7022, wtsapi.LANGID_EN_US) == \
        "The specified session cannot be found."
    assert wtsapi.error_text(5, wtsapi.LANGID_EN_US) == "Access is denied."
    assert wtsapi.error_text(123456, wtsapi.LANGID_EN_US) == \
        "Unknown error 123456."
    assert 0 not in fake_system.asked("FormatMessageW", 3)


def test_ui_languages_reads_the_multi_string(fake_system):
    data = "ja-JP\0en-US\0\0"

    def preferred(flags, count, buf, chars):
        assert flags == wtsapi.MUI_LANGUAGE_NAME
        n = ctypes.c_uint32.from_address(chars)
        ctypes.c_uint32.from_address(count).value = 2
        if buf is None:
            n.value = len(data)
            return 1
        if n.value < len(data):
            return fake_system.fail(wtsapi.ERROR_INSUFFICIENT_BUFFER)
        fake_system.write(buf, data)
        n.value = len(data)
        return 1
    fake_system.install("kernel32", GetUserPreferredUILanguages=preferred,
                        GetUserDefaultUILanguage=lambda: 0x0409)
    assert wtsapi.ui_languages() == ["ja-JP", "en-US"]
    buffers = fake_system.asked("GetUserPreferredUILanguages", 2)
    assert [b is None for b in buffers] == [True, False]   # size, then data


@pytest.mark.parametrize("langid, expected", [
    (0x0804, ["zh-CN"]), (0x1004, ["zh-SG"]), (0x0404, ["zh-TW"]),
    (0x0C04, ["zh-HK"]), (0x1404, ["zh-MO"]), (0x0411, ["ja-JP"]),
    (0x0409, ["en-US"]), (0x0407, [])])
def test_ui_languages_falls_back_to_the_default_langid(fake_system, langid,
                                                       expected):
    fake_system.install(
        "kernel32",
        GetUserPreferredUILanguages=lambda *a: fake_system.fail(
            wtsapi.ERROR_INVALID_PARAMETER),
        GetUserDefaultUILanguage=lambda: langid)
    assert wtsapi.ui_languages() == expected


@pytest.mark.skipif(sys.platform == "win32", reason="off-Windows behaviour")
def test_ui_languages_off_windows_is_empty():
    assert wtsapi.ui_languages() == []


def _name_function(fake_system, name_format, name):
    """A fake GetUserNameExW or GetComputerNameExW: ERROR_MORE_DATA with
    the size it takes for a buffer too small, else ``name``."""
    def get(fmt, buf, size):
        assert fmt == name_format
        n = ctypes.c_uint32.from_address(size)
        if n.value < len(name) + 1:
            n.value = len(name) + 1
            return fake_system.fail(wtsapi.ERROR_MORE_DATA)
        fake_system.write(buf, name + "\0")
        n.value = len(name)
        return 1
    return get


def test_process_account_is_the_sam_compatible_name(fake_system):
    name = "CORP\\" + "a" * 300         # longer than the first buffer
    fake_system.install("secur32", GetUserNameExW=_name_function(
        fake_system, wtsapi.NameSamCompatible, name))
    assert wtsapi.process_account() == name
    assert len(fake_system.calls) == 2


def test_process_account_falls_back_to_the_user_name(fake_system):
    def user_name(buf, size):
        fake_system.write(buf, "alice\0")
        ctypes.c_uint32.from_address(size).value = 6
        return 1
    fake_system.install("secur32", GetUserNameExW=lambda *a: fake_system.fail(
        1355))                              # ERROR_NO_SUCH_DOMAIN
    fake_system.install("advapi32", GetUserNameW=user_name)
    assert wtsapi.process_account() == "alice"
    fake_system.install("advapi32", GetUserNameW=lambda *a: fake_system.fail(
        wtsapi.ERROR_ACCESS_DENIED))
    assert wtsapi.process_account() == ""


@pytest.mark.skipif(sys.platform == "win32", reason="off-Windows behaviour")
def test_process_account_never_reads_the_environment(monkeypatch):
    import pwd
    for var in ("USER", "LOGNAME", "USERNAME", "USERDOMAIN"):
        monkeypatch.setenv(var, "mallory")
    assert wtsapi.process_account() == pwd.getpwuid(os.getuid()).pw_name


@pytest.mark.skipif(sys.platform != "win32", reason="real Windows calls")
def test_windows_process_account_ui_languages_and_texts():
    env = dict(os.environ, USERNAME="mallory", USERDOMAIN="EVIL")
    r = run_python("import wtsapi; print(wtsapi.process_account())", env)
    assert r.returncode == 0, r.stderr
    account = r.stdout.strip()
    assert account and account != "EVIL\\mallory"
    languages = wtsapi.ui_languages()
    assert languages and all(isinstance(x, str) and x for x in languages)
    assert wtsapi.error_text(5, wtsapi.LANGID_EN_US)
    assert wtsapi.error_text(5, 0x0411)       # or its fallback, never empty


def test_host_name_grows_its_buffer_once(fake_system):
    name = "h" * 100                    # longer than the first buffer
    fake_system.install("kernel32", GetComputerNameExW=_name_function(
        fake_system, wtsapi.ComputerNamePhysicalDnsHostname, name))
    assert wtsapi.host_name() == name
    assert len(fake_system.calls) == 2
    fake_system.install("kernel32", GetComputerNameExW=lambda *a:
                        fake_system.fail(wtsapi.ERROR_ACCESS_DENIED))
    assert wtsapi.host_name() == ""


def test_host_name_is_what_socket_says():
    """On Windows (the Windows leg) GetComputerNameExW's answer is
    socket.gethostname()'s; elsewhere both are uname's node name."""
    import socket
    assert wtsapi.host_name() == socket.gethostname()
