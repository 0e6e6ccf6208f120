"""logoff.py: log users off Remote Desktop Session Host sessions.

A drop-in for Windows' ``logoff.exe``, plus selection, warn-then-logoff,
many servers at once, JSON output and an audit trail:

    python logoff.py [<SessionName> | <SessionID>] [/server:<ServerName>] [/v]

Standard library only; the Windows calls live in ``wtsapi.py``.  One thread
owns the run: the plan, every result, the audit trail and the screen.  A
server's work is a generator (a *step*) that yields what takes time (a
call, a batch of calls, an audit write, a pause) and is resumed with the
answer; between two yields nothing else runs, so no state needs a lock.
Worker threads only call Windows.  The drop-in forms run the same steps
inline, with no thread at all.
"""

import io
import os
import stat
import sys
import time
from collections import Counter, namedtuple

try:
    import wtsapi
except ImportError:
    # The embeddable Windows Python's ._pth file leaves the script's own
    # folder off sys.path; wtsapi.py is shipped beside this file.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import wtsapi

from wtsapi import WTS_CONNECTSTATE_CLASS as State

# --- Tables and text ----------------------------------------------------------

# The help, in two messages: logoff.exe's part (shown again after an invalid
# parameter) and the rest.  %(prog)s is the command as it was run.
# USAGE_MORE is %-formatted too, with nothing: %% is a percent sign.
USAGE_BASIC = """\
Logs off a user from a session on a Remote Desktop Session Host server and
deletes the session from the server.

%(prog)s [sessionname | sessionid] [/SERVER:servername] [/V]

  sessionname         The name of the session (it must be active).
  sessionid           The ID of the session.
  /SERVER:servername  The Remote Desktop Session Host server containing the
                      session to log off (default: the current one).
  /V                  Displays information about the actions performed.
  /?                  Displays this help.

Without a session, logs off the current session.

"""

USAGE_MORE = """\
Beyond logoff.exe: select sessions instead of naming one (all combinable):
  /USER:PATTERN[,...] Users, as name or DOMAIN\\name; * and ? wildcards.
  /STATE:LIST         States: active, disconnected (disc), idle, connected,
                      connectquery, shadow, reset, down, init.
  /IDLE:DURATION      Idle at least this long, by the server's clock (for a
                      disconnected session: since it was disconnected).
  /CLIENT:PATTERN[,...] Sessions whose client name or address matches
                      (THIN-*, 10.1.2.*).
  /LOCKED             Sessions whose screen is locked (never where unknown;
                      not for Windows 7 or Server 2008 R2, which report the
                      lock state reversed).
  /EXCLUDE:PATTERN[,...] Users never selected, as /USER takes them, or
                      @FILE (one a line, # comments).
  A selection only takes sessions with a user, and never session 0,
  listeners, the console session or your own session; one that matches
  nothing is not an error.
  /QUERY              List the sessions (the selected ones, with a
                      selection); change nothing.  With /V: the client and
                      the lock state too.
  /DISCONNECT         Disconnect the sessions instead of logging them off
                      (never one already disconnected).
  /BUSY:IMAGE[,...]   Spare every session running one of these programs
                      (excel.exe, excel, *.tmp.exe), as read just before
                      acting; one whose processes cannot be read is spared.
  /WARN:TEXT          Send TEXT to each selected active session first, wait
                      /GRACE, look again, and log off only the sessions that
                      are still the same logon (same user, logon time and
                      disconnect time) and still match.  %%left%% in TEXT is
                      the time left.
  /GRACE:DURATION     Time between warning and logoff (default 5m).
  /REMIND:DURATION    Send the warning again every DURATION of the grace to
                      the sessions still active.
  /WAIT[:DURATION]    Wait until each logoff has finished (at most DURATION,
                      default 5m); one that has not names what still runs
                      in the session.
  /WHATIF             Show what would be done; send and log off nothing.
  /MAX:N              Change nothing at all if more than N sessions are
                      selected in all.
  /SERVER:A,B,@FILE   Several servers: names, and files of names (one a
                      line, # comments); @- reads them from standard input.
                      Names of one host (this machine, or names with the
                      same addresses) are worked on once.
  /PARALLEL:N         Servers worked on at once (default 16).
  /TIMEOUT:DURATION   How long to wait for one answer from a server before
                      giving the server up (default 60s).  Time spent on
                      our own log and screen is never charged to a server.
                      The drop-in forms call Windows directly, as
                      logoff.exe does, without a limit.
  /JSON               One JSON document on stdout instead of text.
  /FO:TABLE|LIST|CSV  The sessions in this format (/QUERY, /WHATIF, and the
                      results of a run); /NH: without the header row.
  /LOG:FILE           Append one JSON line per action to FILE (audit log),
                      before and after each change, each server failure,
                      and a summary.
  /EVENTLOG[:SOURCE]  Write the same records as events to the Application
                      log (source PyLogoff by default).
  DURATION: a number with an optional unit s, m, h or d (90s, 15m, 2h, 1d);
  a bare number is seconds.

Exit codes: 0 all done, or nothing matched; 1 invalid parameters, or nothing
requested was done; 2 partly done (some sessions or servers failed, or the
run was interrupted after something was done).
"""

MAX_SESSION_ID = 0xFFFFFFFE           # 0xFFFFFFFF is WTS_CURRENT_SESSION

# name -> value policy: None none allowed, True required, False optional.
_SWITCHES = {
    "?": None, "v": None, "query": None, "whatif": None, "json": None,
    "disconnect": None, "locked": None, "nh": None,
    "server": True, "user": True, "state": True, "idle": True, "warn": True,
    "grace": True, "parallel": True, "timeout": True, "log": True,
    "max": True, "exclude": True, "busy": True, "client": True,
    "remind": True, "fo": True, "wait": False, "eventlog": False,
}

# /state words: the API's own names (WTSActive -> active), never the
# localized text of `query session`.  Listeners are never selected.
_STATE_WORDS = {m.name[3:].lower(): m for m in State if m != State.WTSListen}
_STATE_WORDS["disc"] = State.WTSDisconnected

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

LANG_ENGLISH = wtsapi.LANGID_EN_US   # /json and /log, whatever the screen

DEFAULT_WAIT = 300.0          # /wait without a limit: a logoff never hangs us
FRESH_SECONDS = 5.0           # a snapshot older than this is read again
IN_FLIGHT = 8                 # calls in flight per server
TIMES_READERS = IN_FLIGHT
SLOW_READ = 0.002             # seconds: a read this slow crossed a network
NETWORK_READ = 0.0001         # ... and reads this slow on average did too
READ_BUDGET = 0.25            # seconds a worker reads times before answering
READ_MOST = 1024              # ... or sessions: the owner holds no more
INTERRUPT_BOUND = 2.0         # how long calls in flight may finish after ^C
MAX_HUNG = 256                # calls left hung on given-up servers, in all
MAX_ALIASES = 16              # resolutions sharing an address, to merge
CLOSERS = 64                  # workers closing the handles at the end
MAX_SERVERS = 100000
MAX_PATTERNS = 10000          # /exclude: a safelist, not a directory
MIN_REMIND = 10               # seconds: /remind is a reminder, not a flood
MAX_FILE_BYTES = 1 << 20
MAX_CATALOGUE = 1 << 20       # a .mo larger than this is not ours
MAX_TEXT = 4000               # /warn text, characters
MAX_NAME = 255                # a DNS name is at most 253
DEFAULT_SOURCE = "PyLogoff"   # /eventlog without a source

# Results a target can end with.
LISTED, WOULD, DONE, SPARED, FAILED, SKIPPED, UNKNOWN = (
    "listed", "would-log-off", "logged-off", "spared", "failed",
    "not-attempted", "unknown")
WOULD_DISC, DISCONNECTED = "would-disconnect", "disconnected"
_DONE_RESULTS = (LISTED, WOULD, DONE, UNKNOWN, WOULD_DISC, DISCONNECTED)
_FAILED_RESULTS = (FAILED, SKIPPED, UNKNOWN)

# The kinds of run, decided once by main (a what-if previews one of them).
LIST, OWN, NAMED, SELECT = "list", "own", "named", "select"

_INFORMATION = wtsapi.EVENTLOG_INFORMATION_TYPE
_WARNING = wtsapi.EVENTLOG_WARNING_TYPE
_ERROR = wtsapi.EVENTLOG_ERROR_TYPE

# Every audit record by (phase, action, result): its /eventlog event ID
# (1-1000: EventCreate.exe's message table prints it as is), its level, and
# the sentence before its JSON (English, as /json and /log are).
RECORDS = {
    ("intent", "logoff", None): (100, _INFORMATION, "Logging off %(who)s."),
    ("outcome", "logoff", DONE): (101, _INFORMATION, "Logged off %(who)s."),
    ("outcome", "logoff", FAILED): (102, _ERROR,
                                    "Could not log off %(who)s: %(why)s"),
    ("outcome", "logoff", UNKNOWN): (103, _WARNING,
                                     "Logging off %(who)s: %(why)s"),
    ("outcome", "logoff", SPARED): (104, _INFORMATION,
                                    "Spared %(who)s: %(why)s"),
    ("outcome", "logoff", SKIPPED): (105, _WARNING,
                                     "Did not log off %(who)s: %(why)s"),
    ("intent", "warn", None): (110, _INFORMATION, "Warning %(who)s."),
    ("outcome", "warn", "ok"): (111, _INFORMATION, "Warned %(who)s."),
    ("outcome", "warn", FAILED): (112, _ERROR, "Warning %(who)s: %(why)s"),
    ("outcome", "warn", UNKNOWN): (113, _WARNING, "Warning %(who)s: %(why)s"),
    ("outcome", "warn", SPARED): (114, _INFORMATION,
                                  "Spared %(who)s: %(why)s"),
    ("outcome", "warn", SKIPPED): (115, _WARNING, "Warning %(who)s: %(why)s"),
    ("server", None, FAILED): (120, _ERROR, "The work on %(server)s failed: %(why)s"),
    # A change's answer after its server was given up (action: logoff,
    # disconnect or message; result: ok or failed): recorded, never acted on.
    ("late", None, None): (121, _WARNING,
                           "A late answer for %(who)s: %(why)s"),
    ("intent", "disconnect", None): (130, _INFORMATION,
                                     "Disconnecting %(who)s."),
    ("outcome", "disconnect", DISCONNECTED): (131, _INFORMATION,
                                              "Disconnected %(who)s."),
    ("outcome", "disconnect", FAILED): (132, _ERROR,
                                        "Could not disconnect %(who)s: "
                                        "%(why)s"),
    ("outcome", "disconnect", UNKNOWN): (133, _WARNING,
                                         "Disconnecting %(who)s: %(why)s"),
    ("outcome", "disconnect", SPARED): (134, _INFORMATION,
                                        "Spared %(who)s: %(why)s"),
    ("outcome", "disconnect", SKIPPED): (135, _WARNING,
                                         "Did not disconnect %(who)s: "
                                         "%(why)s"),
    ("intent", "remind", None): (140, _INFORMATION, "Reminding %(who)s."),
    ("outcome", "remind", "ok"): (141, _INFORMATION, "Reminded %(who)s."),
    ("outcome", "remind", FAILED): (142, _ERROR,
                                    "Reminding %(who)s: %(why)s"),
    ("outcome", "remind", UNKNOWN): (143, _WARNING,
                                     "Reminding %(who)s: %(why)s"),
    ("outcome", "remind", SPARED): (144, _INFORMATION,
                                    "Spared %(who)s: %(why)s"),
    ("outcome", "remind", SKIPPED): (145, _WARNING,
                                     "Reminding %(who)s: %(why)s"),
}
EVENT_IDS = {k: v[:2] for k, v in RECORDS.items()}


def _record_key(record):
    """A record's key in RECORDS (a late answer's: its phase alone)."""
    return ("late", None, None) if record["phase"] == "late" else (
        record["phase"], record["action"], record["result"])
EVENT_SUMMARY = 900             # the run's last record
_SUMMARY_LEVELS = {0: _INFORMATION, 2: _WARNING, 1: _ERROR}

_translations = None          # a gettext.GNUTranslations; None: English
_langid = LANG_ENGLISH        # the screen's language, for FormatMessageW
_fitting = {}                 # msgid -> its translation, where it fits


def _(msgid):
    """The reader's language for a message of ours; English where the
    translation's placeholders do not fit the message's (named ones in any
    order, positional ones in order)."""
    if _translations is None or not msgid:
        return msgid
    text = _fitting.get(msgid)
    if text is None:
        import re
        find = re.compile(r"%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d+)?[a-zA-Z%]"
                          ).findall

        def shape(t):
            found = find(t)
            return (sorted(p for p in found if p.startswith("%(")),
                    [p for p in found if not p.startswith("%(")])
        text = _translations.gettext(msgid)
        _fitting[msgid] = text = text if shape(text) == shape(msgid) \
            else msgid
    return text


# --- Languages: which one the screen speaks --------------------------------------
# Catalogues are locale/<name>/LC_MESSAGES/logoff.mo, <name> as gettext
# spells it (ja, zh_CN): a new language is a new folder.  Singapore and the
# Hans script read Simplified Chinese; Traditional Chinese (zh-TW, zh-HK,
# zh-MO, zh-Hant) is never shown zh_CN, and gets English.

LOCALE_DOMAIN = "logoff"
_LANGUAGE_ALIASES = {"zh_SG": "zh_CN", "zh_Hans": "zh_CN"}


def _requested_languages():
    """The languages asked for, most wanted first: LOGOFF_LANG; on Windows
    the display languages (the POSIX variables are not the language
    there); elsewhere gettext's variables in gettext's order."""
    forced = os.environ.get("LOGOFF_LANG", "").strip()
    if forced:
        return [forced]
    if sys.platform == "win32":
        return wtsapi.ui_languages()
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        if os.environ.get(name):
            return os.environ[name].split(":")
    return []


def _catalogue_names(tag):
    """Folder names that may hold ``tag``'s catalogue, best first
    ('zh_SG.UTF-8' -> zh_SG, zh_CN, zh); None for English.  A tag is a
    language, never a path: anything else names nothing."""
    parts = [p for p in tag.split(".")[0].split("@")[0].replace(
        "-", "_").split("_") if p]
    if parts and parts[0].lower() in ("c", "posix", "en"):
        return None
    lang = parts[0].lower() if parts else ""
    if not (2 <= len(lang) <= 3 and lang.isascii() and lang.isalpha()):
        return []
    subs = [p.upper() for p in parts[1:] if p.isascii() and (
        len(p) == 2 and p.isalpha() or len(p) == 3 and p.isdigit())] + [
        p.title() for p in parts[1:]
        if len(p) == 4 and p.isascii() and p.isalpha()]
    names = []
    for name in ["%s_%s" % (lang, sub) for sub in subs]:
        names += [name] + ([_LANGUAGE_ALIASES[name]]
                           if name in _LANGUAGE_ALIASES else [])
    return names + [lang]


def _locale_dirs():
    """Where catalogues may be, and nowhere else: locale/ beside this file,
    and share/logoff-py/locale under the data folder of the install scheme
    whose library folder holds this file (a wheel's data files).  Never a
    parent folder: under C:\\ any user may create one."""
    import sysconfig
    here = os.path.dirname(os.path.abspath(__file__))
    dirs, key = [os.path.join(here, "locale")], os.path.normcase(
        os.path.realpath(here))
    for scheme in sysconfig.get_scheme_names():
        try:
            paths = sysconfig.get_paths(scheme, expand=True)
        except (KeyError, ValueError):
            continue
        if "data" in paths and key in {
                os.path.normcase(os.path.realpath(paths[k]))
                for k in ("purelib", "platlib") if k in paths}:
            data = os.path.join(paths["data"], "share", "logoff-py", "locale")
            dirs += [data] if data not in dirs else []
    return dirs


