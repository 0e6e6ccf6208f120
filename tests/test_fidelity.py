"""As real Windows answers (issue "As real Windows answers"), logoff's side:
what a per-session "not found" means, a run whose own session cannot be
read, Windows' case table, and the screen.  The bindings' side is in
test_wtsapi.py.  Facts: ../shared/reference/windows-field-facts.md.

Points marked "old:" differ from the previous release (9a272dd); each such
test was run against that logoff.py (with the current wtsapi.py) and fails
there for the reason given."""


import pytest

import logoff
from farm import (ACTIVE, CLOCK, DISCONNECTED, HOUR, MINUTE, Farm,
                  standard_farm)
from helpers import OWN, WINDOWS, doc, logoffs, messages

PY = "py" if WINDOWS else "python3"
STILL_LISTED = "Query Information permission"
RPC_HINT = "The server cannot be reached"

# On Windows wtsapi.current_session_id() falls back on kernel32's
# ProcessIdToSessionId (not the double), so the own session cannot be made
# unreadable there.
needs_double_own = pytest.mark.skipif(
    WINDOWS, reason="on Windows the own session id comes from kernel32's "
    "ProcessIdToSessionId when the double refuses it")


def enumerations(double, server):
    return double.calls(server, "WTSEnumerateSessionsExW")


def err_lines(run, text):
    return [line for line in run.err.splitlines() if text in line]


# --- 1. Vanished, or missing rights ------------------------------------------
# A per-session call answering 2 or 7022 means "perhaps gone": one fresh
# enumeration per server and round decides.  No longer listed: it ended.
# Still listed: the caller may not query it, and the hint says so.

def vanishing_farm(code, active=False):
    """RDS1 (its missing sessions answer ``code``): u3 and u4 end right
    after the first enumeration, u5 is listed but may not be queried
    (noquery: 7022 whatever ``code``), u6 and u7 are ordinary."""
    farm = Farm(caller=1)
    state = ACTIVE if active else DISCONNECTED
    srv = farm.server("RDS1", missing=code)
    for sid in (3, 4, 5, 6, 7):
        srv.session(sid, "RDP-Tcp#%d" % sid if active else "", state,
                    "u%d" % sid, "CORP", logon=CLOCK - 2 * HOUR,
                    input=CLOCK - 30 * MINUTE, disconnect=CLOCK - HOUR,
                    **({"noquery": 1} if sid == 5 else {}))
    farm.mutate("WTSEnumerateSessionsExW:1", "RDS1", 3, remove=1)
    farm.mutate("WTSEnumerateSessionsExW:1", "RDS1", 4, remove=1)
    return farm


@pytest.mark.parametrize("code", [2, 7022])
def test_logoff_of_a_vanished_session_spares_it(cli, load, double, code):
    # old: a logoff answering 2 failed the session; 7022 spared even the
    # listed session u5 (no rights), and nothing enumerated again.
    load(vanishing_farm(code))
    r = cli("/v", "/server:RDS1", "/state:disc")
    assert logoffs(r) == [("RDS1", 6), ("RDS1", 7)]
    assert "Sparing session 3 " in r.out and "Sparing session 4 " in r.out
    assert r.out.count("the session has ended") == 2
    lines = err_lines(r, "session")
    assert len(lines) == 1, r.err
    assert "could not log off session 5 " in lines[0]
    assert STILL_LISTED in lines[0] and "(error 7022)" in lines[0]
    # One enumeration to plan, one more for the three failed calls.
    assert enumerations(double, "RDS1") == 2
    assert r.code == 2


@pytest.mark.parametrize("args", [("/query",), ("/idle:1m", "/whatif")],
                         ids=["query", "idle"])
@pytest.mark.parametrize("code", [2, 7022])
def test_a_time_read_of_a_vanished_session_drops_it(cli, load, double, code,
                                                    args):
    # old: a time read answering 2 failed the whole server; 7022 dropped
    # u5 silently, as if it had ended.
    load(vanishing_farm(code))
    r = cli("/server:RDS1", *args)
    for gone in ("u3", "u4"):
        assert gone not in r.out
    for kept in ("u5", "u6", "u7"):
        assert kept in r.out
    lines = err_lines(r, "session")
    assert len(lines) == 1, r.err
    assert "session 5 " in lines[0] and "could not read its times" in lines[0]
    assert STILL_LISTED in lines[0] and "(error 7022)" in lines[0]
    assert enumerations(double, "RDS1") == 2
    assert r.code == 2
    assert logoffs(r) == []


