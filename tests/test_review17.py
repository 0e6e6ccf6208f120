"""Issue 17, review fixes: each test failed before its fix.

An /exclude file is never cut short and never mistakes part of an account
name for a comment; every audit record a run can write has its event; a
reminder that cannot be sent leaves the logoffs after the grace as they
were; /fo:csv and /fo:list keep stdout a document under /v; a named
session spared by /busy says so."""

import csv
import io

import pytest

import logoff
import wtsapi
from farm import ACTIVE, CLOCK, DISCONNECTED, HOUR, LISTEN, Farm
from helpers import doc


def one_server():
    farm = Farm(caller=1)
    x = farm.server("X")
    x.session(0, "Services", DISCONNECTED)
    for sid, user in ((21, "ops#1"), (22, "ops"), (23, "bob")):
        x.session(sid, "", DISCONNECTED, user, "CORP",
                  disconnect=CLOCK - 2 * HOUR)
    x.session(65536, "RDP-Tcp", LISTEN)
    for sid in (21, 22, 23):
        x.process(sid, 100 + sid, "winlogon.exe")
    return farm


def test_an_exclude_file_over_the_limit_is_refused_not_cut_short(
        cli, load, double, tmp_path):
    # Before: the file was cut at 100,000 names without a word, and the
    # users after that point were logged off.
    load(one_server())
    path = tmp_path / "safe.txt"
    path.write_text("".join("u%d\n" % i for i in range(logoff.MAX_PATTERNS))
                    + "bob\n")
    r = cli("/whatif", "/json", "/user:*", "/server:X",
            "/exclude:@%s" % path)
    assert r.code == 1 and r.out == ""
    assert "more than %d patterns" % logoff.MAX_PATTERNS in r.err
    assert double.calls() == 0
    # At the limit, every pattern counts, the last one too.
    path.write_text("".join("u%d\n" % i for i in range(
        logoff.MAX_PATTERNS - 1)) + "bob\n")
    r = cli("/whatif", "/json", "/user:*", "/server:X",
            "/exclude:@%s" % path)
    assert r.code == 0, r.err
    assert sorted(s["user"] for s in doc(r)["sessions"]) == ["ops", "ops#1"]


def test_a_hash_in_an_account_name_is_not_a_comment(cli, load, tmp_path):
    # Before: "ops#1" read as "ops", so ops#1 was not excluded (and ops
    # was).
    load(one_server())
    path = tmp_path / "safe.txt"
    path.write_text("# service accounts\nops#1\t# the night job\n"
                    "  # an indented comment\n")
    r = cli("/whatif", "/json", "/user:*", "/server:X",
            "/exclude:@%s" % path)
    assert r.code == 0, r.err
    assert sorted(s["user"] for s in doc(r)["sessions"]) == ["bob", "ops"]


@pytest.mark.parametrize("action,results", [
    ("logoff", (logoff.DONE, logoff.FAILED, logoff.UNKNOWN, logoff.SPARED,
                logoff.SKIPPED)),
    ("disconnect", (logoff.DISCONNECTED, logoff.FAILED, logoff.UNKNOWN,
                    logoff.SPARED, logoff.SKIPPED)),
    ("warn", ("ok", logoff.FAILED, logoff.UNKNOWN, logoff.SPARED,
              logoff.SKIPPED)),
    ("remind", ("ok", logoff.FAILED, logoff.UNKNOWN, logoff.SPARED,
                logoff.SKIPPED))])
def test_every_record_a_run_can_write_has_its_event(action, results):
    # Before: a ^C while a reminder was in flight settled the session
    # under "remind" with "spared", which had no event: the event log
    # sink failed on it.  A pending warning or reminder takes any result.
    assert ("intent", action, None) in logoff.RECORDS
    for result in results:
        assert ("outcome", action, result) in logoff.RECORDS, result
    ids = [v[0] for v in logoff.RECORDS.values()]
    assert len(ids) == len(set(ids)) and all(1 <= i <= 1000 for i in ids)