def _read_catalogue(path):
    """A catalogue's bytes, or None: a regular file only (opened so that a
    FIFO cannot hang us), of at most MAX_CATALOGUE bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0)
                     | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_size <= MAX_CATALOGUE:
            with os.fdopen(fd, "rb") as f:
                fd, data = None, f.read(MAX_CATALOGUE + 1)
            return data if len(data) <= MAX_CATALOGUE else None
    except OSError:
        pass
    finally:
        if fd is not None:
            os.close(fd)
    return None


def find_catalogue(tags):
    """gettext's translations for the first of ``tags`` that names English
    or one of ours; None for English.  A broken catalogue means English,
    never a failed run."""
    dirs = None
    for tag in tags:
        names = _catalogue_names(tag)
        if names is None:
            return None
        dirs = dirs or _locale_dirs()
        for path in [os.path.join(d, n, "LC_MESSAGES", LOCALE_DOMAIN + ".mo")
                     for n in names for d in dirs]:
            data = _read_catalogue(path)
            if data is not None:
                import gettext
                try:
                    return gettext.GNUTranslations(io.BytesIO(data))
                except Exception:       # struct.error for a truncated one
                    pass
    return None


def set_language():
    """The screen's language for this run, and the LANGID that asks
    FormatMessageW for the same one (the X-Windows-LANGID header)."""
    global _translations, _langid
    catalogue, langid = find_catalogue(_requested_languages()), LANG_ENGLISH
    if catalogue is not None:
        try:
            langid = int(catalogue.info().get("x-windows-langid", ""), 16)
        except ValueError:
            langid = None          # the user's default
    _translations, _langid = catalogue, langid
    _fitting.clear()


class Text:
    """A message of ours, kept as its English source and its arguments:
    English for /json and /log, the reader's language on the screen."""
    __slots__ = ("msgid", "args")

    def __init__(self, msgid, **args):
        self.msgid, self.args = msgid, args

    def _render(self, text, how):
        args = {k: how(v) if isinstance(v, (Text, SystemText)) else v
                for k, v in self.args.items()}
        return text % args if args else text

    def en(self):
        return self._render(self.msgid, lambda v: v.en())

    def __str__(self):
        return self._render(_(self.msgid), str)


class SystemText:
    """The system's text for a Win32 error code, in either language."""
    __slots__ = ("code",)

    def __init__(self, code):
        self.code = code

    def en(self):
        return wtsapi.error_text(self.code, LANG_ENGLISH)

    def __str__(self):
        text = wtsapi.error_text(self.code, _langid)
        # Where the system had no text (off Windows, Wine's 7000 range, a
        # missing language pack) wtsapi gives its built-in English, which
        # the catalogue has; the system's own texts pass through.
        if _translations is not None and \
                text == "Unknown error %d." % self.code:
            return _("Unknown error %d.") % self.code
        return _(text)


class UsageError(Exception):
    """Invalid parameters: nothing has been called."""


class Refused(Exception):
    """A request this tool will not carry out; ``code``: the Win32 error
    code that best describes it, if any."""

    def __init__(self, text, code=None, function=None):
        super().__init__(text)
        self.text, self.code, self.function = text, code, function


class AuditError(Exception):
    """A record the audit log or the event log (``sink``) did not take."""
    sink = None


class GivenUp(Exception):
    """Thrown into a step whose server was given up, with the answers its
    batch had received (_NO_ANSWER for the rest): those are settled, then
    the step is closed."""

    def __init__(self, answers):
        super().__init__()
        self.answers = answers


_NO_ANSWER = object()


class Stopped(Exception):
    """Thrown into a step that asks for a call once the run is stopping:
    it ends there, and its open targets are closed out."""


# --- Parse --------------------------------------------------------------------

def parse_duration(text, what):
    """'90s', '15m', '2h', '1d' or a bare number of seconds -> seconds."""
    t = text.strip().lower()
    factor = _UNITS.get(t[-1:])
    number, value = t[:-1] if factor else t, -1.0
    if 0 < len(number) <= 20 and number.lstrip("0123456789.") == "":
        try:
            value = float(number)
        except ValueError:
            pass
    value *= factor or 1
    if not 0 <= value <= 10 ** 9:
        raise UsageError(Text(
            "%(switch)s: %(value)r is not a duration (such as 90s, 15m, 2h, "
            "1d)", switch=what, value=text))
    return value


def _is_number(text):
    # str.isdigit() would also take '²' or Arabic-Indic digits.
    return text != "" and all("0" <= c <= "9" for c in text)


def _small_number(text, lo, hi):
    """A decimal in lo..hi, or None; never int() on a 5,000-digit string."""
    t = text.strip()
    if not _is_number(t) or len(t.lstrip("0")) > len(str(hi)):
        return None
    n = int(t.lstrip("0") or "0")
    return n if lo <= n <= hi else None


def _has_control(text):
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def _split_list(text):
    return [p.strip() for p in text.split(",") if p.strip()]