@pytest.mark.parametrize("code", [2, 7022])
def test_a_warning_to_a_vanished_session_spares_it(cli, load, double, code):
    # old: a failed message failed the session, ended or not: no fresh look.
    farm = Farm(caller=1)
    srv = farm.server("RDS1", missing=code)
    for sid in (3, 4, 5):
        srv.session(sid, "RDP-Tcp#%d" % sid, ACTIVE, "u%d" % sid, "CORP",
                    logon=CLOCK - HOUR, input=CLOCK - MINUTE)
    # u3's message fails and the session is gone by the next look; u4's
    # fails the same way, but it stays listed.
    farm.fail("RDS1", "WTSSendMessageW", code, session=3)
    farm.fail("RDS1", "WTSSendMessageW", code, session=4)
    farm.mutate("WTSSendMessageW:1", "RDS1", 3, remove=1)
    load(farm)
    r = cli("/v", "/server:RDS1", "/state:active", "/warn:bye", "/grace:0")
    assert messages(r) == [("RDS1", 3), ("RDS1", 4), ("RDS1", 5)]
    assert logoffs(r) == [("RDS1", 5)]
    assert "Sparing session 3 " in r.out and "the session has ended" in r.out
    lines = err_lines(r, "session 4 ")
    assert len(lines) == 1, r.err
    assert "could not warn" in lines[0] and STILL_LISTED in lines[0]
    assert "(error %d)" % code in lines[0]
    assert "session 3 " not in r.err
    # The plan, one look after the failed messages, the look after the grace.
    assert enumerations(double, "RDS1") == 3
    assert r.code == 2


# --- 2. The own session never blocks a run -----------------------------------

def unreadable_own(code=1722):
    """The standard farm; the caller's own-session query fails."""
    farm = standard_farm()
    farm.fail(".", "WTSQuerySessionInformationW", code, session=OWN)
    return farm


def marked_rows(run):
    return [line for line in run.out.splitlines() if line.startswith(">")]


@needs_double_own
def test_unreadable_own_session_remote_query_lists(cli, load):
    # old: the failed own-session query failed the whole run (exit 1).
    load(unreadable_own())
    r = cli("/query", "/server:RDS1")
    assert r.code == 0, r.err
    assert "carol" in r.out and "dave" in r.out
    assert marked_rows(r) == []


@needs_double_own
def test_unreadable_own_session_local_query_lists(cli, load):
    # old: the failed own-session query failed the whole run (exit 1).
    load(unreadable_own())
    r = cli("/query")
    assert r.code == 0, r.err
    for user in ("operator", "alice", "bob"):
        assert user in r.out
    assert marked_rows(r) == []


@needs_double_own
def test_unreadable_own_session_remote_selection_goes_ahead(cli, load):
    # old: the whole run failed (exit 1), nothing logged off.
    load(unreadable_own())
    r = cli("/user:carol", "/server:RDS1")
    assert r.code == 0, r.err
    assert logoffs(r) == [("RDS1", 2)]


@needs_double_own
def test_unreadable_own_session_refuses_only_the_local_server(cli, load):
    # A selection on this machine cannot tell which session is yours: that
    # server is refused, RDS1 in the same run goes ahead.  old: the whole
    # run failed (exit 1), nothing logged off.
    load(unreadable_own())
    r = cli("/user:alice,carol", "/server:.,RDS1")
    assert logoffs(r) == [("RDS1", 2)]
    lines = err_lines(r, "cannot tell which session is yours on this machine")
    assert len(lines) == 1, r.err
    assert "nothing is selected here" in lines[0]
    assert "RPC server is unavailable" in lines[0]
    assert r.code == 2
    load(unreadable_own())
    d = doc(cli("/json", "/user:alice,carol", "/server:.,RDS1"))
    assert [e["server"] for e in d["server_errors"]] == ["."]
    assert [(s["server"], s["id"], s["result"]) for s in d["sessions"]] == [
        ("RDS1", 2, "logged-off")]


@needs_double_own
def test_unreadable_own_session_logoff_without_session_fails(cli, load):
    load(unreadable_own())
    r = cli()
    assert r.code == 1
    assert logoffs(r) == []
    assert "RPC server is unavailable" in r.err


@needs_double_own
def test_own_session_error_without_a_code_names_its_function(cli, load):
    # old: "The call failed but did not say why (the last error was 0)...",
    # no function named.
    load(unreadable_own(0))
    r = cli()
    assert r.code == 1
    assert "WTSQuerySessionInformationW failed and Windows gave no reason " \
        "(error 0)" in r.err


def test_error_without_a_code_names_its_function(cli, load):
    # old: "...: The call failed but did not say why (the last error was
    # 0)...", no function named.
    farm = standard_farm()
    farm.fail("RDS1", "WTSLogoffSession", 0)
    load(farm)
    r = cli("2", "/server:RDS1")
    assert r.code == 1
    assert "WTSLogoffSession failed and Windows gave no reason (error 0)" \
        in r.err


# --- 3. Windows' case table --------------------------------------------------

