"""wtsapi.py against the native test double: marshalling, errors, memory."""

import os
import pickle
import subprocess
import sys

import pytest

import wtsapi
from farm import (ACTIVE, CLOCK, DISCONNECTED, HOUR, LISTEN, MINUTE, SECOND,
                  Farm, run_child, standard_farm)
from wtsapi import WTS_CONNECTSTATE_CLASS as ST
from wtsapi import Server, WTSError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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


def test_no_visible_sessions_is_empty_not_an_error(load):
    farm = Farm(caller=1)
    farm.server("EMPTY")
    farm.server("EMPTYOLD", noex=True)
    load(farm)
    for name in ("EMPTY", "EMPTYOLD"):
        with Server(name) as s:
            assert s.sessions() == []


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
    assert wtsapi.current_session_id.__doc__


def test_current_session_id(load):
    load()
    assert wtsapi.current_session_id() == 2


def test_disconnect(load, double):
    load()
    with Server() as local:
        local.disconnect(3, wait=True)
        assert {s.id: s.state for s in local.sessions()}[3] \
            is ST.WTSDisconnected
        times = local.times(3)
    assert times.disconnect == times.current
    assert times.idle == 0


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


def test_idle_is_never_negative():
    assert wtsapi.idle_seconds(ST.WTSActive, CLOCK + SECOND, 0, CLOCK) == 0
    assert wtsapi.idle_seconds(ST.WTSDisconnected, CLOCK, 0, CLOCK) is None


def test_listener_state_by_number(load):
    farm = Farm(caller=1)
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
