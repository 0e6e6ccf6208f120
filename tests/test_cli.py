"""logoff.py as a drop-in for logoff.exe, against the native test double."""

import configparser
import os
import random
import subprocess
import sys

import pytest

import logoff
import wtsapi
from farm import ACTIVE, run_child, standard_farm
from helpers import OWN, ROOT, reference_farm

# The command as these in-process runs run it (pytest is __main__): the help
# names it, never LOGOFF, which starts Windows' own logoff.exe.
PROG = ("py" if sys.platform == "win32" else "python3") + " logoff.py"


def changes(run):
    """The state-changing calls of a run: (func, server, session)."""
    return [(e.func, e.server, e.session) for e in run.log
            if e.func in ("WTSLogoffSession", "WTSDisconnectSession",
                          "WTSSendMessageW")]


# --- The reference page's examples ------------------------------------------------

def test_example_current_session(cli, load, double):
    load(reference_farm())
    r = cli()
    assert (r.code, r.out, r.err) == (0, "", "")
    assert changes(r) == [("WTSLogoffSession", ".", OWN)]
    assert not double.exists(".", 2)


def test_example_session_id(cli, load, double):
    load(reference_farm())
    r = cli("12")
    assert (r.code, r.out, r.err) == (0, "", "")
    assert changes(r) == [("WTSLogoffSession", ".", 12)]
    assert not double.exists(".", 12)
    assert double.exists(".", 3)


def test_example_session_name_and_server(cli, load, double):
    load(reference_farm())
    r = cli("TERM04", "/server:Server1")
    assert (r.code, r.out, r.err) == (0, "", "")
    assert changes(r) == [("WTSLogoffSession", "Server1", 2)]
    # One enumeration resolves the name; the handle is opened and closed.
    assert double.calls("Server1", "WTSEnumerateSessionsExW") == 1
    assert double.calls("Server1", "WTSOpenServerW") == 1
    assert double.calls("Server1", "WTSCloseServer") == 1


@pytest.mark.parametrize("how", ["script", "module"])
def test_examples_as_real_processes(run_process, how):
    farm = reference_farm()
    for args, expected in ((("12",), [("WTSLogoffSession", ".", 12)]),
                           (("TERM04", "/server:Server1"),
                            [("WTSLogoffSession", "Server1", 2)]),
                           ((), [("WTSLogoffSession", ".", OWN)])):
        r = run_process(farm, *args, how=how)
        assert (r.code, r.out, r.err) == (0, "", ""), args
        assert changes(r) == expected
        assert r.exit_stats == dict(live=0, handles=0, badfrees=0,
                                    badhandles=0, inflight=0)


def test_console_script_is_main(run_process, tmp_path):
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    scripts = cfg["options.entry_points"]["console_scripts"]
    assert "pylogoff = logoff:main" in scripts
    # A console_scripts wrapper calls sys.exit(main()).
    code = ("import sys, logoff; sys.argv[1:] = ['12', '/V']; "
            "sys.exit(logoff.main())")
    farm_file = reference_farm().write(str(tmp_path / "f.txt"))
    env = dict(os.environ, WTSDOUBLE_FARM=farm_file)
    p = run_child([sys.executable, "-c", code], cwd=ROOT, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "session 12" in p.stdout and "logged off" in p.stdout


# --- Syntax ------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["/SERVER:Server1", "TERM04"], ["-server:Server1", "term04"],
    ["TERM04", "/Server:Server1", "-v"], ["/sErVeR:server1", "TERM04", "/V"],
])
def test_switches_any_case_either_prefix(cli, load, args):
    load(reference_farm())
    r = cli(*args)
    assert r.code == 0, r.err
    assert changes(r) == [("WTSLogoffSession", "Server1", 2)]
    verbose = any(a.lower() in ("/v", "-v") for a in args)
    assert bool(r.out) == verbose


@pytest.mark.parametrize("args", [
    ["3", "4"], ["TERM04", "3"], ["/server:"], ["3", "/server:"],
    ["/server"], ["3", "/bogus"], ["3", "/v:yes"], ["/x"], ["3", "/v", "/v"],
    ["3", "/server:A", "/server:B"], ["4294967295"], ["99999999999999999999"],
    ["/server:RDS1"], ["-"], ["a:b"], [""], ["3", "/?:x"],
])
def test_bad_arguments_call_nothing(cli, load, double, args):
    load(reference_farm())
    r = cli(*args)
    assert r.code == 1
    assert r.out == ""
    first = r.err.splitlines()[0]
    assert first.startswith("Invalid parameter(s)")
    assert "%s [sessionname | sessionid]" % PROG in r.err
    assert "Type %s /? for every switch." % PROG in r.err
    assert double.calls() == 0