def test_a_reminder_that_cannot_read_the_server_leaves_the_logoffs(
        cli, load, double, monkeypatch):
    # Before: the failed enumeration of a reminder gave the server up, and
    # its sessions were not attempted after the grace.
    farm = Farm(caller=1)
    for name, sid, user in (("A", 3, "carol"), ("B", 4, "erin")):
        farm.server(name).session(sid, "RDP-Tcp#%d" % sid, ACTIVE, user,
                                  "CORP", logon=CLOCK - HOUR)
    load(farm)
    real, seen = wtsapi.Server.sessions, []

    def sessions(self):
        seen.append(self.name)
        if self.name == "A" and seen.count("A") == 2:   # the reminder's
            raise wtsapi.WTSError(1722, "WTSEnumerateSessionsExW", "A")
        return real(self)
    monkeypatch.setattr(wtsapi.Server, "sessions", sessions)
    r = cli("/json", "/server:A,B", "/user:carol,erin", "/warn:bye",
            "/grace:11s", "/remind:10s")
    d = doc(r)
    assert (r.code, d["server_errors"]) == (0, []), r.err
    assert sorted((s["user"], s["result"]) for s in d["sessions"]) == [
        ("carol", "logged-off"), ("erin", "logged-off")]
    assert seen.count("A") == 3          # plan, reminder, after the grace
    # Erin, on the healthy server, was reminded.
    texts = [e for e in double.log() if e.func == "WTSSendMessageW"]
    assert [e.server for e in texts].count("B") == 2


@pytest.mark.parametrize("fo", ["csv", "list"])
def test_verbose_lines_stay_off_a_document_on_stdout(cli, load, fo):
    # Before: /v put "Logging off ..." lines on stdout before the CSV.
    load(one_server())
    r = cli("/user:*", "/server:X", "/fo:%s" % fo, "/v")
    assert r.code == 0, r.err
    assert "Logging off" in r.err and "Logging off" not in r.out
    if fo == "csv":
        rows = list(csv.reader(io.StringIO(r.out, newline="")))
        assert rows[0][:2] == ["server", "id"]
        assert sorted(row[3] for row in rows[1:]) == ["bob", "ops", "ops#1"]
    else:
        assert r.out.startswith("server:")


def test_a_named_session_spared_by_busy_says_so(cli, load, double):
    # Before: spared in silence, exit 0: a scheduled task could not tell.
    farm = one_server()
    farm.servers["X"].process(23, 900, "EXCEL.EXE")
    load(farm)
    r = cli("23", "/server:X", "/busy:excel")
    assert r.code == 0 and r.out == ""
    assert r.err.startswith("logoff: session 23 ")
    assert "was spared: it runs EXCEL.EXE (/busy)" in r.err
    assert double.calls("X", "WTSLogoffSession") == 0


def test_a_preview_audits_nothing_it_would_spare(cli, load, tmp_path):
    # Before: /whatif /busy wrote "spared" outcomes (event 104) to /log,
    # though a preview changes nothing: now its summary alone.
    farm = one_server()
    farm.servers["X"].process(23, 900, "EXCEL.EXE")
    load(farm)
    log = tmp_path / "a.jsonl"
    r = cli("/whatif", "/json", "/user:*", "/server:X", "/busy:excel",
            "/log:%s" % log)
    assert r.code == 0, r.err
    assert {s["user"]: s["result"] for s in doc(r)["sessions"]} == {
        "ops#1": "would-log-off", "ops": "would-log-off", "bob": "spared"}
    from helpers import read_lines
    assert [x["phase"] for x in read_lines(log)] == ["summary"]


def test_the_own_session_in_a_document_names_its_user(cli, load):
    # Before: `logoff /whatif /fo:list` showed an empty user and domain.
    farm = Farm(caller=3)
    farm.server(".").session(3, "RDP-Tcp#3", ACTIVE, "me", "CORP")
    load(farm)
    r = cli("/whatif", "/fo:csv")
    assert r.code == 0, r.err
    (row,) = list(csv.DictReader(io.StringIO(r.out, newline="")))
    assert (row["id"], row["user"], row["domain"], row["own"]) == (
        "3", "me", "CORP", "true")
