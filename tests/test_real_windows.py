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
    with wtsapi.Server("no-such-host.invalid") as remote:
        with pytest.raises(wtsapi.WTSError) as info:
            remote.sessions()
    assert info.value.winerror != 0
    assert info.value.strerror


def test_query_lists_local_sessions(capsys):
    import logoff
    assert logoff.main(["/query"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["SERVER", "ID"]