@pytest.mark.parametrize("args", [["/?"], ["-?"], ["3", "/?"], ["/?", "/x"]])
def test_help(cli, load, double, args):
    load(reference_farm())
    r = cli(*args)
    if "/x" in args:
        assert r.code == 1 and "Invalid parameter(s)" in r.err
    else:
        assert (r.code, r.err) == (0, "")
        assert r.out.startswith(logoff.USAGE_BASIC % {"prog": PROG})
        assert "/SERVER:servername" in r.out and "Exit codes" in r.out
    assert double.calls() == 0


def test_server_without_session_calls_nothing(cli, load, double):
    load(reference_farm())
    r = cli("/server:Server1", "/v")
    assert r.code == 1
    assert "current session is not on another server" in r.err
    assert double.calls() == 0


# --- Session IDs --------------------------------------------------------------------

def test_largest_session_id_is_tried_and_not_found(cli, load, double):
    load(reference_farm())
    r = cli("4294967294")
    assert r.code == 1
    assert r.err.strip() == (
        "logoff: Session ID 4294967294 was not found on the local server.")
    assert changes(r) == []


def test_leading_zeros(cli, load):
    load(reference_farm())
    r = cli("0012")
    assert r.code == 0
    assert changes(r) == [("WTSLogoffSession", ".", 12)]


def test_unicode_digits_are_a_name_not_an_id(cli, load):
    load(reference_farm())
    r = cli("١٢")                       # Arabic-Indic 12
    assert r.code == 1
    assert "Session ١٢ was not found" in r.err
    assert changes(r) == []


# --- Session names -------------------------------------------------------------------

def test_name_matches_case_insensitively(cli, load):
    load(reference_farm())
    r = cli("rdp-tcp#8")
    assert r.code == 0
    assert changes(r) == [("WTSLogoffSession", ".", 3)]


def test_named_session_must_be_active(cli, load, double):
    load(reference_farm())
    r = cli("TERM05", "/server:Server1")
    assert r.code == 1
    assert "is disconnected" in r.err and "must be active" in r.err
    assert len(r.err.splitlines()) == 1
    assert changes(r) == []
    assert double.exists("Server1", 3)


def test_unknown_name(cli, load):
    load(reference_farm())
    r = cli("TERM99", "/server:Server1")
    assert r.code == 1
    assert r.err.strip() == (
        "logoff: Session TERM99 was not found on server Server1.")
    assert changes(r) == []


# --- Rights and protected sessions -----------------------------------------------------

def test_access_denied_says_full_control(cli, load, double):
    farm = reference_farm()
    farm.caller_fullcontrol = False
    load(farm)
    r = cli("12")
    assert r.code == 1
    assert len(r.err.splitlines()) == 1
    # Error 5's text is the system's (FormatMessageW) on Windows.
    assert r.err == (
        "logoff: could not log off session 12 (RDP-Tcp#12, CORP\\kim, "
        "Active) on the local server: %s Logging off another user's session "
        "needs the Reset permission on it (part of Full Control); run as an "
        "administrator of the server. (error 5)\n"
        % wtsapi.error_text(5, wtsapi.LANGID_EN_US))
    assert double.exists(".", 12)


def test_own_session_always_allowed(cli, load, double):
    farm = reference_farm()
    farm.caller_fullcontrol = False
    load(farm)
    r = cli("2")                          # the caller's own id
    assert r.code == 0, r.err
    assert changes(r) == [("WTSLogoffSession", ".", 2)]


def test_console_is_refused(cli, load, double):
    load(reference_farm())
    for args in (["1"], ["console"], ["1", "/server:Server1"]):
        r = cli(*args)
        assert r.code == 1
        assert "console session" in r.err
        assert changes(r) == []
    assert double.exists(".", 1) and double.exists("Server1", 1)


def test_own_console_session_is_allowed(cli, load, double):
    farm = reference_farm()
    farm.caller_session = 1
    load(farm)
    r = cli("1")
    assert r.code == 0, r.err
    assert changes(r) == [("WTSLogoffSession", ".", 1)]


def test_services_and_listener_are_refused(cli, load, double):
    load(reference_farm())
    for args, words in ((["0"], "services session"),
                        (["65536"], "listener"), (["rdp-tcp"], "")):
        r = cli(*args)
        assert r.code == 1
        assert words in r.err
        assert changes(r) == []


# --- Errors ---------------------------------------------------------------------------

def test_unreachable_server(cli, load, double):
    load(reference_farm())
    r = cli("3", "/server:DOWN")
    assert r.code == 1
    lines = r.err.splitlines()
    assert len(lines) == 1 and "(error 1722)" in lines[0] and "DOWN" in lines[0]
    assert double.calls("DOWN", "WTSCloseServer") == 1