def _decode_server_file(data):
    """Text of a server file: UTF-8 (BOM or not) or UTF-16 (BOM, or the NUL
    pattern of ASCII text written as UTF-16 by PowerShell 5 or Notepad)."""
    for bom, codec in ((b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"),
                       (b"\xef\xbb\xbf", "utf-8")):
        if data.startswith(bom):
            return data[len(bom):].decode(codec)
    if len(data) >= 2 and b"\0" in data:
        even, odd = data[0::2], data[1::2]
        if odd.count(0) * 2 >= len(odd) and even.count(0) == 0:
            return data.decode("utf-16-le")
        if even.count(0) * 2 >= len(even) and odd.count(0) == 0:
            return data.decode("utf-16-be")
    return data.decode("utf-8")


def _read_list_file(path, switch="/server"):
    """The names in a file of /server or /exclude (one a line)."""
    try:
        # O_NONBLOCK: a FIFO with no writer would block open() forever.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0)
                     | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                raise UsageError(Text(
                    "/server:@%(file)s: the file is a pipe; give server "
                    "names on standard input with /server:@-" if switch ==
                    "/server" else "%(switch)s:@%(file)s: the file is a pipe",
                    switch=switch, file=path))
            return _server_names(f.read(MAX_FILE_BYTES + 1), path, switch)
    except OSError as e:
        raise UsageError(Text("%(switch)s:@%(file)s: cannot read the file: "
                              "%(why)s", switch=switch, file=path,
                              why=e.strerror or e))


def _read_server_stdin():
    """/server:@-: server names from standard input, read as bytes in a
    server file's format (a PowerShell pipe brings ASCII in 5.1, UTF-8 in
    7, or UTF-16).  No stdin at all (pythonw.exe, a closed descriptor) is
    an invalid parameter, never a hang or a traceback."""
    stream = getattr(sys.stdin, "buffer", None)
    try:
        if stream is None or stream.closed:
            raise ValueError
    except (AttributeError, ValueError):
        raise UsageError(Text("/server:@- reads server names from standard "
                              "input, but there is none"))
    try:
        data = stream.read(MAX_FILE_BYTES + 1) or b""
    except (OSError, ValueError) as e:
        raise UsageError(Text("/server:@-: cannot read standard input: "
                              "%(why)s", why=getattr(e, "strerror", None)
                              or e))
    return _server_names(data, "-")


def _server_names(data, path, switch="/server"):
    """The names in a server file's bytes (``path`` "-": stdin), or an
    /exclude file's patterns: there '#' starts a comment only at the start
    of a line or after a blank, since an account name may hold one."""
    if len(data) > MAX_FILE_BYTES:
        raise UsageError(Text("%(switch)s:@%(file)s: the file is larger "
                              "than 1 MiB", switch=switch, file=path))
    try:
        text = _decode_server_file(data)
    except UnicodeDecodeError:
        raise UsageError(Text("%(switch)s:@%(file)s: the file is not UTF-8 "
                              "or UTF-16 text", switch=switch, file=path))
    names, limit = [], MAX_SERVERS if switch == "/server" else MAX_PATTERNS
    for number, line in enumerate(text.splitlines(), 1):
        if switch == "/server":
            line = line.split("#", 1)[0]
        else:
            line = " " + line.replace("\t", " ")
            line = line[:line.find(" #")] if " #" in line else line
        line = line.strip()
        if line and _has_control(line):
            raise UsageError(Text(
                "%(switch)s:@%(file)s: line %(line)d holds a control "
                "character", switch=switch, file=path, line=number))
        names += [line] if line else []
        if len(names) > limit:
            if switch == "/server":
                break           # the caller says so, counting every file
            raise UsageError(Text("%(switch)s:@%(file)s: more than %(n)d "
                                  "patterns", switch=switch, file=path,
                                  n=limit))
    return names


def _parse_servers(value):
    names = []
    for item in _split_list(value):
        if item.startswith("@"):
            if not item[1:]:
                raise UsageError(Text("/server:@ needs a file name"))
            # "@-" is standard input; a file named - is "@.\-" or "@./-".
            names += (_read_server_stdin() if item == "@-"
                      else _read_list_file(item[1:]))
        else:
            names.append(item)
        if len(names) > MAX_SERVERS:
            raise UsageError(Text("/server: more than %(n)d servers",
                                  n=MAX_SERVERS))
    out = {}                            # fold(name) -> the first spelling
    for name in names:
        name = name.lstrip("\\")          # \\SERVER is how admins write it
        if (not name or len(name) > MAX_NAME or _has_control(name)
                or any(c in name for c in " \t\\/,:")):
            raise UsageError(Text("/server: %(name)r is not a server name",
                                  name=name[:80]))
        out.setdefault(fold(name), name)
    if not out:
        raise UsageError(Text("/server: needs a server name"))
    return list(out.values())


class Options:
    """What the command line asks for."""
    session = None                    # int id, str name, or None (own)
    servers = ()                      # () = the local server
    verbose = query = whatif = json = help = False
    disconnect = locked = nh = False
    users = states = idle = warn = wait = max = log = None
    exclude = busy = clients = remind = fo = None
    eventlog = None                   # /eventlog: the event source's name
    grace, parallel, timeout = 300.0, 16, 60.0

    @property
    def selecting(self):
        return self.locked or any(v is not None for v in (
            self.users, self.states, self.idle, self.clients))


def parse_args(argv):
    opts, seen, positional = Options(), set(), []
    for arg in argv:
        if arg[:1] not in ("/", "-") or len(arg) == 1:
            positional.append(arg)
            continue
        name, colon, value = arg[1:].partition(":")
        name = name.lower()
        if name not in _SWITCHES:
            raise UsageError(Text("unknown switch %(switch)s",
                                  switch=arg.partition(":")[0][:40]))
        if name in seen:
            raise UsageError(Text("/%(switch)s is given twice", switch=name))
        seen.add(name)
        policy = _SWITCHES[name]
        if policy is None and colon:
            raise UsageError(Text("/%(switch)s takes no value", switch=name))
        if policy is True and not value.strip():
            raise UsageError(Text("/%(switch)s needs a value "
                                  "(/%(switch)s:...)", switch=name))
        if policy is False and colon and not value.strip():
            raise UsageError(Text("/%(switch)s: needs a value after the "
                                  "colon", switch=name))
        _apply_switch(opts, name, value if colon else None)
    if opts.help:
        return opts
    if len(positional) > 1:
        raise UsageError(Text("more than one session given"))
    if positional:
        opts.session = _parse_session(positional[0])
    _check_combination(opts, seen)
    return opts


def _parse_session(arg):
    if _is_number(arg):
        sid = _small_number(arg, 0, MAX_SESSION_ID)
        if sid is None:
            raise UsageError(Text(
                "session ID %(id)s is out of range (0 to %(max)d)",
                id=arg if len(arg) <= 20 else arg[:20] + "...",
                max=MAX_SESSION_ID))
        return sid
    if (arg.strip() == "" or arg.startswith(("/", "-")) or ":" in arg
            or len(arg) > MAX_NAME or _has_control(arg)):
        raise UsageError(Text("%(arg)r is not a session name or ID",
                              arg=arg[:80]))
    return arg


def _apply_switch(opts, name, value):
    if _SWITCHES[name] is None:
        setattr(opts, {"?": "help", "v": "verbose"}.get(name, name), True)
    elif name in ("idle", "grace", "timeout", "remind", "wait"):
        setattr(opts, name, DEFAULT_WAIT if value is None   # a bare /wait
                else parse_duration(value, "/" + name))
        if name == "timeout" and opts.timeout <= 0:
            raise UsageError(Text("/timeout: must be more than 0"))
        if name == "remind" and opts.remind < MIN_REMIND:
            raise UsageError(Text("/remind: at least 10s"))
    elif name == "server":
        opts.servers = _parse_servers(value)
    elif name in ("user", "exclude", "busy", "client"):
        patterns = []
        for item in _split_list(value):
            if name == "exclude" and item.startswith("@"):
                if item in ("@", "@-"):
                    raise UsageError(Text("/exclude:@ needs a file name "
                                          "(standard input is for "
                                          "/server:@-)"))
                listed = _read_list_file(item[1:], "/exclude")
                if not listed:      # a safelist emptied by mistake
                    raise UsageError(Text("/exclude:@%(file)s: the file "
                                          "holds no pattern", file=item[1:]))
                patterns += listed
            else:
                patterns.append(item)
        bad = [u for u in patterns if _has_control(u) or len(u) > 2 * MAX_NAME]
        if bad:
            raise UsageError(Text("/%(switch)s: %(value)r is not a name or "
                                  "pattern", switch=name, value=bad[0][:80]))
        if not patterns:
            raise UsageError(Text("/%(switch)s: needs a name or pattern",
                                  switch=name))
        setattr(opts, {"user": "users", "client": "clients"}.get(name, name),
                patterns)
    elif name == "fo":
        opts.fo = value.strip().lower()
        if opts.fo not in ("table", "list", "csv"):
            raise UsageError(Text("/fo: %(value)r is not table, list or csv",
                                  value=value[:40]))
    elif name == "state":
        opts.states = set()
        for word in _split_list(value):
            if word.lower() == "listen":
                raise UsageError(Text("/state: listener sessions are never "
                                      "selected"))
            if word.lower() not in _STATE_WORDS:
                raise UsageError(Text(
                    "/state: unknown state %(word)r (use %(words)s)",
                    word=word[:40], words=", ".join(sorted(_STATE_WORDS))))
            opts.states.add(_STATE_WORDS[word.lower()])
        if not opts.states:
            raise UsageError(Text("/state: needs a state name"))
    elif name == "warn":
        if len(value) > MAX_TEXT or "\0" in value:
            raise UsageError(Text("/warn: the text is longer than %(n)d "
                                  "characters or holds a NUL", n=MAX_TEXT))
        opts.warn = value
    elif name in ("max", "parallel"):
        number = _small_number(value, *((0, 10 ** 9) if name == "max"
                                        else (1, 256)))
        if number is None:
            raise UsageError(Text(
                "/max: %(value)r is not a number of sessions" if name == "max"
                else "/parallel: %(value)r is not a number from 1 to 256",
                value=value[:40]))
        setattr(opts, name, number)
    elif name == "log":
        opts.log = value
    else:
        source = DEFAULT_SOURCE if value is None else value.strip()
        # A source is a registry key's name under the log: never
        # hierarchical (no backslash).
        if len(source) > MAX_NAME or _has_control(source) or "\\" in source:
            raise UsageError(Text("/eventlog: %(value)r is not an event "
                                  "source name", value=source[:80]))
        opts.eventlog = source


def _check_combination(opts, seen):
    if opts.session is not None:
        if opts.selecting or opts.exclude is not None:
            raise UsageError(Text("a session name or ID cannot be combined "
                                  "with /user, /state, /idle, /client, "
                                  "/locked or /exclude"))
        if len(opts.servers) > 1:
            raise UsageError(Text("a session name or ID needs exactly one "
                                  "server"))
    elif not opts.selecting and not opts.query:
        if opts.servers:
            raise UsageError(Text("/server needs a session name or ID, or a "
                                  "selection: your current session is not "
                                  "on another server"))
        if opts.warn is not None or opts.json:
            raise UsageError(Text("/warn and /json need a session name or "
                                  "ID, or a selection"))
    if opts.exclude is not None and not opts.selecting:
        raise UsageError(Text("/exclude narrows a selection: give /user, "
                              "/state, /idle, /client or /locked too"))
    if opts.busy is not None and (opts.query or opts.session is None
                                  and not opts.selecting):
        raise UsageError(Text("/busy spares sessions from a logoff or a "
                              "disconnect: give a session or a selection"))
    if opts.disconnect and opts.query:
        raise UsageError(Text("/query changes nothing: it cannot be "
                              "combined with /disconnect"))
    if "grace" in seen and opts.warn is None:
        raise UsageError(Text("/grace goes with /warn"))
    if opts.remind is not None and (opts.warn is None
                                    or opts.remind >= opts.grace):
        raise UsageError(Text("/remind goes with /warn and is shorter than "
                              "/grace"))
    if (opts.fo or opts.nh) and opts.json:
        raise UsageError(Text("/fo and /nh cannot be combined with /json"))
    if opts.nh and opts.fo == "list":
        raise UsageError(Text("/nh goes with /fo:table or /fo:csv"))
    if opts.query and (opts.warn is not None or opts.wait is not None
                       or opts.whatif or opts.max is not None):
        raise UsageError(Text("/query changes nothing: it cannot be "
                              "combined with /warn, /wait, /whatif or /max"))


# The run as main decided it, once, frozen: the phases read this, never the
# command line.  ``kind``: LIST, OWN, NAMED or SELECT; ``preview``: /whatif.
# ``action``: "logoff" or "disconnect"; ``done``, ``would``: its results;
# ``lock_info``, ``client_info``: read the lock state, the client.
Context = namedtuple("Context", "kind preview session servers warn grace wait "
                     "max parallel timeout verbose json idle states users "
                     "listing_all log action done would exclude busy clients "
                     "locked remind fo nh lock_info client_info")


def context(opts):
    kind = (LIST if opts.query else NAMED if opts.session is not None
            else SELECT if opts.selecting else OWN)
    # The client and the lock state cost queries: read where the output
    # carries them (/json, /fo:list and /fo:csv, /query /v) or a selection
    # is by them; else never.
    shown = opts.json or opts.fo in ("list", "csv") or \
        opts.query and opts.verbose
    return Context(
        kind, opts.whatif, opts.session, list(opts.servers), opts.warn,
        opts.grace, opts.wait, opts.max, opts.parallel, opts.timeout,
        opts.verbose and not opts.json, opts.json, opts.idle, opts.states,
        _user_matcher(opts.users) if opts.users else None,
        opts.query and not opts.selecting, opts.log,
        *(("disconnect", DISCONNECTED, WOULD_DISC) if opts.disconnect
          else ("logoff", DONE, WOULD)),
        _user_matcher(opts.exclude) if opts.exclude else None,
        _image_matcher(opts.busy) if opts.busy else None,
        _client_matcher(opts.clients) if opts.clients else None,
        opts.locked, opts.remind, opts.fo, opts.nh,
        shown or opts.locked, shown or opts.clients is not None)


# --- Names, states and times as Windows compares and shows them ---------------

# Windows compares names with a one-to-one simple upper-case table that
# leaves out mappings which do not round-trip ([MS-UCODEREF] 3.1.5.5;
# dotnet/runtime pal_casing.c: "on Windows ... U+0131 capitalizes to
# itself").  So a character folds to its upper case only when that is one
# character whose lower case is the character again: ı (U+0131), ſ
# (U+017F), µ, ς and ǅ stay themselves (Wine's table, whose tests run on
# real Windows, agrees for the last three); ß has no simple upper case.
# The simple mappings Python's full str.upper() lacks are added: Greek
# with ypogegrammeni, ᾳ -> ᾼ as Wine's table has it (the rest of the
# series by the same UnicodeData.txt rule, unverified).
_FOLD_SIMPLE = dict(
    [(chr(c), chr(c + 8)) for base in (0x1F80, 0x1F90, 0x1FA0)
     for c in range(base, base + 8)]
    + [("\u1fb3", "\u1fbc"), ("\u1fc3", "\u1fcc"), ("\u1ff3", "\u1ffc")])


def _fold_char(c):
    u = _FOLD_SIMPLE.get(c) or c.upper()
    return u if u == c or c in _FOLD_SIMPLE or len(u) == 1 and \
        u.lower() == c else c


def fold(text):
    """Case-insensitive key, as Windows compares names (see above); no
    normalization: é and e + U+0301 stay apart, as on Windows."""
    return text.upper() if text.isascii() else "".join(map(_fold_char, text))


_STATE_LABELS = {m: m.name[3:] for m in State}      # WTSActive -> Active


def state_label(state):
    return _STATE_LABELS.get(state) or str(int(state))


def state_text(state):
    """A state as the table shows it ('Active', as `quser` shows it in the
    reader's language)."""
    return Text(state_label(state))


def state_word(state):
    """A state inside a sentence ('active')."""
    return Text(state_label(state).lower())


_MINUTES = ["%02d" % m for m in range(60)]     # '00'..'59', made once


def format_idle(seconds):
    """Idle time as quser shows it: '.', M, H:MM or D+HH:MM."""
    if seconds is None:
        return ""
    minutes = int(seconds // 60)
    if minutes < 60:
        return str(minutes) if minutes else "."
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return "%s:%s" % (hours, _MINUTES[minutes])
    return "%s+%s:%s" % (hours // 24, _MINUTES[hours % 24],
                         _MINUTES[minutes])


def seconds_label(seconds):
    """A duration as the switches take it: 45s, 10m, 2h30m, 1d2h."""
    if seconds < 60:
        return "%gs" % seconds
    out, rest = "", int(round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out, rest = out + "%d%s" % (rest // size, unit), rest % size
    return out


def server_label(server):
    return Text("the local server") if server is None else \
        Text("server %(server)s", server=server)


def _is_console(session):
    # fold() keeps a name's length: most names are out at the first test.
    return len(session.name) == 7 and fold(session.name) == "CONSOLE"


def _takeable(session):
    """A session a selection may take at all: one with a user, never
    session 0, a listener or the console."""
    return not (session.id == 0 or not session.user
                or session.state == State.WTSListen or _is_console(session))


def _same_user(now, before):
    return now is not None and (fold(now.user), fold(now.domain)) == (
        fold(before.user), fold(before.domain))


def _is_loopback(name):
    """A literal loopback address, 127.0.0.0/8 or ::1; a host *name* that
    merely starts with 127. is not one."""
    if not (name[:1].isdigit() or ":" in name):
        return False                # a name, not an address: no parsing
    import ipaddress
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def _names_this_machine(server):
    """Names that always mean this machine: none, ., localhost, a loopback
    address, this host's name or COMPUTERNAME.  No short-name guess."""
    name = (server or ".").lower()
    return (name in (".", "localhost") or _is_loopback(name)
            or name in [n for n in _own_names() if n])


_OWN_NAMES = []


def _own_names():
    """This machine's host name and COMPUTERNAME, lower case."""
    if not _OWN_NAMES:
        _OWN_NAMES.append(wtsapi.host_name().lower())   # no socket to import
        _OWN_NAMES.append(os.environ.get("COMPUTERNAME", "").lower())
    return _OWN_NAMES


_FILETIME_MAX = 2650467743999999999       # 9999-12-31, what a datetime holds



def _local_minute(ticks, cache):
    """A logon time (FILETIME ticks) as the table shows it, in local time
    to the minute, never a datetime a row: two time.localtime() an hour
    (by UTC) where that hour is one local hour throughout (no change of
    offset in it, no half-hour offset), one a minute elsewhere."""
    if not ticks or not 0 < ticks <= _FILETIME_MAX:
        return ""
    minute = ticks // 600000000
    hour, m = divmod(minute, 60)
    prefix = cache.get(hour)
    if prefix is None:
        cache[hour] = prefix = _local_hour(hour * 3600 - 11644473600)
    if prefix:
        return prefix + _MINUTES[m]
    key = ("minute", minute)            # apart from the hours' keys
    if key not in cache:
        try:
            cache[key] = time.strftime(
                "%Y-%m-%d %H:%M", time.localtime(minute * 60 - 11644473600))
        except (OverflowError, OSError, ValueError):
            # Windows' C runtime refuses dates before 1970 or after 3000.
            cache[key] = wtsapi.filetime(ticks).strftime("%Y-%m-%d %H:%MZ")
    return cache[key]


def _local_hour(start):
    """'YYYY-MM-DD HH:' for the UTC hour from ``start`` (seconds since
    1970) where its 60 minutes are minutes 0 to 59 of one local hour;
    '' elsewhere."""
    try:
        first, last = time.localtime(start), time.localtime(start + 3599)
    except (OverflowError, OSError, ValueError):
        return ""
    if first.tm_min == 0 and last.tm_min == 59 and first[:4] == last[:4]:
        return time.strftime("%Y-%m-%d %H:", first)
    return ""


# --- Failures: one place turns any of them into what is reported --------------

class Failure(namedtuple("Failure", "code message hint function show_code")):
    """What is reported about something that went wrong: the Win32 code, a
    message and a hint (Text or SystemText), the function."""
    __slots__ = ()

    def __new__(cls, code, message, hint=None, function=None,
                show_code=True):
        return super().__new__(cls, code, message, hint, function,
                               show_code and code is not None)

    def en(self):
        return self.message.en()

    def screen(self, hints=None):
        """The line for the screen.  ``hints``, a set, shows each hint
        once a run; a later line refers to it."""
        text = str(self.message)
        if self.hint is not None:
            seen = hints is not None and self.hint.en() in hints
            text = _sentences(text, _("(See the hint above.)") if seen
                              else str(self.hint))
            if hints is not None:
                hints.add(self.hint.en())
        return _sentences(text, "(error %d)" % self.code) if self.show_code \
            else text

    def about(self, text, **args):
        """The same failure, its message put in a sentence of ours."""
        return self._replace(message=Text(text, why=self.message, **args))


def _sentences(first, then):
    """Two sentences on one line: a space after English text, none after
    a full stop of Chinese or Japanese (。)."""
    return first + then if first.endswith(("\u3002", "\uff09")) else \
        "%s %s" % (first, then)


def _hint(code, function, remote, session):
    if code == wtsapi.ERROR_ACCESS_DENIED:
        if function == "WTSSendMessageW":
            hint = Text("Sending a message needs the Message permission on "
                        "the session (part of Full Control).")
        elif function in ("WTSEnumerateSessionsExW", "WTSEnumerateSessionsW",
                          "WTSQuerySessionInformationW", "WTSOpenServerW"):
            hint = Text("Listing sessions needs the Query Information "
                        "permission on the server.")
        else:
            hint = Text("Logging off another user's session needs the Reset "
                        "permission on it (part of Full Control); run as an "
                        "administrator of the server.")
        return Text("%(hint)s Or Remote RPC is disabled on the target "
                    "(AllowRemoteRPC = 0 under HKLM\\SYSTEM\\"
                    "CurrentControlSet\\Control\\Terminal Server).",
                    hint=hint) if remote else hint
    if code in wtsapi.SESSION_GONE_CODES and session is not None:
        # Asked only of a session a fresh enumeration still lists:
        # [MS-TSTS] has 7022 as "does not exist or the caller does not
        # have WINSTATION_QUERY permission".
        return Text("The session is still listed, so your account may lack "
                    "the Query Information permission on it (part of Full "
                    "Control).")
    return {wtsapi.RPC_S_SERVER_UNAVAILABLE: Text(
        "The server cannot be reached: it is down or the name is wrong, a "
        "firewall blocks RPC, or the Remote Desktop Services service "
        "(TermService) is not running on it."),
        wtsapi.ERROR_NO_MORE_ITEMS: Text(
            "This account may see no session on the server: it lacks the "
            "Query Information permission there."),
        wtsapi.ERROR_CTX_WINSTATION_ACCESS_DENIED: Text(
            "The session's permissions (on its RDP-Tcp connection) deny "
            "this to your account; it needs Full Control.")}.get(code)


def describe(exc, server=None):
    """Any failure (WTSError, a refusal, an OSError, a bug) as a Failure.
    A call that failed without a code names its function."""
    if isinstance(exc, Refused):
        return Failure(exc.code, exc.text, function=exc.function,
                       show_code=exc.function is not None)
    if isinstance(exc, wtsapi.WTSError):
        if not exc.winerror:
            return Failure(0, Text("%(function)s failed and Windows gave no "
                                   "reason", function=exc.function),
                           function=exc.function)
        return Failure(exc.winerror, SystemText(exc.winerror), _hint(
            exc.winerror, exc.function, server is not None, exc.session),
            exc.function)
    if isinstance(exc, OSError):
        return Failure(exc.winerror, SystemText(exc.winerror)) if getattr(
            exc, "winerror", None) else Failure(None, Text(
                "%(why)s", why=exc.strerror or str(exc)))
    return Failure(None, Text("internal error: %(type)s: %(what)s",
                              type=type(exc).__name__, what=str(exc)))


# --- The audit trail: records, and the sinks that take them ---------------------

class Audit:
    """The /log file: JSON lines, written ahead: before each change a line
    says what is about to be done, after it a line with the outcome, paired
    by ``run`` and ``seq``.  Several runs may append at once: on POSIX one
    O_APPEND write of a whole line is atomic; Windows emulates O_APPEND
    with a seek, so there a byte-range lock serialises the writers, waited
    for in the kernel for as long as it takes."""

    LOCK_OFFSET = 0x7FFFFFFF            # far past any real log's end
    # Why nothing more is changed once this sink fails.
    stopped = Text("the audit log cannot be written")

    def __init__(self, path):
        import json
        self._json, self.path, self.fd, self.broken = json, path, None, None
        try:
            regular = stat.S_ISREG(os.stat(path).st_mode)
        except (FileNotFoundError, PermissionError):
            # Not there yet, or a share that lets us append but not look (a
            # drop box): the open and its fstat decide.
            regular = True
        except (OSError, ValueError) as e:      # too long; a NUL
            raise AuditError(Text("%(why)s", why=getattr(e, "strerror", None)
                                  or str(e)))
        # O_NONBLOCK: a FIFO that appears after the check must not hang us.
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT |
                              getattr(os, "O_BINARY", 0) |
                              getattr(os, "O_NONBLOCK", 0), 0o644) \
                if regular else None
        except OSError as e:
            raise AuditError(Text("%(why)s", why=e.strerror or str(e)))
        if self.fd is None or not stat.S_ISREG(os.fstat(self.fd).st_mode):
            self.close()
            raise AuditError(Text("%(file)s is not a regular file",
                                  file=path))

    def describe(self, why):
        return Text("the audit log %(file)s cannot be written: %(why)s",
                    file=self.path, why=why)

    def append(self, record):
        # After a failed write nothing more goes to the file: a line the
        # disk took in part stays the last one, never glued to the next.
        if self.broken is not None:
            raise AuditError(self.broken)
        # A lone surrogate in a name cannot be UTF-8: escaped, as JSON
        # itself would, rather than the line lost.
        data = (self._json.dumps(record, ensure_ascii=False) + "\n"
                ).encode("utf-8", "backslashreplace")
        try:
            if sys.platform != "win32":
                return self._write_all(data)
            handle = wtsapi.file_handle(self.fd)
            wtsapi.lock_byte(handle, self.LOCK_OFFSET, wait=True)
            try:
                os.lseek(self.fd, 0, os.SEEK_END)
                self._write_all(data)
            finally:
                wtsapi.unlock_byte(handle, self.LOCK_OFFSET)
        except OSError as e:
            self.broken = Text("%(why)s", why=e.strerror or str(e))
            raise AuditError(self.broken)

    def _write_all(self, data):
        n = os.write(self.fd, data)
        if n != len(data):
            raise OSError(0, "short write (%d of %d bytes)" % (n, len(data)))

    def close(self):
        fd, self.fd = self.fd, None
        try:
            if fd is not None:
                os.close(fd)
        except OSError:     # a share's deferred error: the run is over
            pass


def _event_failure(e):
    """Why the event log failed, as reported."""
    if isinstance(e, wtsapi.EventLogError):
        return Text("%(function)s failed: %(text)s (error %(code)d)",
                    function=e.function, text=SystemText(e.winerror),
                    code=e.winerror)
    return Text("%(why)s", why=getattr(e, "strerror", None) or str(e))


def _event_sentence(record):
    """The event's first line: what was done to whom, one line of text."""
    if record["phase"] == "summary":
        counts = ", ".join("%d %s" % (n, k) for k, n in
                           sorted(record["counts"].items()) if n)
        text = Text("Run %(run)s ended with exit code %(code)d "
                    "(%(counts)s): %(why)s" if record["message"] else
                    "Run %(run)s ended with exit code %(code)d "
                    "(%(counts)s).", run=record["run"],
                    code=record["exit_code"], why=record["message"],
                    counts=counts or Text("nothing done")).en()
    else:
        account = record["user"] or ""
        if account and record["domain"]:
            account = "%s\\%s" % (record["domain"], account)
        server = server_label(record["server"])
        who = Text("session %(id)s (%(account)s) on %(server)s" if account
                   else "session %(id)s on %(server)s", id=record["session"],
                   account=account, server=server)
        text = Text(RECORDS[_record_key(record)][2], who=who, server=server,
                    why=record["message"] or record["result"]).en()
    # One line, so that the JSON is always what follows the first CR LF.
    return "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in text)


class EventLog:
    """The /eventlog sink: each record as one event in this machine's
    Application log: a fixed ID per action and outcome (RECORDS), its
    level to match, the operator's SID from the process token (none off
    Windows), and one string: a sentence, CR LF, the record as ASCII JSON.
    Registering the source raises OSError if it cannot be done."""
    stopped = Text("the event log cannot be written")

    def __init__(self, source):
        import json
        self._json, self.source = json, source
        self.sid = wtsapi.process_sid()
        self.src = wtsapi.EventSource(source)

    def describe(self, why):
        return Text("the event log (source %(source)s) cannot be written: "
                    "%(why)s", source=self.source, why=why)

    def append(self, record):
        event_id, level = (EVENT_SUMMARY, _SUMMARY_LEVELS.get(
            record["exit_code"], _ERROR)) if record["phase"] == "summary" \
            else EVENT_IDS[_record_key(record)]
        text = "%s\r\n%s" % (_event_sentence(record),
                             self._json.dumps(record, ensure_ascii=True))
        try:
            self.src.report(level, event_id, text, self.sid)
        except (OSError, ValueError) as e:
            raise AuditError(_event_failure(e))

    def close(self):
        try:
            self.src.close()
        except OSError:
            pass        # the run is over: its events are written already


class Sinks:
    """The run's sinks (the /log file, then the /eventlog source), written
    by one thread: the sink thread, or the main thread in a drop-in run.
    A record goes to every sink under one ``seq``.  After the first failure
    no intent is written any more (the run is stopping); outcomes are still
    offered to every sink.  An intent one sink refused gets its
    not-attempted outcome at once in the sinks that took it: no intent is
    left looking as if its change were in flight."""

    def __init__(self, sinks):
        self.sinks, self.failed = sinks, None

    def write(self, records):
        """Write in order; returns how many records at the head were
        written (all, unless a sink failed) and the first failure."""
        for n, record in enumerate(records):
            intent = record["phase"] == "intent"
            if intent and self.failed is not None:
                return n, self.failed
            taken = []
            for sink in self.sinks:
                try:
                    sink.append(record)
                    taken.append(sink)
                except Exception as e:      # any: the sink thread must live
                    if not isinstance(e, AuditError):
                        e = AuditError(describe(e).message)
                    e.sink, self.failed = sink, self.failed or e
                    if intent:
                        break
            if intent and self.failed is not None:
                closing = dict(record, phase="outcome", result=SKIPPED,
                               message=Text("not attempted: %(why)s",
                                            why=self.failed.sink.stopped).en())
                for sink in taken:
                    try:
                        sink.append(closing)
                    except AuditError:
                        pass        # that sink's own failure is reported
                return n, self.failed
        return len(records), self.failed

    def close(self):
        for sink in self.sinks:
            sink.close()


class Trail:
    """The run's audit records, each numbered once (``seq``) by the owner
    of the run, in the order they go to the sinks."""

    def __init__(self, operator):
        self.run_id, self.operator, self.seq = os.urandom(6).hex(), operator, 0

    def record(self, seq=None, **fields):
        if seq is None:
            self.seq += 1
            seq = self.seq
        now = time.time()
        record = dict(time="%s.%03dZ" % (time.strftime(
            "%Y-%m-%dT%H:%M:%S", time.gmtime(now)), int(now % 1 * 1000)),
            run=self.run_id, seq=seq, phase=None, operator=self.operator,
            server=None, session=None, user=None, domain=None, action=None,
            result=None, error=None, message=None, warned=None)
        record.update(fields)
        return record


# --- Plan: what is selected on each server -------------------------------------
# A step is a generator run by the coordinator: it yields a Call (one
# Windows call on a worker), a list of Calls (a batch, at most IN_FLIGHT in
# flight; answered with a list of values or exceptions), a Write (audit
# records; answered once written, with how many were) or a Pause, and is
# resumed with the answer, or has the call's exception raised at its yield.
# Once the run is stopping, any call or pause raises Stopped instead.

class Call:
    """``fn(*args)`` on a worker; ``slack``: seconds it may take beyond
    /timeout (a batch of reads: see read_times)."""
    __slots__ = ("fn", "args", "slack")

    def __init__(self, fn, *args, slack=0.0):
        self.fn, self.args, self.slack = fn, args, slack


Write = namedtuple("Write", "records")
Pause = namedtuple("Pause", "seconds")


class Job:
    """One server's share of the work: its name (None: the local server),
    its one handle, kept across phases (on a remote server a new handle is
    a new RPC connection), its targets and how it ended."""
    __slots__ = ("server", "local", "srv", "targets", "failure", "given_up",
                 "read_at", "names", "done", "procs")

    def __init__(self, server):
        self.server, self.local = server, _names_this_machine(server)
        self.srv, self.targets, self.failure, self.given_up = None, [], None, \
            False
        self.read_at = 0.0           # monotonic time of the last enumeration
        self.names, self.done = [server], None  # done: the last phase
        self.procs = None       # /busy: session id -> its processes' images


class Target:
    """A session chosen for action, and what happened to it.  ``times``:
    its SessionTimes when read (the logon a warning went to); ``pending``:
    the action whose intent is written and whose outcome is not;
    ``issued``: that action's call went out."""
    __slots__ = ("server", "session", "times", "idle", "own", "action",
                 "result", "error", "message", "warned", "note", "seq",
                 "pending", "issued", "read_at", "client", "locked",
                 "logon")

    def __init__(self, server, session, action, own=False):
        self.server, self.session, self.action, self.own = \
            server, session, action, own
        self.times = self.idle = self.result = self.error = None
        self.logon = 0                  # FILETIME ticks, 0 where unknown
        self.client = self.locked = None        # read only when wanted
        # message: why it failed or was spared; note: why it was not warned
        self.message = self.note = self.warned = None
        self.seq = self.pending = None
        self.issued, self.read_at = False, 0.0

    def who(self):
        s = self.session
        parts = ([s.name] if s.name else []) + (
            [s.account] if s.account else []) + [str(state_text(s.state))]
        if self.idle is not None:
            parts.append(str(Text("idle %(idle)s",
                                  idle=format_idle(self.idle) or ".")))
        return Text("session %(id)d (%(what)s) on %(server)s", id=s.id,
                    what=", ".join(parts), server=server_label(self.server))

    def record(self):
        s, message = self.session, self.message or self.note
        logon = wtsapi.filetime(self.logon)
        return {
            "server": self.server, "id": s.id, "name": s.name,
            "user": s.user, "domain": s.domain,
            "state": state_label(s.state).lower(), "state_code": int(s.state),
            "idle_seconds": self.idle,
            "logon_time": (logon.isoformat().replace("+00:00", "Z")
                           if logon else None),
            "own": self.own, "action": self.action, "result": self.result,
            "warned": self.warned, "error": self.error,
            "message": message.en() if message is not None else None,
            "client_name": self.client.name if self.client else None,
            "client_address": self.client.address if self.client else None,
            "locked": self.locked}


class Own:
    """The caller's own session: its ID on the local server (read once a
    run; None where it cannot be, with ``error``, the WTSError), and its
    details (SessionTimes; False where they cannot be read), read only
    when a session elsewhere has that ID; ``account``: the account this
    process runs as, folded, read only where the ID is unknown."""
    __slots__ = ("id", "error", "details", "account")

    def __init__(self):
        self.id = self.error = self.details = self.account = None


def own_step(run, job):
    # A local call that does not answer within /timeout counts as failed.
    run.own.error = wtsapi.WTSError(wtsapi.ERROR_TIMEOUT,
                                    "WTSQuerySessionInformationW")
    try:
        run.own.id = yield Call(wtsapi.current_session_id)
        run.own.error = None
    except wtsapi.WTSError as e:
        run.own.error = e


def _own_details(run):
    if run.own.details is None:
        try:
            run.own.details = yield Call(wtsapi.own_session)
        except wtsapi.WTSError:
            run.own.details = False
    return run.own.details


def is_own(run, job, session):
    """True: the caller's session; False: not; None: cannot tell.  On this
    machine the ID alone says it; elsewhere (an alias, an address) the
    same ID, user and logon time.  A selection takes only False; the
    console refusal gives way only to True."""
    own = run.own
    if own.id is None:
        # Any server may be this machine under another name (an address,
        # an alias): there a session of the caller's account may be theirs.
        if own.account is None:
            own.account = fold(wtsapi.process_account())
        mine = own.account
        return None if job.local or not mine or mine == fold(
            session.account if "\\" in mine else session.user) else False
    if session.id != own.id or job.local:
        return session.id == own.id
    details = yield from _own_details(run)
    if not details:
        return None
    if not _same_user(session, details):
        return False
    try:
        times = yield Call(job.srv.times, session.id)
    except wtsapi.WTSError:
        return None
    return times.logon_ticks == details.logon_ticks


def _pattern(patterns):
    """One compiled expression for fnmatch patterns, compared as Windows
    compares names (fold), * and ?, '[' taken literally (no sets): one
    match a name, however many patterns (an /exclude file may hold
    thousands), whose ``lastindex`` is the first pattern that matched
    (from 1); None for none."""
    if not patterns:
        return None
    import re
    from fnmatch import translate
    return re.compile("|".join("(%s)" % translate(fold(p).replace(
        "[", "[[]")) for p in patterns)).match


def _user_matcher(patterns):
    """Session -> the first pattern that matches it, or None; a pattern
    with a backslash matches DOMAIN\\user, else user."""
    users = [p for p in patterns if "\\" not in p]
    accounts = [p for p in patterns if "\\" in p]
    by_user, by_account = _pattern(users), _pattern(accounts)

    def match(session):
        user = fold(session.user)
        found = [(patterns.index(names[m.lastindex - 1]))
                 for names, m in ((users, by_user and by_user(user)), (
                     accounts, by_account and by_account("%s\\%s" % (
                         fold(session.domain), user)))) if m]
        return patterns[min(found)] if found else None
    return match


def _client_matcher(patterns):
    """Client -> True where a pattern matches its name or its address."""
    match = _pattern(patterns)
    return lambda client: client is not None and any(
        match(fold(text)) for text in client if text)


def _image_matcher(patterns):
    """A process image name -> True where a /busy pattern matches it; a
    pattern without a dot means an .exe (excel: EXCEL.EXE)."""
    match = _pattern([p for given in patterns for p in (
        [given] if "." in given else [given, given + ".exe"])])
    return lambda image: match(fold(image)) is not None


def selects(ctx, session):
    """The selection's one rule, for the plan and every re-check: a
    session it may take at all, in a chosen state, of a chosen user not
    excluded, and not disconnected already when disconnecting."""
    return (_takeable(session)
            and (ctx.states is None or session.state in ctx.states)
            and (ctx.users is None or ctx.users(session) is not None)
            and (ctx.exclude is None or ctx.exclude(session) is None)
            and not (ctx.action == "disconnect"
                     and session.state == State.WTSDisconnected))


def _same_account(times, session):
    """The time record names the enumerated session's user (WTSINFOW holds
    at most 20 characters of it and 16 of the domain)."""
    if times.user == session.user and times.domain == session.domain:
        return True
    for got, want, width in ((times.user, session.user, 20),
                             (times.domain, session.domain, 16)):
        got, want = fold(got), fold(want)
        if got != want and not (len(got) >= width and want.startswith(got)):
            return False
    return True


def _read_chunk(srv, ctx, ids, probe, client, slow):
    """On a worker: for ``ids`` in order, the times (with the lock state
    where it is wanted: WTSSessionInfoEx, the same one query; the times
    alone before Windows 7, which lacks it), a (times, Client) pair where
    the client is wanted (two queries more), or the WTSError it failed
    with; until READ_MOST are read or READ_BUDGET has passed (no session's
    reads start after it, so the answer comes within one session's reads
    of it), or with ``probe`` after a first read slow enough to have
    crossed a network; and whether the reads crossed one (that first
    read, or their average).  ``client``: read it too; ``slow``: reads
    crossed a network before."""
    # perf_counter: monotonic() ticks every 15.6 ms on some Windows Pythons.
    out, clock, ex = [], time.perf_counter, ctx.lock_info
    start = clock()
    end, size = start + READ_BUDGET, 1 if probe or slow and (
        ex or client) else 16
    while len(out) < min(len(ids), READ_MOST):
        began = clock()
        part = ids[len(out):min(len(out) + size, READ_MOST)]
        answers = srv.times_many(part, ex, until=end)
        for n, sid in enumerate(part[:len(answers)]) if ex or client else ():
            if n and clock() > end:         # the rest in the next answer
                del answers[n:]
                break
            times = answers[n]
            try:
                if ex and isinstance(times, wtsapi.WTSError) and \
                        times.winerror == wtsapi.ERROR_INVALID_PARAMETER:
                    times = srv.times(sid)
                if client and not isinstance(times, OSError):
                    times = (times, srv.client(sid))
            except wtsapi.WTSError as e:
                times = e
            answers[n] = times
        out += answers
        now = clock()
        if probe and now - start > SLOW_READ:
            return out, True
        if now > end:
            break
        # Times read ahead of their sessions' other queries are read again
        # where the budget ends first: once reads are slow, a session at a
        # time.
        probe, size = False, 16 if not (ex or client) or \
            now - began <= NETWORK_READ * len(answers) else 1
    took = clock() - start
    return out, took > NETWORK_READ * len(out) and (
        len(out) >= 16 or took > SLOW_READ)


def read_times(run, job, targets, again=False):
    """Idle and logon time for each target, read on workers: one worker
    at a time while reads are fast (a local server: more would only
    contend for the interpreter), IN_FLIGHT at once once the first read
    crossed a network, so 200 sessions at 50 ms cost about 26 round trips.
    A session whose read says "not found" (2 or 7022) is looked for once
    more in a fresh enumeration: gone, it ends up in the returned list; still
    listed, it fails (missing rights).  One that changed hands since the
    enumeration is gone too."""
    todo, lanes, probe, gone, maybe = list(targets), 1, True, [], []
    listing = run.ctx.kind == LIST
    # The client once for the output; again only where /client selects.
    with_client = run.ctx.clients is not None if again else \
        run.ctx.client_info
    # A worker answers within READ_BUDGET and one session's reads, each of
    # their calls allowed /timeout: the times (again without
    # WTSSessionInfoEx, before Windows 7) and the client's two.
    calls = 1 + run.ctx.lock_info + 2 * with_client
    slack = READ_BUDGET + (calls - 1) * run.ctx.timeout
    while todo:
        size = -(-len(todo) // lanes)
        chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
        answers = yield [Call(_read_chunk, job.srv, run.ctx,
                              [t.session.id for t in c], probe, with_client,
                              lanes > 1, slack=slack) for c in chunks]
        todo = []
        for chunk, answer in zip(chunks, answers):
            if isinstance(answer, BaseException):
                raise answer
            answer, slow = answer
            now = time.monotonic()
            for t, got in zip(chunk, answer):
                if isinstance(got, wtsapi.WTSError):
                    if got.winerror not in wtsapi.SESSION_GONE_CODES:
                        raise got
                    maybe.append((t, got))
                    continue
                times, client = got if with_client else (got, None)
                s = t.session
                if (times.user != s.user or times.domain != s.domain) and \
                        not _same_account(times, s):
                    gone.append(t)
                else:
                    # A listing is never checked again: its times are
                    # not kept, only what it shows.
                    t.times = None if listing else times
                    t.read_at, t.locked = now, times.locked
                    t.logon = times.logon_ticks
                    t.idle = None if _is_console(s) else times.idle
                    t.client = client or t.client
            todo.extend(chunk[len(answer):])
            if slow:            # a network: IN_FLIGHT at once from now on
                lanes = IN_FLIGHT
        probe = False
    return gone + (yield from _sort_gone(
        run, job, maybe, "could not read its times: %(why)s", spare=False))


def _listed(run, job):
    """A fresh enumeration, by ID.  It makes the server's snapshot fresh
    only where the targets are checked against it (``_refresh``)."""
    sessions = yield Call(job.srv.sessions)
    return {s.id: s for s in sessions}


def plan_step(run, job):
    """Phase one on a server: one enumeration, then the selection (or the
    named session, or the caller's own)."""
    ctx = run.ctx
    if ctx.kind == OWN:
        job.targets = [(yield from _plan_own(run, job))]
        return
    if job.srv is None:
        # Made here, opened on a worker: a server given up while opening
        # still has its handle closed, when the open returns.
        job.srv = wtsapi.Server(job.server, connect=False)
        yield Call(job.srv.connect)
    sessions = yield Call(job.srv.sessions)
    job.read_at = time.monotonic()
    if ctx.kind == NAMED:
        targets = [(yield from _find_explicit(run, job, sessions))]
    else:
        targets = yield from _select(run, job, sessions)
    if ctx.warn is not None or ctx.idle is not None or ctx.kind == LIST \
            or ctx.lock_info or ctx.client_info:
        readable = [t for t in targets if t.session.user]
        gone = set((yield from read_times(run, job, readable)))
        narrowing = ctx.idle is not None or ctx.clients is not None or \
            ctx.locked
        targets = [t for t in targets if t not in gone and (
            t.result is not None or not narrowing
            or _still_wanted(ctx, t) is None)]
    job.targets = targets
    if ctx.busy is not None:
        yield from _processes(job)
        for t in targets:
            why = _busy(ctx, job, t)
            if why is not None and t.result is None:
                run.spare(t, why)


def _still_wanted(ctx, t, was=None):
    """Why a target read again no longer matches /idle (``was``: its idle
    time before), /client or /locked; None while it does."""
    if ctx.idle is not None and (t.idle is None or t.idle < ctx.idle):
        return Text("the session is no longer idle long enough (idle now "
                    "%(idle)s, was %(was)s)", idle=format_idle(t.idle) or "?",
                    was=format_idle(was) or "?")
    if ctx.clients is not None and not ctx.clients(t.client):
        return Text("its client is no longer one that /client selects")
    if ctx.locked and t.locked is not True:
        return Text("the session is no longer locked")
    return None


def _processes(job):
    """/busy and stuck sessions: every process on the server, one call,
    as session id -> image names (sorted, each once)."""
    procs = {}
    for p in (yield Call(job.srv.processes)):       # each name once, as
        procs.setdefault(p.session_id, {}).setdefault(  # Windows compares
            fold(p.name), p.name)
    job.procs = {sid: sorted(names.values(), key=fold) for sid, names in
                 procs.items()}


def _busy(ctx, job, t):
    """Why /busy spares a target, from the last process list; None: it
    does not.  A session whose processes this account cannot see (every
    session runs some) is never logged off blind."""
    images = job.procs.get(t.session.id)
    if not images:
        return Text("its processes cannot be read (only an administrator "
                    "of the server sees them), so /busy cannot tell")
    image = next((i for i in images if ctx.busy(i)), None)
    return None if image is None else Text("it runs %(image)s (/busy)",
                                           image=image)


def _plan_own(run, job):
    """logoff with no session: the caller's own, as WTS_CURRENT_SESSION."""
    own = run.own
    if own.id is None:
        raise own.error
    if own.id == 0:
        # A scheduled task as SYSTEM, a service, a WinRM or Salt command:
        # "my own session" there is the services session.
        raise Refused(Text("the current session is session 0, the services "
                           "session; it has no user to log off. Give a "
                           "session or a selection."))
    # Whose session it is, where a record shows it (/log, /fo).
    details = (yield from _own_details(run)) \
        if run.sinks or run.ctx.fo else None
    job.srv = wtsapi.Server()           # the local server: no handle
    session = wtsapi.Session(None, own.id, "", State.WTSActive,
                             details.user if details else "",
                             details.domain if details else "")
    return Target(None, session, run.ctx.action, own=True)


def _select(run, job, sessions):
    """Targets on one server: the selection over sessions with a user,
    never session 0, listeners, the console or the caller's own session.
    On this machine a selection needs to know which session is yours."""
    ctx, picked = run.ctx, []
    if job.local and run.own.id is None and ctx.kind != LIST:
        e = run.own.error
        raise Refused(Text("cannot tell which session is yours on this "
                           "machine (%(why)s); nothing is selected here",
                           why=Text("%(function)s: %(why)s",
                                    function=e.function,
                                    why=describe(e).message)),
                      e.winerror, e.function)
    unexcluded = ctx._replace(exclude=None)
    for s in sessions:
        pattern = ctx.exclude(s) if ctx.exclude is not None else None
        if pattern is not None:
            # Counted where the rest of the selection would take it.
            if selects(unexcluded, s):
                run.excluded[pattern] = run.excluded.get(pattern, 0) + 1
            continue
        if ctx.listing_all:
            own = False
            if s.user and s.id != 0 and s.id == run.own.id:
                own = (yield from is_own(run, job, s)) is True
            picked.append(Target(job.server, s, "list", own))
        # Where the caller's ID is unknown, a listing (it changes nothing)
        # takes every session the selection takes; an action asks is_own.
        elif selects(ctx, s) and (
                s.id != run.own.id and (run.own.id is not None
                                        or ctx.kind == LIST)
                or (yield from is_own(run, job, s)) is False):
            picked.append(Target(job.server, s, "list" if ctx.kind == LIST
                                 else ctx.action))
    return picked


def _find_explicit(run, job, sessions):
    """The session the command line names, under logoff.exe's rules."""
    wanted = run.ctx.session
    where = server_label(job.server)
    by_id = isinstance(wanted, int)
    found = [s for s in sessions if s.id == wanted] if by_id else [
        s for s in sessions if s.name and fold(s.name) == fold(wanted)]
    if not found:
        raise Refused(Text(
            "Session ID %(id)d was not found on %(server)s." if by_id else
            "Session %(name)s was not found on %(server)s.", id=wanted,
            name=wanted, server=where), wtsapi.ERROR_CTX_WINSTATION_NOT_FOUND)
    session = found[0]
    if session.id == 0:
        raise Refused(Text("Session 0 is the services session; it has no "
                           "user to log off."))
    if session.state == State.WTSListen:
        raise Refused(Text("Session %(id)d (%(name)s) is a listener, not a "
                           "user session; logging it off would reset the "
                           "listener.", id=session.id, name=session.name))
    if not by_id and session.state != State.WTSActive:
        raise Refused(Text("Session %(name)s (ID %(id)d) is %(state)s; a "
                           "session given by name must be active. Give its "
                           "ID to log it off.", name=session.name,
                           id=session.id,
                           state=state_word(session.state)))
    if run.ctx.action == "disconnect" and \
            session.state == State.WTSDisconnected:
        raise Refused(Text("Session %(id)d is already disconnected.",
                           id=session.id))
    own = (yield from is_own(run, job, session)) is True
    if _is_console(session) and not own:
        raise Refused(Text(
            "Session %(id)d is the console session; the console session "
            "cannot be disconnected." if run.ctx.action == "disconnect" else
            "Session %(id)d is the console session; users cannot be logged "
            "off from the console session.", id=session.id))
    return Target(job.server, session, run.ctx.action, own)


# --- Act: warn, wait, look again, log off ---------------------------------------

def _batches(items):
    for i in range(0, len(items), IN_FLIGHT):
        yield items[i:i + IN_FLIGHT]


def _issue(run, job, batch, action, call):
    """Intents for ``batch``, then its calls, IN_FLIGHT at once, each after
    its own intent is written; returns [(target, answer)] for the targets
    whose call went out (the answer: None, a value, or the exception).  A
    logoff whose intent took long to write (a slow share) goes out only
    after a fresh look."""
    try:
        written = yield Write([run.intent(t, action) for t in batch])
    except Stopped:
        written = None
    for t in batch[written or 0:]:
        t.seq = t.pending = None       # never written: the run is stopping
    if written is None:
        raise Stopped()
    batch = batch[:written]
    if action == run.ctx.action and run.ctx.kind != OWN and \
            time.monotonic() - job.read_at >= FRESH_SECONDS:
        batch = yield from _refresh(run, job, batch,
                                    run.ctx.warn is not None)
    for t in batch:
        t.issued = True
    try:
        answers = yield [call(t) for t in batch]
    except Stopped:
        for t in batch:
            t.issued = False
        raise
    except GivenUp as e:            # the calls that answered still count
        answers = e.answers
    return [(t, a) for t, a in zip(batch, answers) if a is not _NO_ANSWER]


def _sort_gone(run, job, failures, about, spare=True):
    """Per-session calls that failed.  2 or 7022 mean "perhaps gone": one
    fresh enumeration decides, a session no longer there (or no longer the
    same user's) ended and is spared (returned instead, without ``spare``);
    any other failure, or one still listed, fails."""
    maybe = [(t, e) for t, e in failures if not job.given_up
             and e.winerror in wtsapi.SESSION_GONE_CODES]
    for t, e in failures:
        if (t, e) not in maybe:
            run.failed(t, describe(e, job.server).about(about))
    listed, gone = ((yield from _listed(run, job)) if maybe else {}), []
    for t, e in maybe:
        if _same_user(listed.get(t.session.id), t.session):
            run.failed(t, describe(e, job.server).about(about))
        elif spare:
            run.spare(t, Text("the session has ended"))
        else:
            gone.append(t)
    return gone


def _send(run, job, targets, left, reminder=False):
    """The warning (or a reminder) to ``targets``, a batch at a time: its
    title, its text (%left% the time left) and a timeout that closes the
    box when the grace ends (0 would mean never).  A reminder that fails
    is reported; the logoff after the grace is decided as without it."""
    operator = run.trail.operator or _("your administrator")
    title = str(Text("Message from %(operator)s (%(left)s left)" if reminder
                     else "Message from %(operator)s", operator=operator,
                     left=seconds_label(left)))
    text = run.ctx.warn.replace("%left%", seconds_label(left))
    timeout = max(1, int(left + 0.999))
    for batch in _batches(targets):
        for t in batch:
            run.say(Text("Reminding %(who)s (%(left)s left)." if reminder
                         else "Warning %(who)s.", who=t.who(),
                         left=seconds_label(left)))
        sent = yield from _issue(
            run, job, batch, "remind" if reminder else "warn", lambda t: Call(
                job.srv.send_message, t.session.id, title, text, timeout,
                False))
        failures = []
        for t, answer in sent:
            t.issued = False
            if isinstance(answer, wtsapi.WTSError) and reminder:
                failure = describe(answer, job.server)
                run.outcome(t, FAILED, failure)
                run.complain(Text("could not remind %(who)s: %(why)s",
                                  who=t.who(),
                                  why=failure.screen(run.screen.hints)))
            elif isinstance(answer, wtsapi.WTSError):
                t.warned = False
                failures.append((t, answer))
            elif isinstance(answer, BaseException):
                raise answer
            else:
                t.warned = True
                run.outcome(t, "ok")
        yield from _sort_gone(run, job, failures, "could not warn: %(why)s")


def warn_step(run, job):
    """Send the warning to each active target; the others cannot read it
    (a message to a disconnected session reaches no one) and are noted."""
    active = []
    for t in job.targets:
        if t.result is not None:
            continue
        if t.session.state != State.WTSActive:
            t.warned = False
            t.note = Text("not warned: the session is %(state)s, and a "
                          "message cannot reach it",
                          state=state_word(t.session.state))
        else:
            active.append(t)
    yield from _send(run, job, active, run.ctx.grace)


def remind_step(run, job, left):
    """/remind: the warning again, to the warned sessions still active and
    still their user's (one enumeration), with the time left."""
    warned = [t for t in job.targets if t.result is None and t.warned]
    if not warned:
        return
    try:
        listed = yield from _listed(run, job)
    except wtsapi.WTSError as e:        # the logoffs after the grace decide
        return run.complain(Text("could not remind the sessions on "
                                 "%(server)s: %(why)s",
                                 server=server_label(job.server),
                                 why=describe(e, job.server).screen(
                                     run.screen.hints)))
    yield from _send(run, job, [
        t for t in warned if _same_user(listed.get(t.session.id), t.session)
        and listed[t.session.id].state == State.WTSActive], left, True)


def _spare_reason(run, job, t, now, then, times):
    """Why a target is not logged off after all, from a fresh snapshot
    (and, after a grace, its times then and now); None: it is."""
    ctx, before = run.ctx, t.session
    if now is None:
        return Text("the session has ended")
    if not _same_user(now, before):
        return Text("the session now belongs to %(who)s",
                    who=now.account or _("no user"))
    if then is not None and times is not None:
        if times.logon_ticks != then.logon_ticks:
            return Text("it is a new logon in the same session since it was "
                        "read (the user logged off and on again)")
        if before.state == State.WTSDisconnected and \
                times.disconnect_ticks != then.disconnect_ticks:
            return Text("it was reconnected since it was read")
        why = _still_wanted(ctx, t, then.idle) if ctx.kind == SELECT \
            else None
        if why is not None:
            return why
    if t.warned is False and t.note is not None and \
            now.state != before.state:
        return Text("it was %(then)s when the warnings went out and is "
                    "%(now)s now: it never saw the warning",
                    then=state_word(before.state), now=state_word(now.state))
    if ctx.kind == SELECT and not _takeable(now):
        return Text("it is now a session a selection never takes (%(what)s)",
                    what=now.name or state_word(now.state))
    if ctx.kind == NAMED and _is_console(now) and not t.own:
        # Connected to the console since it was named (tscon): the same
        # logon, refused as logoff.exe refuses the console session.
        return Text("it is now the console session, and the console "
                    "session cannot be disconnected" if ctx.action ==
                    "disconnect" else "it is now the console session, and "
                    "users cannot be logged off from the console session")
    if ctx.kind == SELECT and not selects(ctx, now):
        return Text("the session no longer matches (now %(state)s)",
                    state=state_word(now.state))
    return _busy(ctx, job, t) if ctx.busy is not None else None


def _refresh(run, job, targets, with_times=False):
    """Read the server again and keep only the targets that are still the
    same logon and still match; after a grace (``with_times``) their times
    are read again too, to tell a new logon or a reconnect."""
    listed = yield from _listed(run, job)
    job.read_at = time.monotonic()
    if run.ctx.busy is not None:        # never older than the snapshot
        yield from _processes(job)
    then = {t: t.times for t in targets}
    gone = set((yield from read_times(run, job, again=True, targets=[
        t for t in targets if _same_user(listed.get(t.session.id),
                                         t.session)]))) if with_times else ()
    kept = []
    for t in targets:
        if t.result is not None:            # still listed, unreadable
            continue
        now = None if t in gone else listed.get(t.session.id)
        why = _spare_reason(run, job, t, now, then[t],
                            t.times if with_times else None)
        if why is None:
            t.session = now
            kept.append(t)
        else:
            run.spare(t, why)
    return kept


def _reread_times(run, job, pending):
    """/idle, /locked: read the times again for the next targets to act
    on, a batch at a time, so a long run on a slow link reads each session
    again once, not once per refresh."""
    batch = [t for t in pending[:IN_FLIGHT]
             if time.monotonic() - t.read_at >= FRESH_SECONDS]
    before = {id(t): t.idle for t in batch}
    gone = yield from read_times(run, job, batch, again=True)
    for t in batch:
        why = Text("the session has ended or changed hands") if t in gone \
            else _still_wanted(run.ctx, t, before[id(t)])
        if why is not None and t.result is None:
            run.spare(t, why)
    return [t for t in pending if t.result is None]


def act_step(run, job):
    """Log off the planned targets on one server, IN_FLIGHT at once, each
    from a snapshot at most FRESH_SECONDS old (after a grace period, a new
    one with fresh times), then, with /wait, wait for them to go."""
    ctx = run.ctx
    pending = [t for t in job.targets if t.result is None]
    issued, recheck = [], ctx.warn is not None
    while pending:
        if ctx.kind != OWN and (
                recheck or time.monotonic() - job.read_at >= FRESH_SECONDS):
            # After a grace, every look compares the logon and disconnect
            # times too: each time with those of the look before.
            pending = yield from _refresh(run, job, pending,
                                          ctx.warn is not None)
            recheck = False
        if (ctx.idle is not None or ctx.locked) and pending:
            pending = yield from _reread_times(run, job, pending)
        batch, pending = pending[:IN_FLIGHT], pending[IN_FLIGHT:]
        disconnect = ctx.action == "disconnect"
        for t in batch:
            run.say(Text(
                ("Disconnecting session ID %(id)d, the current session."
                 if disconnect else "Logging off session ID %(id)d, the "
                 "current session.") if ctx.kind == OWN else
                "Disconnecting %(who)s." if disconnect else
                "Logging off %(who)s.", id=t.session.id, who=t.who()))
        sent = yield from _issue(run, job, batch, ctx.action, lambda t: Call(
            job.srv.disconnect if disconnect else job.srv.logoff,
            wtsapi.WTS_CURRENT_SESSION if ctx.kind == OWN
            else t.session.id, False))
        failures = []
        for t, answer in sent:
            if isinstance(answer, wtsapi.WTSError):
                t.issued = False
                failures.append((t, answer))
            elif isinstance(answer, BaseException):
                raise answer
            elif ctx.wait is None or ctx.kind == OWN:
                run.logged_off(t)
            else:
                issued.append(t)
        yield from _sort_gone(run, job, failures, "%(why)s")
    if issued:
        yield from _wait_gone(run, job, issued)


def _wait_gone(run, job, issued):
    """/wait: poll, one enumeration a round, until the sessions are gone or
    the limit passes.  WTSLogoffSession's own bWait is never used: it is
    reported to block forever, even after the session has gone."""
    end = time.monotonic() + run.ctx.wait
    pause, disconnect = 0.1, run.ctx.action == "disconnect"
    while True:
        listed = yield from _listed(run, job)
        for t in [t for t in issued
                  if not _same_user(listed.get(t.session.id), t.session)
                  or disconnect and listed[t.session.id].state ==
                  State.WTSDisconnected]:
            issued.remove(t)
            # Disconnected, then ended (by a policy that ends disconnected
            # sessions, or its user): the record says so.
            run.logged_off(t, Text("the session has ended since") if
                           disconnect and not _same_user(
                               listed.get(t.session.id), t.session)
                           else None)
        left = end - time.monotonic()
        if not issued or left <= 0:
            break
        yield Pause(min(pause, left))
        pause = min(pause * 2, 2.0)
    if issued and not disconnect:
        try:        # what holds them up: one process list for them all
            yield from _processes(job)
        except wtsapi.WTSError:
            job.procs = {}
    limit = seconds_label(run.ctx.wait)
    for t in issued:
        images = ", ".join((job.procs or {}).get(t.session.id, ()))
        run.failed(t, Failure(wtsapi.ERROR_TIMEOUT, Text(
            "the disconnect did not finish within %(limit)s" if disconnect
            else "the logoff did not finish within %(limit)s; still running "
            "in it: %(images)s" if images else
            "the logoff did not finish within %(limit)s", limit=limit,
            images=images), show_code=False))


# --- The coordinator: one thread owns the run -----------------------------------

class Run:
    """The run's state, owned by the coordinating thread: the plan (its
    jobs), each target's result, the trail and the screen."""

    def __init__(self, ctx, screen):
        self.ctx, self.screen = ctx, screen
        self.jobs = [Job(s) for s in (ctx.servers or [None])]
        self.own, self.trail = Own(), Trail(None)
        self.sinks = self.driver = self.signal = None
        self.error = None             # Failure: the run's own, if any
        self.reason = None            # Text: why nothing more is changed
        self.shown = self.stopping = False
        self.excluded, self.started = {}, time.monotonic()
        self.reported = False         # the summary is being written

    def say(self, text):    # never on stdout when it holds a document
        if self.ctx.verbose:
            (self.screen.err if self.ctx.fo in ("list", "csv")
             else self.screen.out)(str(text))

    def complain(self, text):
        if not self.ctx.json:
            self.screen.err("logoff: %s" % text)

    def fail(self, failure, reason, show=True):
        """The run as a whole failed or stops: nothing more is changed."""
        self.stopping = True
        if self.error is None:
            self.error, self.reason, self.shown = failure, reason, show
            if show:
                self.complain(failure.screen(self.screen.hints))

    def audit_failed(self, e):
        if e is not None:
            self.fail(Failure(None, e.sink.describe(e.args[0])),
                      e.sink.stopped)

    def targets(self):
        return [t for job in self.jobs for t in job.targets]

    def note(self, **fields):
        if self.sinks is not None:
            self.driver.note([self.trail.record(**fields)])

    def intent(self, t, action):
        s, t.pending = t.session, action
        record = self.trail.record(phase="intent", server=t.server,
                                   session=s.id, user=s.user,
                                   domain=s.domain, action=action)
        t.seq = record["seq"]
        return record

    def outcome(self, t, result, failure=None, message=None):
        """The outcome of ``t``'s pending action (logoff by default); none
        for a target never begun and not attempted."""
        action, seq, s = t.pending or t.action, t.seq, t.session
        t.pending = t.seq = None
        if seq is None and result == SKIPPED:
            return
        message = failure.message if failure is not None else (
            message or (t.note if action == t.action else None))
        self.note(seq=seq, phase="outcome", server=t.server, session=s.id,
                  user=s.user, domain=s.domain, action=action, result=result,
                  error=failure.code if failure else None,
                  message=message.en() if message else None, warned=t.warned)

    def settle(self, t, result, failure=None, message=None):
        """A target's final result, once, with its audit line."""
        if t.result is not None:
            return False
        t.result = result
        if failure is not None:
            t.error, message = failure.code, failure.message
        t.message = message
        # Nothing was done to those; a preview audits nothing it spares.
        if result not in (LISTED, WOULD, WOULD_DISC) and not self.ctx.preview:
            self.outcome(t, result, failure, message)
        return True

    def spare(self, t, why):
        if self.settle(t, SPARED, message=why) and not self.ctx.preview:
            self.say(Text("Sparing %(who)s: %(why)s.", who=t.who(), why=why))

    def failed(self, t, failure):
        warning = t.pending == "warn"
        if self.settle(t, FAILED, failure):
            self.complain(Text(
                "could not warn %(who)s: %(why)s" if warning else
                "could not log off %(who)s: %(why)s" if t.action == "logoff"
                else "could not disconnect %(who)s: %(why)s"
                if t.action == "disconnect" else "%(who)s: %(why)s",
                who=t.who(), why=failure.screen(self.screen.hints)))

    def logged_off(self, t, message=None):
        if self.settle(t, self.ctx.done, message=message) and \
                self.ctx.kind != OWN:
            self.say(Text(
                "Session ID %(id)d on %(server)s has been disconnected."
                if self.ctx.action == "disconnect" else "Session ID %(id)d "
                "on %(server)s has been logged off.", id=t.session.id,
                server=server_label(t.server)))

    def late(self, job, call, value):
        """A change answered after its server was given up: its outcome
        stays unknown here, but /log and /eventlog say how it ended (not
        once the summary is being written: it is the last record)."""
        action = _LATE.get(getattr(call.fn, "__name__", None))
        if action is None or self.reported:
            return
        sid = call.args[0]
        s = next((t.session for t in job.targets if t.session.id == sid),
                 None)
        failure = describe(value, job.server) if isinstance(
            value, BaseException) else None
        result = failure.message if failure else Text("it succeeded")
        text = Text("%(action)s answered after the server was given up: "
                    "%(result)s", action=call.fn.__name__, result=result)
        self.note(phase="late", server=job.server, session=sid,
                  user=s.user if s else None, domain=s.domain if s else None,
                  action=action, result=FAILED if failure else "ok",
                  error=failure.code if failure else None, message=text.en())
        self.complain(Text("%(who)s: %(why)s", who=Text(
            "session %(id)d on %(server)s", id=sid,
            server=server_label(job.server)), why=text))

    def server_failed(self, job, failure):
        if job.failure is None:
            job.failure = failure
            self.note(phase="server", server=job.server, result=FAILED,
                      error=failure.code, message=failure.en())

    def close_out(self, job):
        """Every open target of the job gets its result: a logoff that went
        out has an unknown outcome; anything else was not attempted (a
        warning whose fate is unknown may not have been read, so its
        session is not logged off)."""
        why = self.why_stopped(job)
        for t in job.targets:
            if t.result is not None:
                continue
            if t.pending == t.action and t.issued:
                self.settle(t, UNKNOWN, Failure(wtsapi.ERROR_TIMEOUT, Text(
                    "issued; the outcome is unknown: %(why)s", why=why)))
                continue
            if t.pending in ("warn", "remind") and t.issued:
                self.outcome(t, UNKNOWN, message=Text(
                    "issued; the outcome is unknown: %(why)s", why=why))
            timed_out = job.failure is not None and \
                job.failure.code == wtsapi.ERROR_TIMEOUT
            self.settle(t, SKIPPED, Failure(
                wtsapi.ERROR_TIMEOUT if timed_out else None,
                Text("not attempted: %(why)s", why=why)))

    def why_stopped(self, job):
        if job.failure is not None and job.failure.code != \
                wtsapi.ERROR_TIMEOUT:
            return job.failure.message
        if self.reason is None and self.signal is not None:
            return Text("the run was interrupted")
        return self.reason or Text("the server ran out of time")


# The changes whose late answers are recorded, as the record's action.
_LATE = {"logoff": "logoff", "disconnect": "disconnect",
         "send_message": "message"}


def _worker(calls, answers):
    """The only code on a worker thread: a call, then its answer, until
    the run is over (None)."""
    for ticket, fn, args in iter(calls.get, None):
        try:
            answer = fn(*args)
        except BaseException as e:          # raised in the step, at its yield
            answer = e
        answers.put((ticket, answer))
        del ticket, fn, args, answer


def _sink_loop(sinks, inbox, answers):
    """The only code on the sink thread: records written in the order the
    coordinator numbered them; a write waited for is acknowledged, and the
    first failure of any is reported."""
    told = False
    for ticket, records in iter(inbox.get, None):
        written, error = sinks.write(records)
        if ticket is not None or error is not None and not told:
            told = told or error is not None
            answers.put((ticket or _SINK, (written, error)))


# The sink's own news; a signal came; a handle was closed.
_SINK, _WAKE, _CLOSED = object(), object(), object()


class _Ticket:
    """A call or a write that a task waits for (a write: its ``seqs``)."""
    __slots__ = ("task", "index", "deadline", "sent", "done", "seqs")

    def __init__(self, task, index, deadline, seqs=()):
        self.task, self.index, self.deadline = task, index, deadline
        self.sent, self.done, self.seqs = time.monotonic(), False, seqs


class _Task:
    """A step in progress on one job."""
    __slots__ = ("job", "gen", "calls", "results", "next", "left", "batch",
                 "flying", "wake", "write", "dead")

    def __init__(self, job, gen):
        self.job, self.gen, self.flying = job, gen, set()
        self.calls, self.results, self.batch, self.next, self.left = \
            [], [], False, 0, 0
        self.wake = self.write = None
        self.dead = False


class Driver:
    """Drives the steps of every job: at most /parallel jobs at once and
    IN_FLIGHT calls per job.  With ``threads``, daemon workers only call
    Windows and one sink thread only writes the trail; a job whose call has
    not answered within /timeout is given up (its step closed, its open
    targets closed out, a late answer never acted on); hung calls keep a
    thread each: no new server is contacted once MAX_HUNG of them, counting
    a call for each server being worked on, could hang.  Without
    (the drop-in forms), each call is made on this thread in turn, as
    logoff.exe makes it: no thread, no /timeout."""

    def __init__(self, run, threads):
        self.run, self.threads = run, threads
        self.workers = self.busy = self.hung = 0
        self.live, self.soft, self.told, self.label = {}, False, False, None
        self.sink_in = None
        # Intents on their way to the sinks, and the outcomes that wait for
        # them (a step cut short or given up while its intents were being
        # written): by seq.  An outcome goes out only after its intent, and
        # not at all for an intent no sink took.
        self.writing, self.held = set(), {}
        if threads:             # the fan-out's leaf: the drop-in forms
            import queue        # import neither
            import threading
            self._thread = threading.Thread
            self._empty = queue.Empty
            self.calls, self.answers = queue.SimpleQueue(), queue.SimpleQueue()
            if run.sinks is not None:
                self.sink_in = queue.SimpleQueue()
                self.sink = self._thread(target=_sink_loop, daemon=True,
                                             args=(run.sinks, self.sink_in,
                                                   self.answers))
                self.sink.start()

    def wake(self):
        if self.threads:
            self.answers.put((_WAKE, None))     # SimpleQueue.put is reentrant

    def phase(self, jobs, step, label=None, soft=False, until=None):
        """Run ``step`` on each job; ``until``: a monotonic time at which
        the steps still running are cut short (see ``_cut``)."""
        try:
            self._drive(jobs, step, label, soft, until)
        except BaseException:
            # A bug of ours: nothing more happens on any server.
            self.run.stopping = True
            for task in list(self.live.values()):
                task.dead = True
                task.gen.close()
            self.live = {}
            raise
        finally:
            self.run.screen.progress(label, self.run, force=True)

    def _drive(self, jobs, step, label, soft, until):
        run, self.label = self.run, label
        waiting, self.live, self.soft = list(reversed(jobs)), {}, soft
        parallel, stop_at = run.ctx.parallel if self.threads else 1, None
        while waiting or self.live:
            if run.stopping:
                # Calls in flight may answer for a moment; then given up.
                waiting, now = [], time.monotonic()
                if stop_at is None:
                    stop_at = now + INTERRUPT_BOUND
                    for task in list(self.live.values()):
                        if task.wake is not None:
                            self._resume(task, error=Stopped())
                if now >= stop_at or not any(
                        t.flying or t.write for t in self.live.values()):
                    for task in list(self.live.values()):
                        # A reminder is no reason to give a server up:
                        # its sessions are spared with the grace.
                        if until is None:
                            self._drop(task, timed_out=False)
                        else:
                            self._cut(task, run.why_stopped(task.job))
                    return
            if until is not None and not run.stopping and \
                    time.monotonic() >= until:
                for task in list(self.live.values()):
                    self._cut(task, Text("the grace period ended"))
                return
            while waiting and len(self.live) < parallel:
                job = waiting.pop()
                if job.srv is None and self.hung and \
                        self.hung + len(self.live) >= MAX_HUNG:
                    run.server_failed(job, Failure(None, Text(
                        "not attempted: %(n)d calls to servers that were "
                        "given up are still hung", n=self.hung)))
                    continue
                self.live[job] = task = _Task(job, step(run, job))
                self._resume(task)
            if not self.live:
                continue
            events = [t for task in self.live.values() for t in
                      [task.wake, stop_at, until] +
                      [k.deadline for k in task.flying] if t is not None]
            self._pump(min(events, default=time.monotonic() + 0.25))
            self._expire()
            run.screen.progress(label, run)

    def _expire(self):
        now = time.monotonic()
        for task in list(self.live.values()):
            if any(k.deadline <= now for k in task.flying):
                self._drop(task, timed_out=True)
            elif task.wake is not None and task.wake <= now:
                task.wake = None
                self._resume(task)
        if self.run.ctx.log and not self.told and any(
                t.write is not None and now - t.write.sent > 1.0
                for t in self.live.values()):
            self.told = True
            self.run.complain(Text(
                "waiting for the log file %(file)s (another run may be "
                "writing to it, or its share is slow)...",
                file=self.run.ctx.log))

    def _pump(self, until):
        """Take the answers that came, waiting for the first until ``until``
        (a quarter second at most: signals are seen between)."""
        wait = max(0.0, min(until - time.monotonic(), 0.25))
        if not self.threads:
            return time.sleep(min(wait, 0.1))
        try:
            self._answer(*self.answers.get(timeout=wait))
            for _ in range(999):
                self._answer(*self.answers.get_nowait())
        except self._empty:
            pass

    def _answer(self, ticket, value):
        if ticket is _WAKE or ticket is _CLOSED:
            self.busy -= ticket is _CLOSED
            return
        if ticket is _SINK or ticket.index is None:
            written, error = value
            self.run.audit_failed(error)
            if ticket is not _SINK:
                ticket.done, ticket.task.write = True, None
                for n, seq in enumerate(ticket.seqs):
                    self.writing.discard(seq)
                    held = self.held.pop(seq, ())
                    if n < written and held:
                        self.sink_in.put((None, held))
                if not ticket.task.dead:
                    self._resume(ticket.task, written)
            return
        self.busy -= 1
        ticket.done, task = True, ticket.task
        if task.dead:       # a given-up server: recorded, never acted on
            self.hung -= 1
            if isinstance(value, wtsapi.Server):    # opened too late
                self.busy += 1
                self.calls.put((_CLOSED, value.close, ()))
            elif task.job is not None and task.job.given_up:
                self.run.late(task.job, task.calls[ticket.index], value)
            return
        task.flying.discard(ticket)
        task.results[ticket.index] = value
        task.left -= 1
        self._feed(task)

    def _resume(self, task, value=None, error=None):
        """Resume a step with an answer (or raise ``error`` at its yield)
        and start what it asks for next.  A WTSError or a refusal it lets
        through is its server's failure; anything else is a bug and ends
        the run."""
        run, job = self.run, task.job
        while True:
            try:
                req = task.gen.throw(error) if error is not None else \
                    task.gen.send(value)
            except (StopIteration, Stopped):
                req = None
            except (wtsapi.WTSError, Refused) as e:
                run.server_failed(job, describe(e, job.server))
                req = None
            value = error = None
            if req is None:
                task.dead, job.done = True, self.label
                del self.live[job]
                return
            if run.stopping:
                error = Stopped()
                continue
            if isinstance(req, Write):
                if self.sink_in is None:
                    value = self._write(req.records)
                    continue
                task.write = _Ticket(task, None, None, [
                    r["seq"] for r in req.records])
                self.writing.update(task.write.seqs)
                self.sink_in.put((task.write, req.records))
                return
            if isinstance(req, Pause):
                task.wake = time.monotonic() + req.seconds
                return
            task.batch = isinstance(req, list)
            task.calls = req if task.batch else [req]
            task.results = [_NO_ANSWER] * len(task.calls)
            task.next, task.left = 0, len(task.calls)
            if task.left:
                return self._feed(task)
            value = []

    def _feed(self, task):
        """Start the task's next calls, IN_FLIGHT at once; resume it once
        every call of its request has answered."""
        while task.next < len(task.calls) and len(task.flying) < IN_FLIGHT:
            i, task.next = task.next, task.next + 1
            call = task.calls[i]
            if not self.threads:            # inline: the call, here, now
                try:
                    task.results[i] = call.fn(*call.args)
                except Exception as e:
                    task.results[i] = e
                task.left -= 1
                continue
            if self.busy >= self.workers:
                try:
                    self._thread(target=_worker, daemon=True, args=(
                        self.calls, self.answers)).start()
                except RuntimeError as e:   # no thread: this server's loss
                    task.results[i] = Refused(Text(
                        "cannot start a thread for this server: %(why)s",
                        why=str(e)))
                    task.left -= 1
                    continue
                self.workers += 1
            ticket = _Ticket(task, i, time.monotonic() + self.run.ctx.timeout
                             + call.slack)
            task.flying.add(ticket)
            self.busy += 1
            self.calls.put((ticket, call.fn, call.args))
        if task.left == 0:
            answer = task.results if task.batch else task.results[0]
            if not task.batch and isinstance(answer, BaseException):
                return self._resume(task, error=answer)
            self._resume(task, answer)

    def _drop(self, task, timed_out):
        """Give a job up: its step ends where it is, its calls in flight
        are left to hang (their answers never acted on), and its handle
        closes when they return."""
        run, job = self.run, task.job
        task.dead, job.done = True, self.label
        self.hung += len(task.flying)
        del self.live[job]
        if self.soft:
            return task.gen.close()
        job.given_up = True
        if timed_out:
            run.server_failed(job, Failure(wtsapi.ERROR_TIMEOUT, Text(
                "no answer within %(limit)s; the server was given up",
                limit=seconds_label(run.ctx.timeout))))
        if task.flying:             # what answered before is settled
            try:
                req = task.gen.throw(GivenUp(task.results))
                if isinstance(req, Write):      # never sent: no intent
                    seqs = {r["seq"] for r in req.records}
                    for t in job.targets:
                        if t.seq in seqs:
                            t.seq = t.pending = None
            except (StopIteration, Stopped, GivenUp, wtsapi.WTSError,
                    Refused):
                pass
        task.gen.close()
        run.close_out(job)
        if job.srv is not None:
            job.srv.close()

    def _cut(self, task, why):
        """A reminder round still running when the grace ends or the run
        stops: its step ends there, its server is not given up (a reminder
        is no reason to hold up the logoffs, here or elsewhere), and its
        calls in flight are left to answer unheard.  A reminder that went
        out has an unknown outcome (``why``); one whose intent was written
        and that did not go out was not attempted."""
        job = task.job
        task.dead, job.done = True, self.label
        self.hung += len(task.flying)
        del self.live[job]
        task.gen.close()
        for t in job.targets:
            if t.pending is not None and t.result is None:
                self.run.outcome(t, UNKNOWN if t.issued else SKIPPED,
                                 message=Text(
                                     "issued; the outcome is unknown: "
                                     "%(why)s" if t.issued else
                                     "not attempted: %(why)s", why=why))
                t.issued = False

    def _write(self, records):
        if self.run.sinks is None:
            return len(records)
        written, error = self.run.sinks.write(records)
        self.run.audit_failed(error)
        return written

    def note(self, records):
        if self.sink_in is None:
            return self._write(records)
        for record in records:
            if record["seq"] in self.writing:
                self.held.setdefault(record["seq"], []).append(record)
            else:
                self.sink_in.put((None, [record]))

    def flush(self, records):
        """Write ``records`` (the summary: the last) once every intent on
        its way is written and its outcomes with it; wait until they are."""
        if self.sink_in is None:
            return self._write(records)
        while self.writing:
            self._pump(time.monotonic() + 0.25)
        ticket = _Ticket(_Task(None, None), None, None)
        ticket.task.dead = True
        self.sink_in.put((ticket, records))
        while not ticket.done:
            self._pump(time.monotonic() + 0.25)

    def wait(self, seconds):
        """The grace period: answers and signals are still taken."""
        end = time.monotonic() + seconds
        while not self.run.stopping and time.monotonic() < end:
            self._pump(end)
        return not self.run.stopping

    def release(self, servers):
        """Close the handles on workers, at once (on a remote server a
        close may be a round trip), waiting a moment for them: on as many
        workers as the run may have had calls in flight, up to CLOSERS
        (or /parallel, if more)."""
        parallel = self.run.ctx.parallel
        most = max(parallel, min(parallel * IN_FLIGHT, CLOSERS))
        for srv in servers:
            if not self.threads:
                srv.close()
                continue
            if self.busy >= self.workers and self.workers - self.hung < most:
                try:
                    self._thread(target=_worker, daemon=True, args=(
                        self.calls, self.answers)).start()
                    self.workers += 1
                except RuntimeError:
                    pass                # the workers there take it in turn
            self.busy += 1
            self.calls.put((_CLOSED, srv.close, ()))
        end = time.monotonic() + INTERRUPT_BOUND
        while self.threads and self.busy > self.hung and \
                time.monotonic() < end:
            self._pump(end)

    def close(self):
        """The workers end once their call returns (a hung one when it
        does); the sink ends once every record is written."""
        for _ in range(self.workers if self.threads else 0):
            self.calls.put(None)
        if self.sink_in is not None:
            self.sink_in.put(None)
            self.sink.join()


def _addresses(name):
    """On a worker: the addresses ``name`` resolves to, asked once per
    family (glibc's parallel A and AAAA queries time out behind some
    NATs and firewalls); none where it does not resolve."""
    import socket
    found = set()
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            found.update(a[4][0] for a in socket.getaddrinfo(name, None,
                                                             family))
        except OSError:
            pass
    return sorted(found)


def resolve_step(run, job):
    """The addresses a server name stands for ("LOCAL" for this machine).
    Names a replacement library serves (WTSAPI32_DLL) are not hosts and
    are not looked up."""
    job.names = []          # unless it answers in time: a host of its own
    if job.local or _is_loopback(job.server):
        job.names = ["LOCAL"]
    elif not wtsapi.replaced():
        job.names = yield Call(_addresses, job.server)


def _family(address):
    return "local" if address == "LOCAL" else "v6" if ":" in address \
        else "v4"


def merge_hosts(run, mine):
    """One host given under several names is one job.  Names are one host
    when every address they resolve to is this machine's, or when they
    agree: the same addresses in every family both resolve in (a host's
    name may add IPv6 to the IPv4 address it is also given by), and so on
    through the names that agree with them.  Where two of those disagree
    (a family's addresses differ: a DNS round-robin name and each of its
    hosts, two hosts behind one address), none of them is merged: a merge
    could leave a host out, while a host worked on twice finds its
    sessions gone the second time.  The first name given stays."""
    by_found = {}                   # each resolution, with its names' jobs
    for job in run.jobs:
        own = job.names and all(a == "LOCAL" or a in mine or _is_loopback(a)
                                for a in job.names)
        by_found.setdefault(frozenset(["LOCAL"] if own else job.names),
                            []).append(job)
    families = {found: {f: {a for a in found if _family(a) == f}
                        for f in map(_family, found)}
                for found in by_found if found}

    def agree(x, y):
        return all(families[y].get(f, a) == a
                   for f, a in families[x].items())
    group, holders = {x: {x} for x in families}, {}
    for x in families:
        for a in x:
            holders.setdefault(a, []).append(x)
    for alike in holders.values():      # more is a pool: never merged
        for i, x in enumerate(alike if len(alike) <= MAX_ALIASES else ()):
            for y in alike[i + 1:]:
                if group[x] is not group[y] and agree(x, y):
                    small, big = sorted((group[x], group[y]), key=len)
                    big |= small
                    for z in small:
                        group[z] = big
    order, merged, head = {j: n for n, j in enumerate(run.jobs)}, {}, {}
    for found, jobs in by_found.items():
        if not found:                       # no address: each alone
            head.update((job, job) for job in jobs)
            continue
        together = group[found]
        if id(together) not in merged:      # a group whose names all agree
            merged[id(together)] = len(together) <= MAX_ALIASES and all(
                agree(x, y) for x in together for y in together)
        first = min((by_found[x][0] for x in together), key=order.get) \
            if merged[id(together)] else jobs[0]
        head.update((job, first) for job in jobs)
    local, kept = by_found.get(frozenset(["LOCAL"]), [None])[0], []
    for job in run.jobs:
        if head[job] is job:
            kept.append(job)
            job.names, job.local = [job.server], job.local or job is local
        else:
            head[job].names.append(job.server)
    for job in kept:        # on stderr with /json too: never unsaid
        if len(job.names) > 1:
            run.screen.err("logoff: %s" % Text(
                "%(names)s are one host; it is worked on once, under the "
                "name %(name)s", names=", ".join(job.names),
                name=job.server))
    run.jobs = kept


def execute(run):
    """Plan on every server, then act on the plan."""
    ctx, drive = run.ctx, run.driver.phase
    drive([Job(None)], own_step, soft=True)
    if len(run.jobs) > 1:
        me = Job(None)              # this machine's own addresses
        me.server, me.local = _own_names()[0], False
        drive(run.jobs + [me], resolve_step, soft=True)
        merge_hosts(run, set(me.names) - {"LOCAL"})
    try:
        drive(run.jobs, plan_step, "plan")
        for pattern, n in run.excluded.items():
            run.say(Text("Excluded %(n)d session(s) by pattern %(pattern)s.",
                         n=n, pattern=pattern))
        if ctx.kind == LIST:
            for t in run.targets():
                run.settle(t, LISTED)
        elif not run.stopping and _check_max(run):
            if ctx.preview:
                for t in run.targets():
                    run.settle(t, ctx.would)
                return
            if ctx.warn is not None:
                drive(_live(run), warn_step, "warn")
                _grace(run)
            drive(_live(run), act_step, "act")
    finally:
        for job in run.jobs:
            run.close_out(job)
        run.driver.release([j.srv for j in run.jobs
                            if j.srv is not None and not j.given_up])


def _live(run):
    return [j for j in run.jobs if j.failure is None and not j.given_up]


def _grace(run):
    """Wait the grace period, with a reminder every /remind; an interrupt
    spares everyone."""
    waiting = [t for t in run.targets() if t.result is None]
    if not waiting:
        return
    ctx = run.ctx
    run.say(Text("Waiting %(grace)s before disconnecting %(n)d session(s)."
                 if ctx.action == "disconnect" else "Waiting %(grace)s "
                 "before logging off %(n)d session(s).",
                 grace=seconds_label(ctx.grace), n=len(waiting)))
    end = time.monotonic() + ctx.grace
    while True:
        left = end - time.monotonic()
        if not run.driver.wait(min(left, ctx.remind or left)):
            break
        left = round(end - time.monotonic())
        if ctx.remind is None or left < 1:
            return
        run.driver.phase(_live(run), lambda run, job: remind_step(
            run, job, left), "remind", until=end)
    if run.signal is None:
        return
    for t in waiting:
        run.settle(t, SPARED, message=Text("interrupted during the grace "
                                           "period"))
    run.fail(Failure(None, Text("interrupted during the grace period: no "
                                "one was logged off.")),
             Text("the run was interrupted"))


def _check_max(run):
    """/max, a guard rail for scheduled tasks: when the plan holds more
    sessions in all, nothing changes on any server."""
    planned = [t for t in run.targets() if t.result != SPARED]  # /busy
    if run.ctx.max is None or len(planned) <= run.ctx.max:
        return True
    limit = Text("the plan holds %(n)d sessions, more than /max:%(max)d",
                 n=len(planned), max=run.ctx.max)
    run.fail(Failure(None, Text("%(why)s; nothing was changed.", why=limit)),
             limit)
    return False


# --- Report ------------------------------------------------------------------------

class Console:
    """stdout or stderr, written by one thread.  What its encoding cannot
    hold becomes '?', alike on both.  A failed write (a closed pipe, a full
    disk, no stream under pythonw.exe) drops the stream for the rest of
    the run: output is never a reason to stop logging off or auditing."""

    def __init__(self, name):
        self.name, self.dead = name, False

    def stream(self):
        return None if self.dead else getattr(sys, self.name, None)

    def isatty(self):
        try:
            return bool(self.stream() is not None and self.stream().isatty())
        except (OSError, ValueError, AttributeError):
            return False

    def write(self, text):
        s = self.stream()
        if s is None:
            return
        try:
            if not text.isascii():
                enc = getattr(s, "encoding", None) or "utf-8"
                text = text.encode(enc, "replace").decode(enc, "replace")
            s.write(text)
            s.flush()
        except (OSError, ValueError, AttributeError, UnicodeError,
                LookupError):
            self.dead = True
            # Python flushes sys.stdout once more at exit: point a broken
            # descriptor at the null device so that flush cannot fail.
            try:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, s.fileno())
                os.close(null)
            except (OSError, ValueError, AttributeError):
                pass


class Screen:
    """stdout and stderr.  In a run with workers one printer thread writes
    them from a queue, so a paused console or pipe never holds up the
    coordinator.  While several servers are worked on, a console's stderr
    shows one updating progress line."""

    def __init__(self):
        self.consoles = {"out": Console("stdout"), "err": Console("stderr")}
        self.queue, self.hints = None, set()     # hints: each shown once
        self.progress_on, self.shown, self.next_progress = False, "", 0.0

    def start(self, progress):
        import queue
        import threading
        self.progress_on = progress and self.consoles["err"].isatty()
        self.queue = queue.SimpleQueue()
        self.printer = threading.Thread(target=self._print, daemon=True)
        self.printer.start()

    def _put(self, where, text):
        if self.queue is None:
            self.consoles[where].write(text)
        else:
            self.queue.put((where, text))

    def out(self, line):
        self._clear()
        self._put("out", line + "\n")

    def err(self, line):
        self._clear()
        self._put("err", line + "\n")

    def progress(self, label, run, force=False):
        now = time.monotonic()
        if not self.progress_on or label is None or \
                now < self.next_progress and not force:
            return
        self.next_progress, jobs, targets = now + 0.25, run.jobs, run.targets()
        done = sum(1 for j in jobs if j.failure is not None or j.given_up or
                   j.done == label)
        counts = dict(done=done, all=len(jobs), off=sum(
            1 for t in targets if t.result in (DONE, DISCONNECTED)),
            failed=sum(1 for t in targets if t.result in _FAILED_RESULTS)
            + sum(1 for j in jobs if j.failure is not None))
        text = str(Text(
            "reading servers %(done)d/%(all)d" if label == "plan" else
            "servers %(done)d/%(all)d, %(off)d disconnected, %(failed)d "
            "failed" if run.ctx.action == "disconnect" else
            "servers %(done)d/%(all)d, %(off)d logged off, %(failed)d "
            "failed", **counts))
        if text != self.shown:
            self._put("err", "\r%s%s" % (text, " " * max(
                0, len(self.shown) - len(text))))
            self.shown = text

    def pace(self, ahead=2):
        """Wait while more than ``ahead`` texts wait for the printer, so
        that a long listing is never held whole in memory.  Only the
        report paces itself: by then no server is being worked on."""
        while self.queue is not None and self.queue.qsize() > ahead:
            time.sleep(0.001)

    def _clear(self):
        if self.shown:
            self._put("err", "\r%s\r" % (" " * len(self.shown)))
            self.shown = ""

    def _print(self):
        """The printer thread: what is queued, in order; of several
        progress lines waiting, only the last."""
        for item in iter(self.queue.get, None):
            items = [item]
            while items[-1] is not None and not self.queue.empty():
                items.append(self.queue.get())
            for i, item in enumerate(items):
                if item is None:
                    return
                if not (_is_progress(item) and any(
                        t is not None and _is_progress(t)
                        for t in items[i + 1:])):
                    self.consoles[item[0]].write(item[1])

    def close(self):
        """The rest of the output is written out."""
        self._clear()
        if self.queue is not None:
            self.queue.put(None)
            self.printer.join()
            self.queue = None


def _is_progress(item):
    """A progress line: it starts with CR and is not the CR that clears."""
    return item[1].startswith("\r") and not item[1].endswith("\r")


def tally(run):
    """Each result's count, the warned sessions and the failed servers."""
    targets = run.targets()
    counts = {"warned": sum(1 for t in targets if t.warned),
              "server-errors": sum(1 for j in run.jobs if j.failure)}
    counts.update(Counter(t.result for t in targets))
    return counts


def exit_code(run, counts):
    """0 all done (or nothing to do); 1 nothing done; 2 partly done: the
    one place it is decided, for the screen, /json, /log and /eventlog."""
    done = sum(counts.get(k, 0) for k in _DONE_RESULTS)
    failed = (sum(counts.get(k, 0) for k in _FAILED_RESULTS)
              + counts["server-errors"] + (run.error is not None))
    return 0 if not failed else 2 if done else 1


def report(run):
    """The summary record, then server errors (stderr), listings and
    what-ifs (stdout), or the JSON document; returns the exit code."""
    ctx, counts = run.ctx, tally(run)
    run.reported = True
    if run.sinks is not None:
        run.driver.flush([run.trail.record(
            phase="summary", counts=counts, exit_code=exit_code(run, counts),
            message=run.error.en() if run.error else None)])
    code = exit_code(run, counts)     # a failed summary counts too
    failed_jobs = [j for j in run.jobs if j.failure is not None]
    if ctx.json:
        import json

        def rows(items):          # one a line, by the C encoder; ASCII is
            return "[\n    %s\n  ]" % ",\n    ".join(   # lossless anywhere
                json.dumps(r, ensure_ascii=True) for r in items) \
                if items else "[]"
        run.screen.out('{\n  "sessions": %s,\n  "server_errors": %s,\n  '
                       '"error": %s,\n  "exit_code": %d\n}' % (
                           rows([t.record() for t in run.targets()]),
                           rows([{"server": j.server,
                                  "function": j.failure.function,
                                  "error": j.failure.code,
                                  "message": j.failure.en()}
                                 for j in failed_jobs]),
                           json.dumps(run.error.en() if run.error else None),
                           code))
        return code
    if run.error is not None and not run.shown:
        run.complain(run.error.screen(run.screen.hints))
    for job in failed_jobs:
        f = job.failure
        text = f.screen(run.screen.hints)
        if f.function is not None or f.code == wtsapi.ERROR_TIMEOUT:
            label = str(server_label(job.server))   # a refusal names it
            text = "%s%s: %s" % (label[0].upper(), label[1:], text)
        run.complain(text)
    if ctx.kind in (NAMED, OWN) and not ctx.verbose:
        for t in run.targets():     # /busy: never silent about it
            if t.result == SPARED:
                run.complain(Text("%(who)s was spared: %(why)s", who=t.who(),
                                  why=t.message))
    if ctx.fo in ("list", "csv"):
        _print_records(run, ctx.fo)
    elif ctx.kind == LIST or ctx.fo == "table":
        _print_table(run)
    elif ctx.preview:
        for t in run.targets():
            run.screen.out(str(_what_if(ctx, t)))
    if not run.targets() and not failed_jobs and ctx.kind in (SELECT, LIST):
        run.say(Text("No session matches the selection."))
    if ctx.kind == SELECT and any(j.done for j in run.jobs):  # planned
        line = str(_summary(run, counts))
        run.screen.err(line) if ctx.fo in ("list", "csv") else \
            run.screen.out(line)
    return code


def _summary(run, counts):
    """A selection's last line: what was done, where, how long it took."""
    ctx, servers = run.ctx, len(run.jobs)
    if ctx.preview:
        return Text("What if: %(n)d session(s) would be disconnected on "
                    "%(servers)d server(s)." if ctx.action == "disconnect"
                    else "What if: %(n)d session(s) would be logged off on "
                    "%(servers)d server(s).", n=counts.get(ctx.would, 0),
                    servers=servers)
    took = time.monotonic() - run.started
    args = dict(done=counts.get(ctx.done, 0),
                spared=counts.get(SPARED, 0),
                failed=sum(counts.get(k, 0) for k in _FAILED_RESULTS),
                servers=servers, down=counts["server-errors"],
                time="%.1fs" % took if took < 60 else seconds_label(took))
    return Text("Disconnected %(done)d session(s), spared %(spared)d, "
                "failed %(failed)d, on %(servers)d server(s) (%(down)d "
                "failed) in %(time)s." if ctx.action == "disconnect" else
                "Logged off %(done)d session(s), spared %(spared)d, failed "
                "%(failed)d, on %(servers)d server(s) (%(down)d failed) in "
                "%(time)s.", **args)


def _what_if(ctx, t):
    disconnect = ctx.action == "disconnect"
    if t.result == SPARED:                  # /busy
        return Text("What if: spare %(who)s: %(why)s.", who=t.who(),
                    why=t.message)
    if ctx.kind == OWN:
        return Text("What if: disconnect session %(id)d, the current "
                    "session." if disconnect else "What if: log off session "
                    "%(id)d, the current session.", id=t.session.id)
    if ctx.warn is None:
        return Text("What if: disconnect %(who)s." if disconnect else
                    "What if: log off %(who)s.", who=t.who())
    return Text("What if: warn %(who)s, wait %(grace)s, then disconnect it "
                "if it still matches." if disconnect else
                "What if: warn %(who)s, wait %(grace)s, then log it off if "
                "it still matches." if t.session.state == State.WTSActive
                else "What if: wait %(grace)s, then log off %(who)s if it is "
                "still %(state)s (a warning cannot reach it).", who=t.who(),
                grace=seconds_label(ctx.grace),
                state=state_word(t.session.state))


def _width(text):
    """Columns a string takes in a terminal: East Asian wide ones two."""
    if text.isascii():
        return len(text)
    from unicodedata import east_asian_width
    return sum(2 if east_asian_width(c) in "WF" else 1 for c in text)


def _print_records(run, fo):
    """/fo:csv (RFC 4180: CRLF, quoted as needed; the JSON's keys as
    headers, null as empty) or /fo:list (key: value, a blank line
    between sessions)."""
    records = [t.record() for t in run.targets()]
    keys = list(records[0]) if records else list(Target(
        None, wtsapi.Session(None, 0, "", 0, "", ""), "").record())

    def text(v):
        return "" if v is None else str(v).lower() if isinstance(
            v, bool) else str(v)
    if fo == "list":
        width = max(map(len, keys)) + 2
        run.screen._put("out", "".join("".join(
            "%s%s\n" % ((k + ":").ljust(width), text(r[k])) for k in keys)
            + "\n" for r in records))
        return
    import csv
    out = io.StringIO()
    # stdout turns \n into CR LF on Windows itself.
    writer = csv.writer(out, lineterminator="\n" if os.linesep == "\r\n"
                        else "\r\n")
    if not run.ctx.nh:
        writer.writerow(keys)
    writer.writerows([text(r[k]) for k in keys] for r in records)
    run.screen._put("out", out.getvalue())


def _print_table(run):
    """The listing, as quser shows it in the reader's language (with /v
    the client and the lock state; after an action its result); built a
    column at a time, each row formatted once, measured on what is printed
    (what the encoding cannot hold becomes '?')."""
    ctx, targets = run.ctx, run.targets()
    sessions = [t.session for t in targets]
    local, minutes = _("(local)"), {}
    states = {st: str(state_text(st)) for st in {s.state for s in sessions}}
    head = [("", _("SERVER"), _("ID"), _("SESSIONNAME"), _("USERNAME"),
             _("STATE"), _("IDLE TIME"), _("LOGON TIME"))]
    columns = [
        [">" if t.own else "" for t in targets],
        [t.server or local for t in targets],
        [s.id for s in sessions],   # ints: no string a row kept
        [s.name for s in sessions],
        ["%s\\%s" % (s.domain, s.user) if s.domain and s.user else s.user
         for s in sessions],                    # Session.account, inline
        [states[s.state] for s in sessions],
        [format_idle(t.idle) for t in targets],
        # Made as the rows are printed where it is the last column, which
        # needs no width (all ASCII): ten thousand strings fewer at once.
        (_local_minute(t.logon, minutes) for t in targets)]
    if ctx.kind == LIST and ctx.verbose:
        locks = {True: _("yes"), False: _("no"), None: ""}
        head.append((_("CLIENT NAME"), _("CLIENT ADDRESS"), _("LOCKED")))
        columns += [[t.client.name if t.client else "" for t in targets],
                    [t.client.address if t.client else "" for t in targets],
                    [locks[t.locked] for t in targets]]
    if ctx.kind != LIST:
        head.append((_("RESULT"),))
        columns.append([t.result for t in targets])
    head = sum(head, ())
    lazy = len(columns) == 8            # the logon times are the last column
    if not lazy:
        columns[7] = list(columns[7])
    ids = columns[2]
    text = [c for c in columns[:2] + columns[3:] if isinstance(c, list)]
    if all("".join(c).isascii() for c in text) and "".join(
            head).isascii():                            # C speed
        sized = columns[:2] + [[str(max(ids, default=0))]] + columns[3:]
        if lazy:
            sized[7] = [""]
        widths = [max(len(h), max(map(len, c), default=0))
                  for h, c in zip(head, sized)]
        specs = ["%%-%ds" % w for w in widths]
        if not ctx.nh:
            run.screen._put("out", (" ".join(specs) % head).rstrip() + "\n")
        specs[2] = "%%-%dd" % widths[2]
        fmt = " ".join(specs)
        rows = zip(*columns)
        for _i in range(0, len(targets), 1000):  # a bounded text at a time
            run.screen._put("out", "".join([
                (fmt % r).rstrip() + "\n" for _j, r in zip(range(1000),
                                                           rows)]))
            run.screen.pace()
        return
    enc = getattr(run.screen.consoles["out"].stream(), "encoding",
                  None) or "utf-8"
    columns[2] = [str(i) for i in ids]
    rows = [tuple(c.encode(enc, "replace").decode(enc, "replace")
                  for c in r) for r in [head] + list(zip(*columns))]
    sizes = [tuple(map(_width, r)) for r in rows]
    widths = [max(c) for c in zip(*sizes)]
    run.screen._put("out", "".join(" ".join(
        c + " " * (w - n) for c, n, w in zip(r, ns, widths)).rstrip() + "\n"
        for r, ns in list(zip(rows, sizes))[ctx.nh:]))


# --- The command -------------------------------------------------------------------

def _prog():
    """The command as it was run, for the help: never LOGOFF, which starts
    Windows' own logoff.exe."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    python = "py" if sys.platform == "win32" else "python3"
    if spec is not None and spec.name in ("logoff", "logoff.__main__"):
        return "%s -m logoff" % python
    if os.path.basename(sys.argv[0] if sys.argv else "").lower().startswith(
            "pylogoff"):
        return "pylogoff"
    return "%s logoff.py" % python


def _on_signal(run):
    """Ctrl+C, SIGTERM, Ctrl+Break and a closed console window (SIGBREAK to
    the C runtime) only post a stop: no new change starts, and the report
    is still made."""
    import signal

    def handler(signum, frame):
        run.signal, run.stopping = signum, True
        if run.driver is not None:
            run.driver.wake()
    saved = []
    for num in [getattr(signal, n, None)
                for n in ("SIGINT", "SIGTERM", "SIGBREAK")]:
        try:
            if num is not None:
                saved.append((num, signal.signal(num, handler)))
        except (ValueError, OSError):   # not the main thread
            pass
    return lambda: [signal.signal(*s) for s in saved]


def _open_sinks(run, opts):
    """The /log file and the /eventlog source; a failure is the run's."""
    run.sinks = Sinks([])
    if opts.log:
        try:
            run.sinks.sinks.append(Audit(opts.log))
        except AuditError as e:
            raise Refused(Text("cannot open the log file %(file)s: %(why)s",
                               file=opts.log, why=e.args[0]))
    if opts.eventlog is not None:
        try:
            run.sinks.sinks.append(EventLog(opts.eventlog))
        except (OSError, ValueError) as e:
            raise Refused(Text("cannot register the event source "
                               "%(source)s: %(why)s", source=opts.eventlog,
                               why=_event_failure(e)))


def main(argv=None):
    """Run the command; return the exit code (0, 1 or 2)."""
    set_language()
    screen = Screen()
    try:
        opts = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        screen.err(str(Text("Invalid parameter(s): %(why)s", why=e.args[0])))
        screen._put("err", _(USAGE_BASIC) % {"prog": _prog()})
        screen.err(str(Text("Type %(prog)s /? for every switch.",
                            prog=_prog())))
        return 1
    except KeyboardInterrupt:           # while /server:@- reads stdin
        screen.err(_("logoff: interrupted."))
        return 1
    if opts.help:
        screen._put("out", _(USAGE_BASIC) % {"prog": _prog()} +
                    _(USAGE_MORE) % {})
        return 0
    run = Run(context(opts), screen)
    threads = run.ctx.kind not in (OWN, NAMED)     # the drop-in forms: none
    restore = _on_signal(run)
    try:
        try:
            if opts.log or opts.eventlog is not None:
                _open_sinks(run, opts)
            if opts.log or opts.eventlog is not None or opts.warn:
                run.trail.operator = wtsapi.process_account()
            if threads:
                screen.start(len(run.jobs) > 1 and not opts.json)
            run.driver = Driver(run, threads)
            execute(run)
        except Refused as e:
            run.fail(describe(e), e.text)
        except OSError as e:        # no library, or a local call failed
            run.fail(describe(e), Text("the run failed"))
        except Exception as e:      # a bug of ours: one line, no traceback
            if os.environ.get("LOGOFF_DEBUG"):
                import traceback
                traceback.print_exc()
            run.fail(describe(e), Text("the run failed"))
        if run.signal is not None and run.error is None:
            run.fail(Failure(None, Text("the run was interrupted")),
                     Text("the run was interrupted"), show=False)
        run.driver = run.driver or Driver(run, threads=False)
        return report(run)
    finally:
        restore()
        if run.driver is not None:
            run.driver.close()
        if run.sinks is not None:
            run.sinks.close()
        screen.close()


if __name__ == "__main__":
    sys.exit(main())
