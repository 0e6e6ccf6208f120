"""Against the real wtsapi32.dll of a real Windows machine: read-only.

These run only on Windows with no WTSAPI32_DLL override (so never under the
test double) and never log anyone off, disconnect or message anyone.
"""

import os
import sys

import pytest

import wtsapi

pytestmark = pytest.mark.skipif(
    sys.platform != "win32" or bool(os.environ.get("WTSAPI32_DLL"))
    or bool(os.environ.get("WTSDOUBLE_PREBUILT")),
    reason="needs real Windows with its own wtsapi32.dll")


@pytest.fixture(autouse=True)
def double():
    """Overrides the test double's leak check: there is no double here."""
    yield None


def test_local_sessions_include_our_own():
    with wtsapi.Server() as local:
        sessions = local.sessions()
        own = local.session_id()
    assert own in {s.id for s in sessions}
    assert all(isinstance(s.state, (wtsapi.WTS_CONNECTSTATE_CLASS, int))
               for s in sessions)


def test_own_session_times():
    with wtsapi.Server() as local:
        times = local.times(local.session_id())
    assert times.current is not None
    assert times.logon is None or times.logon <= times.current


def test_unreachable_server_fails_cleanly():
    # Either the open itself fails (NULL, 1722) or the first call does.
    with pytest.raises(wtsapi.WTSError) as info:
        with wtsapi.Server("no-such-host.invalid") as remote:
            remote.sessions()
    assert info.value.winerror != 0
    assert info.value.strerror


def test_own_session_in_one_call():
    own = wtsapi.own_session()
    assert own.session_id == wtsapi.current_session_id()
    assert own.user and own.logon_ticks > 0


def test_process_account_and_languages():
    account = wtsapi.process_account()
    assert "\\" in account and account.split("\\")[1]
    assert wtsapi.ui_languages()
    assert wtsapi.error_text(5, wtsapi.LANGID_EN_US).startswith("Access")


def test_whatif_never_selects_our_own_session(capsys):
    import json
    import logoff
    logoff.main(["/whatif", "/json", "/user:*"])
    own = wtsapi.current_session_id()
    doc = json.loads(capsys.readouterr().out)
    assert own not in {s["id"] for s in doc["sessions"]}
    assert all(s["result"] == "would-log-off" for s in doc["sessions"])


def test_query_lists_local_sessions(capsys):
    import logoff
    assert logoff.main(["/query"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["SERVER", "ID"]