def test_logoff_call_fails(cli, load):
    farm = reference_farm()
    farm.fail(".", "WTSLogoffSession", 7024)
    load(farm)
    r = cli("12", "/v")
    assert r.code == 1
    assert "(error 7024)" in r.err and "session 12" in r.err
    assert "Logging off session 12" in r.out
    assert "has been logged off" not in r.out


def test_own_session_logoff_fails(cli, load):
    farm = reference_farm()
    farm.fail(".", "WTSLogoffSession", 5)
    load(farm)
    r = cli()
    assert r.code == 1
    assert len(r.err.splitlines()) == 1 and "(error 5)" in r.err


def test_library_missing_is_one_line(run_process):
    r = run_process(reference_farm(), "12",
                    env={"WTSAPI32_DLL": os.path.join(ROOT, "nope.so")})
    assert r.code == 1
    assert len(r.err.splitlines()) == 1
    assert "nope.so" in r.err and "Traceback" not in r.err


# --- /v ------------------------------------------------------------------------------

def test_verbose_says_what_and_outcome(cli, load):
    load(reference_farm())
    r = cli("TERM04", "/server:Server1", "/v")
    assert r.code == 0
    lines = r.out.splitlines()
    assert lines[0] == ("Logging off session 2 (TERM04, CORP\\lee, Active) "
                        "on server Server1.")
    assert lines[1] == "Session ID 2 on server Server1 has been logged off."


def test_verbose_own_session(cli, load):
    load(reference_farm())
    r = cli("/v")
    assert r.code == 0
    assert r.out == "Logging off session ID 2, the current session.\n"


# --- Randomized arguments -----------------------------------------------------------

_WORDS = ["/server:Server1", "/SERVER:server1", "-server:Server1", "/server:",
          "/server", "/server:DOWN", "/v", "-V", "/V:", "/?", "/x", "-",
          "/", "12", "3", "0", "1", "65536", "4294967294", "4294967295",
          "99999999999999999999999", "-12", "TERM04", "term05", "Console",
          "rdp-tcp#8", "", " ", "名前", "😀", "a:b", ":", "/server::",
          "/server:a:b", "//v", "--v", "/servers:x", "١٢", "12 ", "\t"]


def _valid(argv):
    """An oracle, written apart from logoff.py: does ``argv`` form a valid
    drop-in command?  Returns (server, session) or None."""
    seen, server, positional = set(), None, []
    for a in argv:
        if len(a) > 1 and a[0] in "/-":
            name, colon, value = a[1:].partition(":")
            name = name.lower()
            if name in seen or name not in ("server", "v", "?"):
                return None
            seen.add(name)
            if name == "server":
                if not value.strip() or ":" in value or " " in value:
                    return None
                server = value
            elif colon:
                return None
        else:
            positional.append(a)
    if "?" in seen:
        return "help"
    if len(positional) > 1:
        return None
    if not positional:
        return None if server else (None, "own")
    p = positional[0]
    if p.isascii() and p.isdigit():
        return (server, int(p)) if int(p) <= 0xFFFFFFFE else None
    if not p.strip() or ":" in p or p[0] in "/-":
        return None
    return (server, p)


def test_randomized_arguments(cli, load, double):
    rng = random.Random(20261121)
    farm = reference_farm()
    resolve = {None: {"rdp-tcp#8": 3, "rdp-tcp#12": 12, "rdp-tcp#7": 2},
               "server1": {"term04": 2}}
    for i in range(2500):
        argv = [rng.choice(_WORDS) for _ in range(rng.randint(0, 4))]
        if rng.random() < 0.3:
            argv = [w.swapcase() if rng.random() < 0.5 else w for w in argv]
        load(farm)
        r = cli(*argv)
        assert "Traceback" not in r.err, argv
        done = [c for c in changes(r) if c[0] == "WTSLogoffSession"]
        expected = _valid(argv)
        if expected is None or expected == "help":
            assert done == [], argv
            assert r.code == (0 if expected == "help" else 1), argv
            continue
        assert len(done) <= 1, argv
        # A valid command line logs off the one session it names, else
        # (not found, protected) fails having changed nothing.
        assert r.code == (0 if done else 1), argv
        if done:
            server, target = expected
            func, logged_server, sid = done[0]
            assert logged_server.lower() == (server or ".").lower(), argv
            if target == "own":
                assert sid == OWN, argv
            elif isinstance(target, int):
                assert sid == target, argv
            else:
                assert sid == resolve[server and server.lower()][
                    target.lower()], argv


# --- Encodings ----------------------------------------------------------------------

def unicode_farm():
    farm = standard_farm()
    farm.server(".").session(6, "RDP-Tcp#10", ACTIVE, "Zoë😀", "ÉTÉ")
    return farm