@pytest.mark.parametrize("a,b", [
    ("yildiz", "Yıldız"),               # ı (U+0131) stays ı
    ("administrator", "adminiſtrator"),  # ſ (U+017F) stays ſ
    ("\u00b5", "\u03bc"),                # µ stays: not Greek mu
    ("\u00b5", "\u039c"),
    ("\u03c2", "\u03c3"),                # ς stays: not σ
    ("\u03c2", "\u03a3"),
    ("\u01c5", "\u01c4"),                # ǅ stays: neither Ǆ nor ǆ
    ("\u01c5", "\u01c6"),
    ("\u00df", "SS"), ("\u00df", "ss"),  # ß: no simple upper case
    ("\u00df", "\u1e9e"),                # nor ẞ
    ("\u00e9", "e\u0301"),               # é: no normalization
    ("\u00c9", "E\u0301"),
])
def test_fold_keeps_apart(a, b):
    assert logoff.fold(a) != logoff.fold(b)


@pytest.mark.parametrize("a,b", [
    ("Yıldız", "YıLDıZ"), ("adminiſtrator", "ADMINIſTRATOR"),
    ("\u00b5", "\u00b5"), ("\u03bc", "\u039c"), ("\u03c3", "\u03a3"),
    ("\u01c6", "\u01c4"),                # ǆ <-> Ǆ round-trips
    ("\u1fb3", "\u1fbc"),                # ᾳ -> ᾼ (Wine's table)
    ("\uff46", "\uff26"),                # fullwidth ｆ = Ｆ
    ("stra\u00dfe", "STRA\u00dfE"), ("\u00e9mile", "\u00c9MILE"),
    ("e\u0301", "E\u0301"),
])
def test_fold_matches(a, b):
    assert logoff.fold(a) == logoff.fold(b)


def case_farm():
    farm = Farm(caller=1)
    srv = farm.server("S")
    for sid, user in ((3, "Yıldız"), (4, "adminiſtrator"), (5, "straße"),
                      (6, "\u00e9mile"), (7, "\uff46red"), (8, "\u1fb3x")):
        srv.session(sid, "", DISCONNECTED, user, "CORP")
    return farm


def test_selection_follows_the_case_table(cli, load):
    # old: /user:yildiz took Yıldız and /user:administrator adminiſtrator;
    # ᾼX did not take ᾳx.  (ΑΙ is Python's full upper case of ᾳ.)
    load(case_farm())
    r = cli("/json", "/whatif", "/server:S",
            "/user:yildiz,administrator,STRASSE,STRA\u1e9eE,e\u0301mile,"
            "\u0391\u0399x")
    assert r.code == 0, r.err
    assert doc(r)["sessions"] == []
    r = cli("/json", "/whatif", "/server:S",
            "/user:YıLDıZ,ADMINIſTRATOR,STRAßE,\u00c9MILE,\uff26RED,"
            "\u1fbcX")
    assert r.code == 0, r.err
    assert sorted(s["id"] for s in doc(r)["sessions"]) == [3, 4, 5, 6, 7, 8]


# --- 4. The screen -----------------------------------------------------------

@pytest.mark.parametrize("how,prog", [("script", PY + " logoff.py"),
                                      ("module", PY + " -m logoff")])
def test_usage_error_names_the_command_as_run(run_process, how, prog):
    # old: "LOGOFF [sessionname ...]" and "Type LOGOFF /? ...", which start
    # Windows' own logoff.exe.
    r = run_process(standard_farm(), "/bad", how=how)
    assert r.code == 1
    assert "%s [sessionname | sessionid]" % prog in r.err
    assert "Type %s /? for every switch." % prog in r.err
    assert "Type LOGOFF" not in r.err and "LOGOFF [" not in r.err
    h = run_process(standard_farm(), "/?", how=how)
    assert h.code == 0
    assert "%s [sessionname | sessionid]" % prog in h.out
    assert "LOGOFF [" not in h.out


def test_a_hint_is_shown_once_per_run(cli, load):
    # old: the hint on each of the five lines.
    farm = Farm(caller=1)
    names = ["DOWN%d" % i for i in range(1, 6)]
    for name in names:
        farm.server(name, unreachable=True)
    load(farm)
    r = cli("/state:disc", "/server:" + ",".join(names))
    assert r.code == 1
    lines = err_lines(r, "(error 1722)")
    assert len(lines) == 5, r.err
    assert r.err.count(RPC_HINT) == 1 and RPC_HINT in lines[0]
    assert all("(See the hint above.)" in line for line in lines[1:])
    assert "(See the hint above.)" not in lines[0]


def test_stdout_and_stderr_replace_alike(run_process):
    # old: stdout gave '??' but stderr '\u7530\u4e2d' (Python's
    # backslashreplace on stderr).
    env = {"PYTHONIOENCODING": "cp1252"}
    q = run_process(standard_farm(), "/query", env=env, encoding="cp1252")
    assert q.code == 0, q.err
    row = [line for line in q.out.splitlines() if "RDP-Tcp#9" in line]
    assert len(row) == 1 and "??" in row[0]
    farm = standard_farm()
    farm.fail(".", "WTSLogoffSession", 5, session=5)
    r = run_process(farm, "5", env=env, encoding="cp1252")
    assert r.code == 1
    lines = err_lines(r, "session 5 ")
    assert len(lines) == 1, r.err
    assert "CORP\\??" in lines[0]
    assert "\\u" not in r.err and "\u7530" not in r.err