@pytest.mark.parametrize("encoding", ["cp1252", "cp437", "cp936", "cp932",
                                      "ascii", "utf-8"])
def test_output_in_any_encoding(run_process, encoding):
    farm = unicode_farm()
    env = {"PYTHONIOENCODING": encoding}
    ok = run_process(farm, "rdp-tcp#9", "/v", env=env, encoding=encoding)
    assert ok.code == 0, ok.err
    line = ok.out.splitlines()[0]
    if encoding in ("cp936", "cp932", "utf-8"):
        assert "CORP\\田中" in line
    else:
        assert "CORP\\??" in line
    ok2 = run_process(farm, "rdp-tcp#10", "/v", env=env, encoding=encoding)
    assert ok2.code == 0, ok2.err
    who = ok2.out.splitlines()[0]
    expect = {"utf-8": "ÉTÉ\\Zoë😀", "cp1252": "ÉTÉ\\Zoë?",
              "cp437": "ÉTÉ\\Zoë?", "ascii": "?T?\\Zo??"}
    if encoding in expect:
        assert expect[encoding] in who
    bad = run_process(farm, "Séance😀", env=env, encoding=encoding)
    assert bad.code == 1
    assert "Traceback" not in bad.err
    assert "was not found" in bad.err and len(bad.err.splitlines()) == 1


# --- The own session with the extension switches ------------------------------------

def test_whatif_never_logs_off_the_own_session(cli, load, double):
    load(reference_farm())
    r = cli("/whatif")
    assert (r.code, r.err) == (0, "")
    assert r.out == "What if: log off session 2, the current session.\n"
    assert changes(r) == []
    assert double.exists(".", 2)


@pytest.mark.parametrize("args", [["/json"], ["/warn:x"]])
def test_own_session_refuses_json_and_warn(cli, load, double, args):
    load(reference_farm())
    r = cli(*args)
    assert r.code == 1 and "need a session name or ID" in r.err
    assert double.calls() == 0


def test_own_session_is_audited(cli, load, tmp_path):
    import json
    load(reference_farm())
    log = tmp_path / "a.jsonl"
    r = cli("/log:%s" % log)
    assert r.code == 0
    intent, line, summary = [json.loads(x) for x in
                             log.read_text("utf-8").splitlines()]
    assert (intent["session"], intent["phase"], intent["seq"]) == (
        2, "intent", line["seq"])
    assert (line["session"], line["action"], line["result"]) == (
        2, "logoff", "logged-off")
    # The summary ends the trail (the same pipeline as every other run).
    assert (summary["phase"], summary["run"], summary["exit_code"]) == (
        "summary", intent["run"], 0)
    assert summary["counts"]["logged-off"] == 1


def test_local_name_asks_the_local_server_for_the_own_session(cli, load,
                                                              double):
    farm = reference_farm()
    farm.server("localhost").session(2, "RDP-Tcp#1", ACTIVE, "x", "CORP")
    farm.server("localhost").session(5, "RDP-Tcp#2", ACTIVE, "y", "CORP")
    load(farm)
    r = cli("/whatif", "/json", "/state:active", "/server:localhost")
    import json
    assert [s["id"] for s in json.loads(r.out)["sessions"]] == [5]
    own_queries = [e for e in r.log if e.func ==
                   "WTSQuerySessionInformationW" and e.session == OWN]
    assert [e.server for e in own_queries] == ["."]


def _under_wine():
    if sys.platform != "win32":
        return False
    import ctypes
    return hasattr(ctypes.WinDLL("ntdll"), "wine_get_version")


@pytest.mark.skipif(_under_wine(), reason="Wine 8 CPython dies with stdout "
                    "redirected to a file")
def test_output_to_a_file_in_cp1252(double_path, tmp_path):
    farm_file = unicode_farm().write(str(tmp_path / "farm.txt"))
    out_path = tmp_path / "out.txt"
    env = dict(os.environ, WTSDOUBLE_FARM=farm_file, PYTHONIOENCODING="cp1252")
    with open(str(out_path), "wb") as out:
        p = subprocess.run([sys.executable, "logoff.py", "rdp-tcp#10", "/v"],
                           cwd=ROOT, env=env, stdout=out,
                           stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 0, p.stderr
    text = out_path.read_bytes().decode("cp1252")
    assert "ÉTÉ\\Zoë?" in text


def test_own_session_0_is_refused(cli, load, double):
    # A scheduled task as SYSTEM, a service or a WinRM command runs in
    # session 0: "log off my session" must not reach WTSLogoffSession there.
    farm = reference_farm()
    farm.caller_session = 0
    load(farm)
    r = cli()
    assert r.code == 1
    assert "session 0, the services session" in r.err
    assert changes(r) == []
