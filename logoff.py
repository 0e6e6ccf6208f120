"""logoff.py: log users off Remote Desktop Session Host sessions.

A drop-in for Windows' ``logoff.exe``, plus selection by user, state and idle
time, warn-then-logoff, many servers at once, JSON output and an audit log:

    python logoff.py [<SessionName> | <SessionID>] [/server:<ServerName>] [/v]

Standard library only; the Windows calls live in ``wtsapi.py`` beside this
file.  The module reads top to bottom as the program runs: tables and text,
output, parse, plan, act, report, then ``main(argv=None) -> int``.  Policy
and I/O live here; ``wtsapi`` only speaks to the library.
"""

import heapq
import os
import stat
import sys
import threading
import time

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
# parameter) and the rest.
USAGE_BASIC = """\
Logs off a user from a session on a Remote Desktop Session Host server and
deletes the session from the server.

LOGOFF [sessionname | sessionid] [/SERVER:servername] [/V]

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
  A selection only takes sessions with a user, and never session 0,
  listeners, the console session or your own session; one that matches
  nothing is not an error.
  /QUERY              List the sessions (the selected ones, with a
                      selection); change nothing.
  /WARN:TEXT          Send TEXT to each selected active session first, wait
                      /GRACE, look again, and log off only the sessions that
                      still exist, belong to the same user and match.
  /GRACE:DURATION     Time between warning and logoff (default 5m).
  /WAIT[:DURATION]    Wait until each logoff has finished (at most DURATION,
                      default 5m).
  /WHATIF             Show what would be done; send and log off nothing.
  /MAX:N              Change nothing at all if more than N sessions are
                      selected in all.
  /SERVER:A,B,@FILE   Several servers: names, and files of names (one a
                      line, # comments); @- reads them from standard input.
  /PARALLEL:N         Servers worked on at once (default 16).
  /TIMEOUT:DURATION   Time limit for each server in each phase (selecting,
                      warning, logging off; default 60s).
  /JSON               One JSON document on stdout instead of text.
  /LOG:FILE           Append one JSON line per action to FILE (audit log),
                      before and after each change.
  /EVENTLOG[:SOURCE]  Write the same records as events to the Application
                      log (source PyLogoff by default), and a summary.
  DURATION: a number with an optional unit s, m, h or d (90s, 15m, 2h, 1d);
  a bare number is seconds.

Exit codes: 0 all done, or nothing matched; 1 invalid parameters, or nothing
requested was done; 2 partly done (some sessions or servers failed, or the
run was interrupted after something was done).
"""

USAGE = USAGE_BASIC + USAGE_MORE

MAX_SESSION_ID = 0xFFFFFFFE           # 0xFFFFFFFF is WTS_CURRENT_SESSION

# name -> value policy: None none allowed, True required, False optional.
_SWITCHES = {
    "?": None, "v": None, "query": None, "whatif": None, "json": None,
    "server": True, "user": True, "state": True, "idle": True, "warn": True,
    "grace": True, "parallel": True, "timeout": True, "log": True,
    "max": True, "wait": False, "eventlog": False,
}

# /state words: the API's own names (WTSActive -> active), never the
# localized text of `query session`.  Listeners are never selected.
_STATE_WORDS = {m.name[3:].lower(): m for m in State if m != State.WTSListen}
_STATE_WORDS["disc"] = State.WTSDisconnected

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

LANG_ENGLISH = wtsapi.LANGID_EN_US   # /json and /log, whatever the screen

DEFAULT_WAIT = 300.0          # /wait without a limit: a logoff never hangs us
FRESH_SECONDS = 5.0           # a snapshot older than this is read again
TIMES_READERS = 8             # session-time reads in flight per server
SLOW_READ = 0.002             # seconds: a read this slow crossed a network
IDLE_BATCH = TIMES_READERS   # idle times read again at once: one round trip
INTERRUPT_BOUND = 2.0         # how long calls in flight may finish after ^C
MAX_SERVERS = 100000
MAX_FILE_BYTES = 1 << 20
MAX_TEXT = 4000               # /warn text, characters
MAX_NAME = 255                # a DNS name is at most 253
DEFAULT_SOURCE = "PyLogoff"   # /eventlog without a source

# Results a target can end with.
LISTED, WOULD, DONE, SPARED, FAILED, SKIPPED, UNKNOWN = (
    "listed", "would-log-off", "logged-off", "spared", "failed",
    "not-attempted", "unknown")
_DONE_RESULTS = (LISTED, WOULD, DONE, UNKNOWN)
_FAILED_RESULTS = (FAILED, SKIPPED, UNKNOWN)

_translations = None          # a Catalogue (see below); None: English
_langid = LANG_ENGLISH        # the screen's language, for FormatMessageW


def _(msgid):
    """The reader's language for a message of ours."""
    return msgid if _translations is None else _translations.gettext(msgid)


# --- Languages: which one the screen speaks --------------------------------------
# Catalogues are locale/<name>/LC_MESSAGES/logoff.mo (compiled from the .po
# beside it by locale/build.py), <name> as gettext spells it: ja, zh_CN.  A
# new language is a new folder; nothing here changes.

LOCALE_DOMAIN = "logoff"
# Tags that mean another catalogue: Singapore and the Hans script read
# Simplified Chinese.  Traditional Chinese (zh-TW, zh-HK, zh-MO, zh-Hant)
# means none of ours: it is never shown zh_CN, and gets English.
_LANGUAGE_ALIASES = {"zh_SG": "zh_CN", "zh_Hans": "zh_CN"}
_catalogues = {}              # .mo path -> loaded catalogue (or None)


def _requested_languages():
    """The languages asked for, most wanted first.  LOGOFF_LANG on every
    system; on Windows the display languages (never the POSIX variables,
    which are not the language there); elsewhere gettext's variables in
    gettext's order."""
    forced = os.environ.get("LOGOFF_LANG", "").strip()
    if forced:
        return [forced]
    if sys.platform == "win32":
        return wtsapi.ui_languages()
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name)
        if value:
            return value.split(":")
    return []


def _catalogue_names(tag):
    """Folder names that may hold ``tag``'s catalogue, best first
    ('ja-JP' -> ja_JP, ja; 'zh_SG.UTF-8' -> zh_SG, zh_CN, zh), or None where
    the tag asks for English (en, en-US, C, POSIX)."""
    tag = tag.split(".")[0].split("@")[0].replace("-", "_")
    parts = [p for p in tag.split("_") if p]
    if not parts:
        return []
    if parts[0].lower() in ("c", "posix", "en"):
        return None
    lang = parts[0].lower()
    if not (2 <= len(lang) <= 3 and lang.isascii() and lang.isalpha()):
        return []                  # not a language: never a path
    regions = [p.upper() for p in parts[1:] if p.isascii() and (
        len(p) == 2 and p.isalpha() or len(p) == 3 and p.isdigit())]
    scripts = [p.title() for p in parts[1:]
               if len(p) == 4 and p.isascii() and p.isalpha()]
    names = []
    for name in ["%s_%s" % (lang, sub) for sub in regions + scripts]:
        names.append(name)
        if name in _LANGUAGE_ALIASES:
            names.append(_LANGUAGE_ALIASES[name])
    return names + [lang]


def _locale_dirs():
    """Where catalogues may be: locale/ beside this file (a copied folder),
    then where the wheel's data files went, share/logoff-py/locale under
    the install scheme's root, which is the grandparent of site-packages on
    Windows (Lib\\site-packages), its great-grandparent elsewhere
    (lib/pythonX.Y/site-packages), or sys.prefix."""
    here = os.path.dirname(os.path.abspath(__file__))
    dirs = [os.path.join(here, "locale")]
    up = here
    for _level in range(3):
        up = os.path.dirname(up)
        dirs.append(os.path.join(up, "share", "logoff-py", "locale"))
    dirs.append(os.path.join(sys.prefix, "share", "logoff-py", "locale"))
    return dirs


class Catalogue:
    """A compiled catalogue: a GNU .mo file, UTF-8, read into a dict.  What
    gettext.GNUTranslations reads from it, for the two calls used here,
    without importing gettext (and re and locale with it), which costs
    up to 30 ms on an embeddable Windows Python."""

    def __init__(self, data):
        order = {b"\xde\x12\x04\x95": "little",
                 b"\x95\x04\x12\xde": "big"}.get(data[:4])
        if order is None or len(data) < 28:
            raise ValueError("not a .mo file")

        def word(at):
            return int.from_bytes(data[at:at + 4], order)
        if word(4) >> 16 > 1:
            raise ValueError("unknown .mo revision")
        count, ids, strs = word(8), word(12), word(16)
        self.messages = {}
        for i in range(count):
            (klen, kat), (vlen, vat) = [(word(t + 8 * i), word(t + 8 * i + 4))
                                        for t in (ids, strs)]
            if max(kat + klen, vat + vlen) > len(data):
                raise ValueError("a message past the end of the file")
            self.messages[data[kat:kat + klen].decode("utf-8")] = \
                data[vat:vat + vlen].decode("utf-8")
        self.headers = {}
        for line in self.messages.get("", "").splitlines():
            key, colon, value = line.partition(":")
            if colon:
                self.headers[key.strip().lower()] = value.strip()

    def gettext(self, msgid):
        return self.messages.get(msgid, msgid) if msgid else msgid

    def info(self):
        return self.headers


def _load_catalogue(path):
    """The catalogue at ``path``; None where there is none, or a broken
    one (which means English, never a failed run)."""
    if path not in _catalogues:
        try:
            with open(path, "rb") as f:
                _catalogues[path] = Catalogue(f.read())
        except (OSError, ValueError):
            _catalogues[path] = None
    return _catalogues[path]


def find_catalogue(tags):
    """The catalogue for the first of ``tags`` that names English or one
    of ours; None for English."""
    dirs = None
    for tag in tags:
        names = _catalogue_names(tag)
        if names is None:
            return None
        dirs = dirs or _locale_dirs()
        for name in names:
            for folder in dirs:
                catalogue = _load_catalogue(os.path.join(
                    folder, name, "LC_MESSAGES", LOCALE_DOMAIN + ".mo"))
                if catalogue is not None:
                    return catalogue
    return None


def set_language():
    """Choose the screen's language for this run (see _requested_languages)
    and the LANGID that asks FormatMessageW for the same one (the
    catalogue's X-Windows-LANGID header)."""
    global _translations, _langid
    catalogue = find_catalogue(_requested_languages())
    langid = LANG_ENGLISH
    if catalogue is not None:
        try:
            langid = int(catalogue.info().get("x-windows-langid", ""), 16)
        except ValueError:
            langid = None          # the user's default
    _translations, _langid = catalogue, langid


class Text:
    """A message of ours, kept as its English source and its arguments, so
    that it is rendered in English for /json and /log and in the reader's
    language on the screen."""

    __slots__ = ("msgid", "args")

    def __init__(self, msgid, **args):
        self.msgid = msgid
        self.args = args

    def en(self):
        args = {k: v.en() if isinstance(v, (Text, SystemText)) else v
                for k, v in self.args.items()}
        return self.msgid % args if args else self.msgid

    def __str__(self):
        args = {k: str(v) if isinstance(v, (Text, SystemText)) else v
                for k, v in self.args.items()}
        text = _(self.msgid)
        return text % args if args else text


class SystemText:
    """The system's text for a Win32 error code, in either language."""

    __slots__ = ("code",)

    def __init__(self, code):
        self.code = code

    def en(self):
        return wtsapi.error_text(self.code, LANG_ENGLISH)

    def __str__(self):
        text = wtsapi.error_text(self.code, _langid)
        if _translations is None:
            return text
        # Where the system had no text (off Windows, Wine's 7000 range, a
        # language pack without it) wtsapi gives its built-in English:
        # the catalogue has those.  The system's own texts pass through.
        if text == "Unknown error %d." % self.code:
            return _("Unknown error %d.") % self.code
        return _(text)


class UsageError(Exception):
    """Invalid parameters: nothing has been called."""


class Refused(Exception):
    """A request this tool will not carry out; ``code`` is the Win32 error
    code that best describes it, if any."""

    def __init__(self, text, code=None):
        super().__init__(text)
        self.text = text
        self.code = code


class AuditError(Exception):
    """A record could not be written to the audit log or the event log;
    ``sink`` is the one that failed (set by the trail)."""

    sink = None


# --- Output: streams that can fail without stopping the work ------------------

class Console:
    """stdout or stderr.  A failed write (a closed pipe, a full disk, no
    stream at all under pythonw.exe) drops the stream for the rest of the
    run: output is never a reason to stop logging off or auditing."""

    def __init__(self, name):
        self.name = name
        self.lock = threading.Lock()
        self.dead = False

    def stream(self):
        return None if self.dead else getattr(sys, self.name, None)

    def isatty(self):
        s = self.stream()
        try:
            return bool(s is not None and s.isatty())
        except (OSError, ValueError, AttributeError):
            return False

    def write(self, text):
        with self.lock:
            s = self.stream()
            if s is None:
                return
            try:
                try:
                    s.write(text)
                except UnicodeEncodeError:
                    enc = getattr(s, "encoding", None) or "ascii"
                    s.write(text.encode(enc, "replace").decode(enc))
                s.flush()
            except (OSError, ValueError, AttributeError, UnicodeError):
                self._drop(s)

    def _drop(self, s):
        self.dead = True
        # Python flushes sys.stdout once more at exit; point a broken
        # descriptor at the null device so that flush cannot fail either.
        try:
            fd = s.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)
        except (OSError, ValueError, AttributeError):
            pass

    def line(self, text):
        self.write("%s\n" % text)


OUT = Console("stdout")
ERR = Console("stderr")


# --- Parse --------------------------------------------------------------------

def parse_duration(text, what):
    """'90s', '15m', '2h', '1d' or a bare number of seconds -> seconds."""
    t = text.strip().lower()
    factor = _UNITS.get(t[-1:], None)
    number = t[:-1] if factor else t
    factor = factor or 1
    value = -1.0
    if 0 < len(number) <= 20 and number.lstrip("0123456789.") == "":
        try:
            value = float(number)
        except ValueError:
            pass
    if not 0 <= value * factor <= 10 ** 9:
        raise UsageError(Text(
            "%(switch)s: %(value)r is not a duration (such as 90s, 15m, 2h, "
            "1d)", switch=what, value=text))
    return value * factor


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
    if data.startswith(b"\xff\xfe"):
        return data[2:].decode("utf-16-le")
    if data.startswith(b"\xfe\xff"):
        return data[2:].decode("utf-16-be")
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8")
    if len(data) >= 2 and b"\0" in data:
        even, odd = data[0::2], data[1::2]
        if odd.count(0) * 2 >= len(odd) and even.count(0) == 0:
            return data.decode("utf-16-le")
        if even.count(0) * 2 >= len(even) and odd.count(0) == 0:
            return data.decode("utf-16-be")
    return data.decode("utf-8")


def _read_server_file(path):
    try:
        # A FIFO with no writer would block open() forever.
        if stat.S_ISFIFO(os.stat(path).st_mode):
            raise UsageError(Text("/server:@%(file)s: the file is a pipe; "
                                  "give server names on standard input with "
                                  "/server:@-", file=path))
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise UsageError(Text("/server:@%(file)s: cannot read the file: "
                              "%(why)s", file=path, why=e.strerror or e))
    return _server_names(data, path)


def _read_server_stdin():
    """/server:@-: server names from standard input, read as bytes, in a
    server file's format: whatever a PowerShell pipe was given
    ($OutputEncoding: ASCII in 5.1, UTF-8 in 7, or UTF-16) and a UTF-16
    file redirected in decode alike.  No stdin at all (pythonw.exe, a
    closed descriptor) or a closed one is an invalid parameter, never a
    hang or a traceback."""
    stream = getattr(sys.stdin, "buffer", None)
    try:
        missing = stream is None or stream.closed
    except (AttributeError, ValueError):
        missing = True
    if missing:
        raise UsageError(Text("/server:@- reads server names from standard "
                              "input, but there is none"))
    try:
        data = stream.read(MAX_FILE_BYTES + 1) or b""
    except (OSError, ValueError) as e:
        raise UsageError(Text("/server:@-: cannot read standard input: "
                              "%(why)s", why=getattr(e, "strerror", None)
                              or e))
    return _server_names(data, "-")


def _server_names(data, path):
    """The names in a server file's bytes (``path`` "-": stdin)."""
    if len(data) > MAX_FILE_BYTES:
        raise UsageError(Text("/server:@%(file)s: the file is larger than "
                              "1 MiB", file=path))
    try:
        text = _decode_server_file(data)
    except UnicodeDecodeError:
        raise UsageError(Text("/server:@%(file)s: the file is not UTF-8 or "
                              "UTF-16 text", file=path))
    names = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if _has_control(line):
            raise UsageError(Text(
                "/server:@%(file)s: line %(line)d holds a control character",
                file=path, line=number))
        names.append(line)
        if len(names) > MAX_SERVERS:
            break
    return names


def _parse_servers(value):
    names = []
    for item in _split_list(value):
        if item.startswith("@"):
            if not item[1:]:
                raise UsageError(Text("/server:@ needs a file name"))
            # "@-" is standard input; a file named - is "@.\-" or "@./-".
            names.extend(_read_server_stdin() if item == "@-"
                         else _read_server_file(item[1:]))
        else:
            names.append(item)
        if len(names) > MAX_SERVERS:
            raise UsageError(Text("/server: more than %(n)d servers",
                                  n=MAX_SERVERS))
    seen, out = set(), []
    for name in names:
        name = name.lstrip("\\")          # \\SERVER is how admins write it
        if (not name or len(name) > MAX_NAME or _has_control(name)
                or any(c in name for c in " \t\\/,:")):
            raise UsageError(Text("/server: %(name)r is not a server name",
                                  name=name[:80]))
        key = fold(name)
        if key not in seen:
            seen.add(key)
            out.append(name)
    if not out:
        raise UsageError(Text("/server: needs a server name"))
    return out


class Options:
    """What the command line asks for."""

    def __init__(self):
        self.session = None          # int id, str name, or None (own)
        self.servers = []            # [] = the local server
        self.verbose = self.query = self.whatif = self.json = False
        self.help = False
        self.users = self.states = None
        self.idle = None
        self.warn = None
        self.grace = 300.0
        self.wait = None             # seconds to wait for logoffs, or None
        self.max = None
        self.parallel = 16
        self.timeout = 60.0
        self.log = None
        self.eventlog = None         # /eventlog: the event source's name

    @property
    def selecting(self):
        return (self.users is not None or self.states is not None
                or self.idle is not None)


def parse_args(argv):
    opts = Options()
    seen = set()
    positional = []
    for arg in argv:
        if arg[:1] in ("/", "-") and len(arg) > 1:
            name, colon, value = arg[1:].partition(":")
            name = name.lower()
            if name not in _SWITCHES:
                raise UsageError(Text("unknown switch %(switch)s",
                                      switch=arg.partition(":")[0][:40]))
            if name in seen:
                raise UsageError(Text("/%(switch)s is given twice",
                                      switch=name))
            seen.add(name)
            policy = _SWITCHES[name]
            if policy is None and colon:
                raise UsageError(Text("/%(switch)s takes no value",
                                      switch=name))
            if policy is True and not value.strip():
                raise UsageError(Text("/%(switch)s needs a value "
                                      "(/%(switch)s:...)", switch=name))
            if policy is False and colon and not value.strip():
                raise UsageError(Text("/%(switch)s: needs a value after the "
                                      "colon", switch=name))
            _apply_switch(opts, name, value if colon else None)
        else:
            positional.append(arg)
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
    if name == "?":
        opts.help = True
    elif name == "v":
        opts.verbose = True
    elif name == "query":
        opts.query = True
    elif name == "whatif":
        opts.whatif = True
    elif name == "json":
        opts.json = True
    elif name == "server":
        opts.servers = _parse_servers(value)
    elif name == "user":
        opts.users = _split_list(value)
        if not opts.users:
            raise UsageError(Text("/user: needs a user name or pattern"))
        if any(_has_control(u) or len(u) > 2 * MAX_NAME for u in opts.users):
            raise UsageError(Text("/user: not a user name or pattern"))
    elif name == "state":
        opts.states = set()
        for word in _split_list(value):
            state = _STATE_WORDS.get(word.lower())
            if state is None:
                if word.lower() == "listen":
                    raise UsageError(Text("/state: listener sessions are "
                                          "never selected"))
                raise UsageError(Text(
                    "/state: unknown state %(word)r (use %(words)s)",
                    word=word[:40], words=", ".join(sorted(_STATE_WORDS))))
            opts.states.add(state)
        if not opts.states:
            raise UsageError(Text("/state: needs a state name"))
    elif name == "idle":
        opts.idle = parse_duration(value, "/idle")
    elif name == "warn":
        if len(value) > MAX_TEXT or "\0" in value:
            raise UsageError(Text("/warn: the text is longer than %(n)d "
                                  "characters or holds a NUL", n=MAX_TEXT))
        opts.warn = value
    elif name == "grace":
        opts.grace = parse_duration(value, "/grace")
    elif name == "wait":
        opts.wait = (DEFAULT_WAIT if value is None
                     else parse_duration(value, "/wait"))
    elif name == "max":
        opts.max = _small_number(value, 0, 10 ** 9)
        if opts.max is None:
            raise UsageError(Text("/max: %(value)r is not a number of "
                                  "sessions", value=value[:40]))
    elif name == "parallel":
        opts.parallel = _small_number(value, 1, 256)
        if opts.parallel is None:
            raise UsageError(Text("/parallel: %(value)r is not a number from "
                                  "1 to 256", value=value[:40]))
    elif name == "timeout":
        opts.timeout = parse_duration(value, "/timeout")
        if opts.timeout <= 0:
            raise UsageError(Text("/timeout: must be more than 0"))
    elif name == "log":
        opts.log = value
    elif name == "eventlog":
        source = DEFAULT_SOURCE if value is None else value.strip()
        # A source is a registry key's name under the log: never
        # hierarchical (no backslash).
        if (len(source) > MAX_NAME or _has_control(source)
                or "\\" in source):
            raise UsageError(Text("/eventlog: %(value)r is not an event "
                                  "source name", value=source[:80]))
        opts.eventlog = source


def _check_combination(opts, seen):
    if opts.session is not None:
        if opts.selecting:
            raise UsageError(Text("a session name or ID cannot be combined "
                                  "with /user, /state or /idle"))
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
    if "grace" in seen and opts.warn is None:
        raise UsageError(Text("/grace goes with /warn"))
    if opts.query and (opts.warn is not None or opts.wait is not None
                       or opts.whatif or opts.max is not None):
        raise UsageError(Text("/query changes nothing: it cannot be "
                              "combined with /warn, /wait, /whatif or /max"))


# --- Names, states and times as Windows compares and shows them ---------------

def fold(text):
    """Case-insensitive key, as Windows compares names: a one-to-one upper
    case mapping, so 'weiss' never equals 'Weiß' (str.casefold() would
    expand ß to ss and ﬁ to fi)."""
    if text.isascii():
        return text.upper()
    return "".join(c if len(u) != 1 else u for c, u in
                   ((c, c.upper()) for c in text))


_STATE_LABELS = {m: m.name[3:] for m in State}      # WTSActive -> Active


def state_label(state):
    label = _STATE_LABELS.get(state)
    return label if label is not None else str(int(state))


def state_text(state):
    """A state as the /query table and a session's description show it
    ('Active'; in the reader's language as `quser` there shows it)."""
    return Text(state_label(state))


def state_word(state):
    """A state inside a sentence ('active'); /json and /log keep the
    English word."""
    return Text(state_label(state).lower())


def format_idle(seconds):
    """Idle time as quser shows it: '.', M, H:MM or D+HH:MM."""
    if seconds is None:
        return ""
    minutes = int(seconds // 60)
    if minutes == 0:
        return "."
    days, minutes = divmod(minutes, 1440)
    hours, minutes = divmod(minutes, 60)
    if days:
        return "%d+%02d:%02d" % (days, hours, minutes)
    if hours:
        return "%d:%02d" % (hours, minutes)
    return str(minutes)


def seconds_label(seconds):
    """A duration as the switches take it: 45s, 10m, 2h30m, 1d2h."""
    if seconds < 60:
        return "%gs" % seconds
    out, rest = "", int(round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out += "%d%s" % (rest // size, unit)
            rest %= size
    return out


def server_label(server):
    if server is None:
        return Text("the local server")
    return Text("server %(server)s", server=server)


def _is_console(session):
    return fold(session.name) == "CONSOLE"


# Names that always mean this machine.  Any other name is judged by the
# session itself (see Own), never by a short-name match.
_LOOPBACK = (".", "localhost", "::1", "0:0:0:0:0:0:0:1")


def _names_this_machine(server):
    if server is None:
        return True
    name = server.lower()
    if name in _LOOPBACK or name.startswith("127."):
        return True
    host = _hostname()
    return name == host or name == os.environ.get("COMPUTERNAME", "").lower()


_HOSTNAME = None


def _hostname():
    global _HOSTNAME
    if _HOSTNAME is None:
        import socket
        try:
            _HOSTNAME = socket.gethostname().lower()
        except OSError:
            _HOSTNAME = ""
    return _HOSTNAME


# --- Failures: one place turns any of them into what is reported --------------

class Failure:
    """What is reported about something that went wrong: the Win32 code, the
    function, a message and a hint (both Text, or SystemText)."""

    __slots__ = ("code", "function", "message", "hint", "show_code")

    def __init__(self, code, message, hint=None, function=None,
                 show_code=True):
        self.code = code
        self.message = message
        self.hint = hint
        self.function = function
        self.show_code = show_code and code is not None

    def en(self):
        return self.message.en()

    def screen(self):
        text = str(self.message)
        if self.hint is not None:
            text = _sentences(text, str(self.hint))
        return _sentences(text, "(error %d)" % self.code) if self.show_code \
            else text


def _sentences(first, then):
    """Two sentences, or a sentence and a note, on one line: a space after
    English text, none after a full stop of Chinese or Japanese (。)."""
    return first + then if first.endswith(("\u3002", "\uff09")) else \
        "%s %s" % (first, then)


_ENUMERATING = ("WTSEnumerateSessionsExW", "WTSEnumerateSessionsW",
                "WTSQuerySessionInformationW", "WTSOpenServerW")


def _hint(code, function, remote):
    if code == wtsapi.ERROR_ACCESS_DENIED:
        if function == "WTSSendMessageW":
            hint = Text("Sending a message needs the Message permission on "
                        "the session (part of Full Control).")
        elif function in _ENUMERATING:
            hint = Text("Listing sessions needs the Query Information "
                        "permission on the server.")
        else:
            hint = Text("Logging off another user's session needs the Reset "
                        "permission on it (part of Full Control); run as an "
                        "administrator of the server.")
        if remote:
            hint = Text("%(hint)s Or Remote RPC is disabled on the target "
                        "(AllowRemoteRPC = 0 under HKLM\\SYSTEM\\"
                        "CurrentControlSet\\Control\\Terminal Server).",
                        hint=hint)
        return hint
    if code == wtsapi.RPC_S_SERVER_UNAVAILABLE:
        return Text("The server cannot be reached: it is down or the name is "
                    "wrong, a firewall blocks RPC, or the Remote Desktop "
                    "Services service (TermService) is not running on it.")
    if code == wtsapi.ERROR_NO_MORE_ITEMS:
        return Text("This account may see no session on the server: it "
                    "lacks the Query Information permission there.")
    if code == wtsapi.ERROR_CTX_WINSTATION_ACCESS_DENIED:
        return Text("The session's permissions (on its RDP-Tcp connection) "
                    "deny this to your account; it needs Full Control.")
    return None


def failure_of(exc, server=None):
    """Any failure (WTSError, a refusal, a timeout) as a Failure."""
    if isinstance(exc, Failure):
        return exc
    if isinstance(exc, Refused):
        return Failure(exc.code, exc.text, show_code=False)
    if isinstance(exc, wtsapi.WTSError):
        return Failure(exc.winerror, SystemText(exc.winerror),
                       _hint(exc.winerror, exc.function, server is not None),
                       exc.function)
    if isinstance(exc, AuditError):
        return Failure(None, exc.args[0])
    if isinstance(exc, OSError) and getattr(exc, "winerror", None):
        return Failure(exc.winerror, SystemText(exc.winerror))
    if isinstance(exc, OSError):
        return Failure(None, Text("%(why)s", why=exc.strerror or str(exc)))
    return Failure(None, Text("internal error: %(type)s: %(what)s",
                              type=type(exc).__name__, what=str(exc)))


# --- The audit log --------------------------------------------------------------

class Audit:
    """The /log file: JSON lines, written ahead.  Before each state change a
    line says what is about to be done; after it, a line with the outcome,
    paired by ``run`` and ``seq``.  Several runs may append at once: on POSIX
    one O_APPEND write of a whole line is atomic; Windows emulates O_APPEND
    with a seek, so there a byte-range lock serialises the writers, waited
    for in the kernel for as long as it takes."""

    LOCK_OFFSET = 0x7FFFFFFF            # far past any real log's end

    def __init__(self, path):
        import json
        self._json = json
        self.path = path
        self.lock = threading.Lock()
        self.fd = None
        try:
            st = os.stat(path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISREG(st.st_mode):
                raise AuditError(Text("%(file)s is not a regular file",
                                      file=path))
        # O_NONBLOCK: a FIFO that appears after the check must not hang us.
        flags = (os.O_WRONLY | os.O_APPEND | os.O_CREAT |
                 getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0))
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as e:
            raise AuditError(Text("%(why)s", why=e.strerror or str(e)))
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise AuditError(Text("%(file)s is not a regular file",
                                  file=path))
        self.fd = fd

    def append(self, record):
        """Append one record (the trail's dict) as a line.  Raises
        AuditError."""
        with self.lock:
            if self.fd is None:
                raise AuditError(Text("the log is closed"))
            # A lone surrogate in a name cannot be UTF-8: escape it, as
            # JSON itself would, rather than lose the line.
            data = (self._json.dumps(record, ensure_ascii=False) + "\n"
                    ).encode("utf-8", "backslashreplace")
            try:
                if sys.platform == "win32":
                    self._write_locked(data)
                else:
                    self._write_all(data)
            except OSError as e:
                raise AuditError(Text("%(why)s", why=e.strerror or str(e)))

    def _write_all(self, data):
        n = os.write(self.fd, data)
        if n != len(data):
            raise OSError(0, "short write (%d of %d bytes)" % (n, len(data)))

    def _write_locked(self, data):
        handle = wtsapi.file_handle(self.fd)
        if not wtsapi.lock_byte(handle, self.LOCK_OFFSET, wait=False):
            ERR.line(str(Text("logoff: waiting for the log file %(file)s "
                              "(another run is writing to it)...",
                              file=self.path)))
            wtsapi.lock_byte(handle, self.LOCK_OFFSET, wait=True)
        try:
            os.lseek(self.fd, 0, os.SEEK_END)
            self._write_all(data)
        finally:
            wtsapi.unlock_byte(handle, self.LOCK_OFFSET)

    def close(self):
        with self.lock:
            fd, self.fd = self.fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:     # a share's deferred error at close: the
                pass            # run is over, and it must not traceback



# /eventlog event IDs (1-1000: what EventCreate.exe's message table prints
# as is) and levels, by (phase, action, result); the README lists them.
_INFORMATION = wtsapi.EVENTLOG_INFORMATION_TYPE
_WARNING = wtsapi.EVENTLOG_WARNING_TYPE
_ERROR = wtsapi.EVENTLOG_ERROR_TYPE
EVENT_IDS = {
    ("intent", "logoff", None): (100, _INFORMATION),
    ("outcome", "logoff", DONE): (101, _INFORMATION),
    ("outcome", "logoff", FAILED): (102, _ERROR),
    ("outcome", "logoff", UNKNOWN): (103, _WARNING),
    ("outcome", "logoff", SPARED): (104, _INFORMATION),
    ("outcome", "logoff", SKIPPED): (105, _WARNING),
    ("intent", "warn", None): (110, _INFORMATION),
    ("outcome", "warn", "ok"): (111, _INFORMATION),
    ("outcome", "warn", FAILED): (112, _ERROR),
    ("outcome", "warn", UNKNOWN): (113, _WARNING),
    ("outcome", "warn", SKIPPED): (115, _WARNING),
}
EVENT_SUMMARY = 900             # the run's last event
_SUMMARY_LEVELS = {0: _INFORMATION, 2: _WARNING, 1: _ERROR}

# The readable sentence before each event's JSON, by (phase, action,
# result); English, as /json and /log are, whatever the screen's language.
_EVENT_SENTENCES = {
    ("intent", "logoff", None): "Logging off %(who)s.",
    ("outcome", "logoff", DONE): "Logged off %(who)s.",
    ("outcome", "logoff", FAILED): "Could not log off %(who)s: %(why)s",
    ("outcome", "logoff", UNKNOWN): "Logging off %(who)s: %(why)s",
    ("outcome", "logoff", SPARED): "Spared %(who)s: %(why)s",
    ("outcome", "logoff", SKIPPED): "Did not log off %(who)s: %(why)s",
    ("intent", "warn", None): "Warning %(who)s.",
    ("outcome", "warn", "ok"): "Warned %(who)s.",
    ("outcome", "warn", FAILED): "Warning %(who)s: %(why)s",
    ("outcome", "warn", UNKNOWN): "Warning %(who)s: %(why)s",
    ("outcome", "warn", SKIPPED): "Warning %(who)s: %(why)s",
}


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
        counts = counts or Text("nothing done")
        if record["message"]:
            text = Text("Run %(run)s ended with exit code %(code)d "
                        "(%(counts)s): %(why)s", run=record["run"],
                        code=record["exit_code"], counts=counts,
                        why=record["message"]).en()
        else:
            text = Text("Run %(run)s ended with exit code %(code)d "
                        "(%(counts)s).", run=record["run"],
                        code=record["exit_code"], counts=counts).en()
    else:
        account = record["user"] or ""
        if account and record["domain"]:
            account = "%s\\%s" % (record["domain"], account)
        server = server_label(record["server"])
        who = (Text("session %(id)s (%(account)s) on %(server)s",
                    id=record["session"], account=account, server=server)
               if account else
               Text("session %(id)s on %(server)s", id=record["session"],
                    server=server))
        key = (record["phase"], record["action"], record["result"])
        text = Text(_EVENT_SENTENCES[key], who=who,
                    why=record["message"] or record["result"]).en()
    # One line, so that the JSON is always what follows the first CR LF.
    return "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in text)


class EventLog:
    """The /eventlog sink: each record of the trail as one event in the
    Application log of this machine (``wtsapi.EventSource``): a fixed
    event ID per action and outcome (EVENT_IDS), its level to match, the
    operator's SID from the process token in lpUserSid (none off Windows),
    and one insertion string: a sentence, CR LF, then the record as the
    /log line's JSON object in ASCII.  Registering the source when made
    raises OSError if it cannot be done."""

    def __init__(self, source):
        import json
        self._json = json
        self.source = source
        self.sid = wtsapi.process_sid()
        self.src = wtsapi.EventSource(source)

    def append(self, record):
        """Report one record as an event.  Raises AuditError."""
        if record["phase"] == "summary":
            event_id = EVENT_SUMMARY
            level = _SUMMARY_LEVELS.get(record["exit_code"], _ERROR)
        else:
            event_id, level = EVENT_IDS[(record["phase"], record["action"],
                                         record["result"])]
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


# --- Plan: what is selected on each server -------------------------------------

class Target:
    """A session chosen for action, and what happened to it."""

    __slots__ = ("server", "session", "idle", "times", "own", "action",
                 "result", "error", "message", "warned", "note", "seq",
                 "pending", "gone", "final", "read_at")

    def __init__(self, server, session, own=False):
        self.server = server
        self.session = session
        self.idle = None
        self.times = None           # SessionTimes, where they were read
        self.own = own
        self.action = None
        self.result = None
        self.error = None
        self.message = None         # Text: why it failed or was spared
        self.warned = None
        self.note = None            # Text: why no warning was sent
        self.seq = None             # the audit seq of a change in flight
        self.pending = None         # its action: "warn" or "logoff"
        self.gone = False           # ended while being read
        self.read_at = 0.0          # monotonic time its times were read
        self.final = False

    @property
    def logon(self):
        """The logon time (UTC), or None where not read or unknown."""
        return self.times.logon if self.times is not None else None

    def who(self):
        s = self.session
        parts = [s.name] if s.name else []
        if s.account:
            parts.append(s.account)
        parts.append(str(state_text(s.state)))
        if self.idle is not None:
            parts.append(str(Text("idle %(idle)s",
                                  idle=format_idle(self.idle) or ".")))
        return Text("session %(id)d (%(what)s) on %(server)s", id=s.id,
                    what=", ".join(parts), server=server_label(self.server))

    def record(self):
        s = self.session
        message = self.message or self.note
        logon = self.logon
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
        }


class Job:
    """One server's share of the work.  ``cancel`` is set when the server
    ran out of time in a phase or the run is stopping: no new state change
    starts on it."""

    __slots__ = ("server", "targets", "failure", "timed_out", "cancel",
                 "read_at", "started", "finished", "running", "abandoned",
                 "srv")

    def __init__(self, server):
        self.server = server
        self.targets = []
        self.failure = None
        self.timed_out = False
        self.cancel = threading.Event()
        self.read_at = 0.0           # monotonic time of the last enumeration
        self.started = self.finished = self.running = False
        self.abandoned = False       # its thread closes the handle when done
        self.srv = None

    def handle(self):
        """The job's one server handle, kept across phases: on a remote
        server a new handle means a new RPC connection."""
        if self.srv is None:
            self.srv = wtsapi.Server(self.server)
        return self.srv

    def close(self):
        with _HANDOFF:               # a worker and the main thread may race
            srv, self.srv = self.srv, None
        if srv is not None:
            srv.close()


_HANDOFF = threading.Lock()


class Own:
    """The caller's own session.  Its ID is read once a run from the local
    server.  On another server a session is the caller's when it has that
    ID, the caller's user and the same logon time, whatever name reaches
    that server (an IP, an alias); those details are read only when a
    session there has the caller's ID."""

    def __init__(self):
        self._id = None
        self._details = None
        self._lock = threading.Lock()

    def id(self):
        if self._id is not None:
            return self._id
        with self._lock:
            if self._id is None:
                self._id = wtsapi.current_session_id()
            return self._id

    def details(self):
        """The own session's SessionTimes, or False if it cannot be read."""
        with self._lock:
            if self._details is None:
                try:
                    self._details = wtsapi.own_session()
                except wtsapi.WTSError:
                    self._details = False
            return self._details

    def matches(self, srv, server, session):
        """True: the caller's; False: not; None: cannot tell.  A selection
        treats None as the caller's (never risk it); the console rule
        gives way only to True."""
        if session.id != self.id():
            return False
        if _names_this_machine(server):
            return True
        own = self.details()
        if not own:
            return None
        if (fold(session.user), fold(session.domain)) != (
                fold(own.user), fold(own.domain)):
            return False
        try:
            logon = srv.times(session.id).logon_ticks
        except wtsapi.WTSError:
            return None
        return logon == own.logon_ticks


def _user_matcher(patterns):
    """A predicate over Session: any pattern matches (case-insensitive as
    Windows is, * and ?); a pattern with a backslash matches DOMAIN\\user,
    else user."""
    from fnmatch import fnmatchcase
    # '[' cannot be in a Windows user name; keep fnmatch from reading sets.
    pats = [(fold(p).replace("[", "[[]"), "\\" in p) for p in patterns]

    def match(session):
        user = fold(session.user)
        account = "%s\\%s" % (fold(session.domain), user)
        return any(fnmatchcase(account if with_domain else user, p)
                   for p, with_domain in pats)
    return match


def _excluded(run, srv, server, session):
    """A session a selection never takes."""
    return (session.id == 0 or not session.user
            or session.state == State.WTSListen or _is_console(session)
            or run.own.matches(srv, server, session) is not False)


def _matches(run, session):
    opts = run.opts
    if opts.states is not None and session.state not in opts.states:
        return False
    return run.users is None or run.users(session)


def _same_account(times, session):
    """The time record names the enumerated session's user (WTSINFOW holds
    at most 20 characters of it and 16 of the domain)."""
    for got, want, width in ((times.user, session.user, 20),
                             (times.domain, session.domain, 16)):
        got, want = fold(got), fold(want)
        if got != want and not (len(got) >= width and want.startswith(got)):
            return False
    return True


def read_times(srv, targets, cancel):
    """Idle and logon time for each target.  Reads go one at a time while
    they are fast (a local server); once one takes a network round trip,
    up to TIMES_READERS run in flight on the one server handle, so 200
    sessions at 50 ms cost about 26 round trips, not 200.  A session that
    ended meanwhile is marked ``gone``."""
    todo = iter(targets)
    lock = threading.Lock()
    errors = []

    def read(t):
        try:
            times = srv.times(t.session.id)
        except wtsapi.WTSError as e:
            if e.winerror != wtsapi.ERROR_CTX_WINSTATION_NOT_FOUND:
                raise
            t.gone = True
            return
        if not _same_account(times, t.session):
            t.gone = True           # changed hands since the enumeration
            return
        t.idle = None if _is_console(t.session) else times.idle
        t.times = times
        t.read_at = time.monotonic()

    for t in todo:
        if cancel.is_set():
            return
        started = time.monotonic()
        read(t)
        if time.monotonic() - started > SLOW_READ:
            break
    else:
        return

    def reader():
        while not cancel.is_set() and not errors:
            with lock:
                t = next(todo, None)
            if t is None:
                return
            try:
                read(t)
            except wtsapi.WTSError as e:
                errors.append(e)

    threads = [threading.Thread(target=reader, daemon=True)
               for _ in range(TIMES_READERS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]


def _select(run, job, srv, sessions):
    """Targets on one server: the filters ANDed over sessions with a user,
    never session 0, listeners, the console or the caller's own session.
    Idle time is read only after the other filters (and for a listing)."""
    opts = run.opts
    listing_all = opts.query and not opts.selecting
    picked = []
    for s in sessions:
        if listing_all:
            t = Target(job.server, s)
            if s.user and s.id != 0:
                t.own = run.own.matches(srv, job.server, s)
            picked.append(t)
        elif not _excluded(run, srv, job.server, s) and _matches(run, s):
            picked.append(Target(job.server, s))
    if opts.idle is not None or opts.query:
        read_times(srv, [t for t in picked if t.session.user], job.cancel)
        picked = [t for t in picked if not t.gone and (
            opts.idle is None or (t.idle is not None and t.idle >= opts.idle))]
    return picked


def _find_explicit(run, job, srv, sessions):
    """The session the command line names, under logoff.exe's rules."""
    wanted = run.opts.session
    where = server_label(job.server)
    if isinstance(wanted, int):
        found = [s for s in sessions if s.id == wanted]
        if not found:
            raise Refused(Text("Session ID %(id)d was not found on "
                               "%(server)s.", id=wanted, server=where),
                          wtsapi.ERROR_CTX_WINSTATION_NOT_FOUND)
    else:
        key = fold(wanted)
        found = [s for s in sessions if s.name and fold(s.name) == key]
        if not found:
            raise Refused(Text("Session %(name)s was not found on "
                               "%(server)s.", name=wanted, server=where),
                          wtsapi.ERROR_CTX_WINSTATION_NOT_FOUND)
    session = found[0]
    if session.id == 0:
        raise Refused(Text("Session 0 is the services session; it has no "
                           "user to log off."))
    if session.state == State.WTSListen:
        raise Refused(Text("Session %(id)d (%(name)s) is a listener, not a "
                           "user session; logging it off would reset the "
                           "listener.", id=session.id, name=session.name))
    if not isinstance(wanted, int) and session.state != State.WTSActive:
        raise Refused(Text("Session %(name)s (ID %(id)d) is %(state)s; a "
                           "session given by name must be active. Give its "
                           "ID to log it off.", name=session.name,
                           id=session.id,
                           state=state_word(session.state)))
    own = run.own.matches(srv, job.server, session) is True
    if _is_console(session) and not own:
        raise Refused(Text("Session %(id)d is the console session; users "
                           "cannot be logged off from the console session.",
                           id=session.id))
    return Target(job.server, session, own=own)


def plan_server(run, job):
    """Phase one on a server: one enumeration, then the selection."""
    srv = job.handle()
    sessions = srv.sessions()
    read_at = time.monotonic()
    if run.opts.session is not None:
        targets = [_find_explicit(run, job, srv, sessions)]
    else:
        targets = _select(run, job, srv, sessions)
    action = "list" if run.opts.query else "logoff"
    for t in targets:
        t.action = action
    with run.lock:
        if not job.timed_out:        # a given-up server adds nothing late
            job.targets, job.read_at = targets, read_at


# --- Act: warn, wait, look again, log off ---------------------------------------

def _fan_out(run, jobs, phase, last):
    """Run ``phase(run, job)`` for every job on at most /parallel threads.
    A job still running /timeout after it started is given up: its
    ``cancel`` is set, its thread left to finish alone, and a fresh worker
    takes its place, so a hung server never holds up the others or the
    exit.  Deadlines sit in a heap, so the scheduler's work is linear in
    the number of servers.  After the ``last`` phase (or a failure) the
    worker closes the job's handle itself, in parallel with the others.
    Returns False when the run was interrupted."""
    opts = run.opts
    # /wait is waited for on top of /timeout, not cut short by it.
    limit = opts.timeout
    if phase is act_server and opts.wait is not None:
        limit += opts.wait
    cond = threading.Condition()
    pending = list(reversed(jobs))
    deadlines = []                      # (deadline, n, job)
    counts = {"left": len(jobs), "n": 0}

    def worker():
        while True:
            with cond:
                if not pending:
                    return
                job = pending.pop()
                job.started = job.running = True
                counts["n"] += 1
                heapq.heappush(deadlines, (time.monotonic() + limit,
                                           counts["n"], job))
            if not run.stopping:
                try:
                    phase(run, job)
                except BaseException as e:     # reported, never a traceback
                    if job.failure is None:
                        job.failure = failure_of(e, job.server)
            with run.lock:
                job.running = False
                done = (last or job.failure is not None or job.timed_out
                        or job.abandoned)
            if done:
                job.close()                 # no one else will use it
            with cond:
                if job.timed_out:
                    return                  # a replacement took this slot
                job.finished = True
                counts["left"] -= 1
                cond.notify_all()

    def spawn():
        threading.Thread(target=worker, daemon=True).start()

    for _ in range(min(opts.parallel, len(jobs))):
        spawn()
    try:
        with cond:
            while counts["left"] > 0 and run.interrupted is None:
                now = time.monotonic()
                while deadlines and deadlines[0][0] <= now:
                    _, _, job = heapq.heappop(deadlines)
                    if not job.finished:
                        job.timed_out = True
                        job.cancel.set()
                        counts["left"] -= 1
                        spawn()
                wake = now + 0.25          # signals are seen between waits
                if deadlines:
                    wake = min(wake, deadlines[0][0])
                if counts["left"] > 0:
                    cond.wait(max(0.0, wake - now))
                run.progress.update(phase)
            run.progress.update(phase)
    except KeyboardInterrupt:              # no handler of ours: not main
        run.interrupted = "SIGINT"
    if run.interrupted is None:
        return True
    run.stop()
    # Calls in flight may finish for a moment; then they are given up.
    end = time.monotonic() + INTERRUPT_BOUND
    with cond:
        while time.monotonic() < end and any(
                j.started and not j.finished and not j.timed_out
                for j in jobs):
            cond.wait(0.05)
    return False


class Run:
    """Per-run facts: the options, the plan (its jobs), the caller's own
    session, the stop signal shared by every thread, and the trail."""

    def __init__(self, opts):
        self.opts = opts
        self.jobs = [Job(s) for s in (opts.servers or [None])]
        self.own = Own()
        self.users = (_user_matcher(opts.users) if opts.users is not None
                      else None)
        self.trail = Trail(self)
        self.limit_failure = None       # Text: /max stopped the run
        self.interrupted = None         # the signal, once one arrives
        self.stopping = False
        self.lock = threading.RLock()
        self.progress = Progress(self)
        self._operator = None

    def operator(self):
        if self._operator is None:
            self._operator = wtsapi.process_account()
        return self._operator

    def stop(self):
        """No new state change starts anywhere after this."""
        self.stopping = True
        for job in self.jobs:
            job.cancel.set()

    def verbose(self, text):
        if self.opts.verbose and not self.opts.json:
            OUT.line(str(text))

    def complain(self, text):
        if not self.opts.json:
            ERR.line("logoff: %s" % text)

    def targets(self):
        return [t for job in self.jobs for t in job.targets]

    def why_stopped(self, job):
        """Why no more changes are made on this job's server."""
        if self.trail.failure is not None:
            return self.trail.stopped_by()
        if self.interrupted is not None:
            return Text("the run was interrupted")
        if self.limit_failure is not None:
            return self.limit_failure
        if job.failure is not None and not job.timed_out:
            return job.failure.message
        return Text("the server ran out of time")


class Trail:
    """The audit trail around every state change: an intent before it, an
    outcome after, and each target's final result recorded once (a late
    thread of a given-up server finds it settled).  Each record goes to
    every sink (the /log file, then the /eventlog source) under one
    ``seq``.  A record that cannot be written stops the run: nothing more
    is changed anywhere."""

    def __init__(self, run):
        self.run = run
        self.audit = None               # the /log file, if any
        self.eventlog = None            # the /eventlog source, if any
        self.failure = None             # Failure: a record was not written
        self.failed_sink = None
        self.run_id = os.urandom(6).hex()
        self.seq = 0
        self.summarized = False
        self._lock = threading.Lock()

    def sinks(self):
        return [s for s in (self.audit, self.eventlog) if s is not None]

    def write(self, sinks=None, **fields):
        """One record to every sink (or to ``sinks``), the file first, under
        one seq (an outcome passes its intent's); returns the seq.  The
        first sink that fails raises AuditError with its ``sink``.  An
        intent then goes to no later sink, and the sinks that took it get
        its ``not-attempted`` outcome at once: no intent is left looking as
        if its change were in flight.  An outcome is offered to every
        sink, whichever failed."""
        with self._lock:
            seq = fields.pop("seq", None)
            if seq is None:
                self.seq += 1
                seq = self.seq
            record = self._record(seq, fields)
            taken, error = [], None
            for sink in self.sinks() if sinks is None else sinks:
                try:
                    sink.append(record)
                    taken.append(sink)
                except AuditError as e:
                    e.sink = e.sink or sink
                    error = error or e
                    if record["phase"] == "intent":
                        break
            if error is None:
                return seq
            if record["phase"] == "intent":
                closing = self._record(seq, dict(
                    fields, phase="outcome", result=SKIPPED,
                    message=Text("not attempted: %(why)s",
                                 why=self.stopped_by(error.sink)).en()))
                for sink in taken:
                    try:
                        sink.append(closing)
                    except AuditError:
                        pass        # that sink's own failure comes later
            raise error

    def _record(self, seq, fields):
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        record = dict(time="%s.%03dZ" % (stamp, int(now % 1 * 1000)),
                      run=self.run_id, seq=seq, phase=None,
                      operator=self.run.operator(), server=None,
                      session=None, user=None, domain=None, action=None,
                      result=None, error=None, message=None, warned=None)
        record.update(fields)
        return record

    def cannot_write(self, e):
        """What is reported when sink ``e.sink`` could not take a record."""
        if e.sink is not None and e.sink is self.eventlog:
            return Text("the event log (source %(source)s) cannot be "
                        "written: %(why)s", source=self.eventlog.source,
                        why=e.args[0])
        return Text("the audit log %(file)s cannot be written: %(why)s",
                    file=self.run.opts.log, why=e.args[0])

    def stopped_by(self, sink=None):
        """Why nothing more is changed, naming the sink that failed."""
        sink = sink or self.failed_sink
        if sink is not None and sink is self.eventlog:
            return Text("the event log cannot be written")
        return Text("the audit log cannot be written")

    def failed(self, e):
        """Record the first failure of a sink, once, on stderr too."""
        if self.failure is None:
            self.failed_sink = e.sink
            self.failure = Failure(None, self.cannot_write(e))
            self.run.complain(self.failure.screen())

    def summary(self, code, counts=None, message=None):
        """/eventlog: the run's last event, once, with its counts (by
        default, the targets' results, the warned sessions and the failed
        servers), exit code and, for a run that failed as a whole, why.
        Returns the exit code, which a failure to write the summary makes
        2 (something was done) or 1, as the rules say."""
        if self.eventlog is None or self.summarized:
            return code
        self.summarized = True
        if counts is None:
            counts = {}
            for t in self.run.targets():
                counts[t.result] = counts.get(t.result, 0) + 1
            counts["warned"] = sum(1 for t in self.run.targets()
                                   if t.warned)
            counts["server-errors"] = sum(1 for j in self.run.jobs
                                          if j.failure is not None)
        # The same keys in every summary, for a SIEM's schema.
        counts, given = {"warned": 0, "server-errors": 0}, counts
        counts.update(given)
        try:
            self.write(sinks=[self.eventlog], phase="summary",
                       counts=counts, exit_code=code,
                       message=message.en() if message else None)
        except AuditError as e:
            self.failed(e)
            done = sum(n for k, n in counts.items() if k in _DONE_RESULTS)
            return 2 if done else 1
        return code

    def close(self):
        for sink in self.sinks():
            sink.close()

    def _audit(self, target, **fields):
        """One audit record about a target.  A record that cannot be
        written stops the run: nothing more is changed anywhere."""
        if not self.sinks():
            return None
        s = target.session
        try:
            return self.write(server=target.server, session=s.id,
                              user=s.user, domain=s.domain, **fields)
        except AuditError as e:
            self.failed(e)
            self.run.stop()
            raise

    def begin(self, job, target, action):
        """The intent line of a change; False if the change may not start."""
        with self.run.lock:
            if not (self.run.stopping or self.run.interrupted is not None
                    or job.cancel.is_set()):
                try:
                    target.seq = self._audit(target, phase="intent",
                                             action=action)
                    target.pending = action
                    return True
                except AuditError:
                    pass
            self.settle(target, SKIPPED, message=Text(
                "not attempted: %(why)s", why=self.run.why_stopped(job)))
            return False

    def outcome(self, target, action, result, failure=None, message=None):
        """The outcome line of a change begun with ``begin``."""
        with self.run.lock:
            seq, target.seq, target.pending = target.seq, None, None
            if not self.sinks() or (seq is None and result == SKIPPED):
                return
            if failure is not None:
                message = failure.message
            message = message or (target.note if action == "logoff"
                                  else None)
            fields = dict(phase="outcome", action=action, result=result,
                          error=failure.code if failure else None,
                          message=message.en() if message else None)
            fields["warned"] = target.warned
            if seq is not None:
                fields["seq"] = seq
            try:
                self._audit(target, **fields)
            except AuditError:
                pass              # reported once; the run has stopped

    def settle(self, target, result, failure=None, message=None):
        """A target's final result, recorded once (a late thread of a
        given-up server finds it settled), with its audit line.  Returns
        False if it was settled already."""
        with self.run.lock:
            if target.final:
                return False
            target.final = True
            target.result = result
            if failure is not None:
                target.error = failure.code
                message = failure.message
            target.message = message
            self.outcome(target, target.pending or "logoff", result, failure,
                         message)
            return True


def _warn_server(run, job):
    """Send the warning to each active target; the others cannot read it
    (a message to a disconnected session reaches no one) and are noted."""
    opts = run.opts
    title = str(Text("Message from %(operator)s",
                     operator=run.operator() or _("your administrator")))
    # The box closes itself when the grace ends; 0 would mean never.
    timeout = max(1, int(opts.grace + 0.999))
    srv = job.handle()
    for t in job.targets:
        if job.cancel.is_set():
            break                   # given up or stopping: nothing more here
        if t.session.state != State.WTSActive:
            t.warned = False
            t.note = Text("not warned: the session is %(state)s, and a "
                          "message cannot reach it",
                          state=state_word(t.session.state))
            continue
        run.verbose(Text("Warning %(who)s.", who=t.who()))
        if not run.trail.begin(job, t, "warn"):
            t.warned = False
            continue
        try:
            srv.send_message(t.session.id, title, opts.warn,
                             timeout=timeout, wait=False)
        except wtsapi.WTSError as e:
            t.warned = False
            failure = failure_of(e, job.server)
            run.complain(Text("could not warn %(who)s: %(why)s",
                              who=t.who(), why=failure.screen()))
            failure.message = Text("could not warn: %(why)s",
                                   why=failure.message)
            run.trail.settle(t, FAILED, failure)
        else:
            with run.lock:
                if t.final or t.pending != "warn":
                    continue        # given up meanwhile: already settled
                t.warned = True
                run.trail.outcome(t, "warn", "ok")


def _grace(run):
    """Wait the grace period; an interrupt spares everyone."""
    waiting = [t for t in run.targets() if t.result is None]
    if not waiting:
        return True
    run.verbose(Text("Waiting %(grace)s before logging off %(n)d "
                     "session(s).", grace=seconds_label(run.opts.grace),
                     n=len(waiting)))
    end = time.monotonic() + run.opts.grace
    try:
        while run.interrupted is None and not run.stopping:
            left = end - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(left, 0.1))
    except KeyboardInterrupt:              # no handler of ours: not main
        run.interrupted = "SIGINT"
    run.stop()
    for t in waiting:
        run.trail.settle(t, SPARED, message=Text("interrupted during the grace "
                                           "period"))
    run.complain(Text("interrupted during the grace period: no one was "
                      "logged off."))
    return False


def _spare_reason(run, target, now):
    """Why a target is not logged off after all, from a fresh snapshot
    (None: it is)."""
    if now is None:
        return Text("the session has ended")
    before = target.session
    if (fold(now.user), fold(now.domain)) != (fold(before.user),
                                              fold(before.domain)):
        return Text("the session now belongs to %(who)s",
                    who=now.account or _("no user"))
    if target.warned is False and target.note is not None and \
            now.state != before.state:
        return Text("it was %(then)s when the warnings went out and is "
                    "%(now)s now: it never saw the warning",
                    then=state_word(before.state),
                    now=state_word(now.state))
    if run.opts.session is None and (
            now.id == 0 or not now.user or now.state == State.WTSListen
            or _is_console(now)):
        return Text("it is now a session a selection never takes (%(what)s)",
                    what=now.name or state_word(now.state))
    if run.opts.session is None and not _matches(run, now):
        return Text("the session no longer matches (now %(state)s)",
                    state=state_word(now.state))
    return None


def _spare(run, target, why):
    if run.trail.settle(target, SPARED, message=why):
        run.verbose(Text("Sparing %(who)s: %(why)s.", who=target.who(),
                         why=why))


def _refresh(run, job, srv, targets):
    """Read the server again and keep only the targets that still exist,
    still belong to the same user and still match; returns them, in
    order."""
    current = {s.id: s for s in srv.sessions()}
    job.read_at = time.monotonic()
    kept = []
    for t in targets:
        now = current.get(t.session.id)
        why = _spare_reason(run, t, now)
        if why is None:
            t.session = now
            kept.append(t)
        else:
            _spare(run, t, why)
    return kept


def _reread_idle(run, job, srv, pending):
    """/idle: read the idle time again for the next targets to act on (the
    end of ``pending``), a batch at a time, so a long run on a slow link
    reads each session again once, not once per refresh."""
    batch = [t for t in pending[-IDLE_BATCH:]
             if time.monotonic() - t.read_at > FRESH_SECONDS]
    before = {id(t): t.idle for t in batch}
    read_times(srv, batch, job.cancel)
    dropped = set()
    for t in batch:
        if t.gone:
            why = Text("the session has ended or changed hands")
        elif t.idle is None or t.idle < run.opts.idle:
            why = Text("the session is no longer idle long enough (idle now "
                       "%(idle)s, was %(was)s)",
                       idle=format_idle(t.idle) or "?",
                       was=format_idle(before[id(t)]) or "?")
        else:
            continue
        _spare(run, t, why)
        dropped.add(id(t))
    return [t for t in pending if id(t) not in dropped]


def act_server(run, job):
    """Log off the planned targets on one server, each from a snapshot at
    most FRESH_SECONDS old (after a grace period, always a new one), then,
    with /wait, wait for them to go."""
    opts = run.opts
    pending = [t for t in job.targets if t.result is None][::-1]
    if not pending:
        return
    srv = job.handle()
    issued = []
    refresh = opts.warn is not None
    if refresh:
        for t in pending:
            t.read_at = 0.0         # a grace period makes every read stale
    while pending and not job.cancel.is_set():
        # Each check is followed by at least one logoff, so a server slower
        # than FRESH_SECONDS still makes progress.
        if refresh or time.monotonic() - job.read_at > FRESH_SECONDS:
            pending = _refresh(run, job, srv, pending)
            refresh = False
        if opts.idle is not None and pending and \
                time.monotonic() - pending[-1].read_at > FRESH_SECONDS:
            pending = _reread_idle(run, job, srv, pending)
        if not pending:
            break
        t = pending.pop()
        run.verbose(Text("Logging off %(who)s.", who=t.who()))
        if not run.trail.begin(job, t, "logoff"):
            continue
        if time.monotonic() - job.read_at > FRESH_SECONDS and \
                not _refresh(run, job, srv, [t]):
            continue                # the intent write took long: look again
        try:
            srv.logoff(t.session.id, wait=False)
        except wtsapi.WTSError as e:
            if e.winerror == wtsapi.ERROR_CTX_WINSTATION_NOT_FOUND:
                _spare(run, t, Text("the session has ended"))
            else:
                _failed(run, t, failure_of(e, job.server))
            continue
        if opts.wait is None:
            _logged_off(run, t)
        else:
            issued.append(t)
    if issued:
        _wait_gone(run, job, srv, issued)


def _failed(run, target, failure):
    if run.trail.settle(target, FAILED, failure):
        run.complain(Text("could not log off %(who)s: %(why)s",
                          who=target.who(), why=failure.screen()))


def _logged_off(run, target):
    if run.trail.settle(target, DONE):
        run.verbose(Text("Session ID %(id)d on %(server)s has been logged "
                         "off.", id=target.session.id,
                         server=server_label(target.server)))


def _wait_gone(run, job, srv, issued):
    """/wait: poll, one enumeration a round, until the sessions are gone or
    the limit passes.  WTSLogoffSession's own bWait is never used: it is
    reported to block forever, even after the session has gone."""
    end = time.monotonic() + run.opts.wait
    pause = 0.1
    while True:
        present = {s.id for s in srv.sessions()}
        for t in [t for t in issued if t.session.id not in present]:
            issued.remove(t)
            _logged_off(run, t)
        if job.cancel.is_set():
            return          # issued, outcome unknown: see _close_out
        if not issued or time.monotonic() >= end:
            break
        time.sleep(min(pause, max(0.0, end - time.monotonic())))
        pause = min(pause * 2, 2.0)
    for t in issued:
        _failed(run, t, Failure(wtsapi.ERROR_TIMEOUT, Text(
            "the logoff did not finish within %(limit)s",
            limit=seconds_label(run.opts.wait)), show_code=False))


def _run_phase(run, phase, last=False):
    """A phase on every server still in the run, /timeout for each."""
    jobs = [j for j in run.jobs if j.failure is None and not j.timed_out]
    for job in jobs:
        job.cancel = threading.Event()
        job.started = job.finished = False
    if run.stopping or run.interrupted is not None:
        return False
    ok = _fan_out(run, jobs, phase, last)
    _settle_given_up(run, jobs)
    return ok


def _settle_given_up(run, jobs):
    """Servers that ran out of time, and every server of an interrupted
    run, are closed out: their work stops where it is."""
    for job in jobs:
        if job.timed_out and job.failure is None:
            job.failure = Failure(wtsapi.ERROR_TIMEOUT, Text(
                "no answer within %(limit)s; the server was given up",
                limit=seconds_label(run.opts.timeout)))
        if job.timed_out or run.interrupted is not None:
            _close_out(run, job)


def _close_out(run, job):
    """Every target of the job still open gets its result: a logoff that
    was issued has an unknown outcome; anything else was not attempted
    (a warning whose fate is unknown may not have been read, so its
    session is not logged off)."""
    why = run.why_stopped(job)
    for t in job.targets:
        if t.final:
            continue
        if t.pending == "logoff":
            run.trail.settle(t, UNKNOWN, Failure(wtsapi.ERROR_TIMEOUT, Text(
                "issued; the outcome is unknown: %(why)s", why=why)))
            continue
        if t.pending == "warn":
            run.trail.outcome(t, "warn", UNKNOWN, message=Text(
                "issued; the outcome is unknown: %(why)s", why=why))
        run.trail.settle(t, SKIPPED, Failure(
            wtsapi.ERROR_TIMEOUT if job.timed_out else None,
            Text("not attempted: %(why)s", why=why)))


def _check_max(run):
    """/max, a guard rail for scheduled tasks: when the plan holds more
    sessions in all, nothing changes on any server."""
    planned = run.targets()
    if run.opts.max is None or len(planned) <= run.opts.max:
        return True
    run.limit_failure = Text(
        "the plan holds %(n)d sessions, more than /max:%(max)d",
        n=len(planned), max=run.opts.max)
    run.complain(Text("the plan holds %(n)d sessions, more than /max:%(max)d;"
                      " nothing was changed.", n=len(planned),
                      max=run.opts.max))
    return False


def execute(run):
    """Plan on every server, then act on the plan; returns the exit code."""
    try:
        _plan_and_act(run)
    finally:
        _release(run)
    run.progress.done()
    return report(run)


def _plan_and_act(run):
    opts = run.opts
    run.own.id()          # a local failure is the run's, not a server's
    planned = _run_phase(run, plan_server, last=opts.query or opts.whatif)
    if opts.query:
        for t in run.targets():
            t.result, t.final = LISTED, True
    elif planned and _check_max(run):
        if opts.whatif:
            for t in run.targets():
                t.result, t.final = WOULD, True
        elif (opts.warn is None or _run_phase(run, _warn_server)
              and _grace(run)):
            _run_phase(run, act_server, last=True)
    for job in run.jobs:
        _close_out(run, job)


def _release(run):
    """Close every server handle no thread still uses; a thread still
    running (a given-up or interrupted server) closes its own."""
    with run.lock:
        idle = [job for job in run.jobs if not job.running]
        for job in run.jobs:
            job.abandoned = job.running
    for job in idle:
        job.close()


def logoff_own(run):
    """logoff with no session: the caller's own, as WTS_CURRENT_SESSION."""
    opts = run.opts
    trail = run.trail
    audited = bool(trail.sinks())
    sid = run.own.id()
    if sid == 0:
        # A scheduled task as SYSTEM, a service, a WinRM or Salt command:
        # "my own session" there is the services session.
        run.complain(Text("the current session is session 0, the services "
                          "session; it has no user to log off. Give a "
                          "session or a selection."))
        return trail.summary(1, {SKIPPED: 1})
    if opts.whatif:
        OUT.line(str(Text("What if: log off session %(id)d, the current "
                          "session.", id=sid)))
        return trail.summary(0, {WOULD: 1})
    if sid is not None:
        run.verbose(Text("Logging off session ID %(id)d, the current "
                         "session.", id=sid))
    own = run.own.details() if audited else None
    line = dict(server=None, session=sid, user=own.user if own else None,
                domain=own.domain if own else None, action="logoff")
    seq = None
    if audited:
        try:
            seq = trail.write(phase="intent", **line)
        except AuditError as e:
            trail.failure = Failure(None, trail.cannot_write(e))
            trail.failed_sink = e.sink
            if e.sink is trail.eventlog:
                run.complain(Text("the event log (source %(source)s) cannot "
                                  "be written: %(why)s; nothing was done.",
                                  source=opts.eventlog, why=e.args[0]))
            else:
                run.complain(Text("the audit log %(file)s cannot be "
                                  "written: %(why)s; nothing was done.",
                                  file=opts.log, why=e.args[0]))
            return trail.summary(1, {SKIPPED: 1})
    with wtsapi.Server() as local:
        try:
            local.logoff(wtsapi.WTS_CURRENT_SESSION, wait=False)
        except wtsapi.WTSError as e:
            failure = failure_of(e)
            outcome = dict(result=FAILED, error=e.winerror,
                           message=failure.en())
            run.complain(failure.screen())
        else:
            failure = None
            outcome = dict(result=DONE, error=None, message=None)
    code = 0 if failure is None else 1
    if audited:
        try:
            trail.write(phase="outcome", seq=seq, **dict(line, **outcome))
        except AuditError as e:
            trail.failed(e)
            code = 2 if failure is None else 1
    return trail.summary(code, {outcome["result"]: 1})


# --- Report ------------------------------------------------------------------------

class Progress:
    """One updating line on stderr while several servers are worked on:
    only on a console, never with /json."""

    def __init__(self, run):
        self.run = run
        self.shown = ""
        self.on = False

    def start(self):
        opts = self.run.opts
        self.on = (len(self.run.jobs) > 1 and not opts.json
                   and ERR.isatty())

    def update(self, phase=None):
        if not self.on:
            return
        jobs = self.run.jobs
        done = sum(1 for j in jobs if j.finished or j.timed_out
                   or j.failure is not None)
        if phase is plan_server:
            text = str(Text("reading servers %(done)d/%(all)d",
                            done=done, all=len(jobs)))
        else:
            targets = self.run.targets()
            text = str(Text(
                "servers %(done)d/%(all)d, %(off)d logged off, %(failed)d "
                "failed", done=done, all=len(jobs),
                off=sum(1 for t in targets if t.result == DONE),
                failed=sum(1 for t in targets if t.result in _FAILED_RESULTS)
                + sum(1 for j in jobs if j.failure is not None)))
        if text != self.shown:
            pad = " " * max(0, len(self.shown) - len(text))
            ERR.write("\r%s%s" % (text, pad))
            self.shown = text

    def done(self):
        if self.on and self.shown:
            ERR.write("\r%s\r" % (" " * len(self.shown)))
            self.shown = ""


def exit_code(run):
    """0 all done (or nothing to do); 1 nothing done; 2 partly done."""
    targets = run.targets()
    done = sum(1 for t in targets if t.result in _DONE_RESULTS)
    failed = (sum(1 for t in targets if t.result in _FAILED_RESULTS)
              + sum(1 for j in run.jobs if j.failure is not None)
              + (run.trail.failure is not None)
              + (run.interrupted is not None)
              + (run.limit_failure is not None))
    if not failed:
        return 0
    return 2 if done else 1


def _json_document(json, doc):
    """One session or server error a line: readable, and written by the C
    encoder (``indent`` would use the pure-Python one, ten times slower
    at 10,000 sessions)."""
    def items(key):
        rows = doc[key]
        if not rows:
            return "[]"
        return "[\n    %s\n  ]" % ",\n    ".join(
            json.dumps(r, ensure_ascii=True) for r in rows)
    return '{\n  "sessions": %s,\n  "server_errors": %s,\n  "exit_code": %d\n}' \
        % (items("sessions"), items("server_errors"), doc["exit_code"])


def _server_record(job):
    f = job.failure
    return {"server": job.server, "function": f.function, "error": f.code,
            "message": f.en()}


def report(run):
    """Server errors (stderr), listings and what-ifs (stdout), or the JSON
    document; returns the exit code, the same one the JSON holds."""
    opts = run.opts
    # The event log's summary first: failing to write it changes the code.
    code = run.trail.summary(exit_code(run))
    failed_jobs = [j for j in run.jobs if j.failure is not None]
    if opts.json:
        import json
        doc = {"sessions": [t.record() for t in run.targets()],
               "server_errors": [_server_record(j) for j in failed_jobs],
               "exit_code": code}
        # ASCII: lossless on any stdout encoding (cp1252, cp932, a WinRM
        # pipe); every JSON reader turns \\u escapes back into the text.
        OUT.line(_json_document(json, doc))
        return code
    for job in failed_jobs:
        f = job.failure
        if f.function is None and f.code != wtsapi.ERROR_TIMEOUT:
            run.complain(f.screen())        # a refusal names its server
            continue
        label = str(server_label(job.server))
        run.complain("%s%s: %s" % (label[0].upper(), label[1:], f.screen()))
    if opts.query:
        _print_table(run.targets())
    elif opts.whatif:
        for t in run.targets():
            if opts.warn is not None and t.session.state == State.WTSActive:
                OUT.line(str(Text(
                    "What if: warn %(who)s, wait %(grace)s, then log it off if "
                    "it still matches.", who=t.who(),
                    grace=seconds_label(opts.grace))))
            elif opts.warn is not None:
                OUT.line(str(Text(
                    "What if: wait %(grace)s, then log off %(who)s if it is "
                    "still %(state)s (a warning cannot reach it).",
                    who=t.who(), grace=seconds_label(opts.grace),
                    state=state_word(t.session.state))))
            else:
                OUT.line(str(Text("What if: log off %(who)s.", who=t.who())))
    if not run.targets() and not failed_jobs and (opts.selecting or
                                                  opts.query):
        run.verbose(Text("No session matches the selection."))
    return code


def _width(text):
    """Columns a string takes in a terminal: East Asian wide characters
    take two."""
    if text.isascii():
        return len(text)
    from unicodedata import east_asian_width
    return sum(2 if east_asian_width(c) in "WF" else 1 for c in text)


def _shown(text, enc):
    """The text as the console will show it: what stdout's encoding cannot
    hold becomes '?', so columns are measured on what is printed."""
    if text.isascii():
        return text                 # every console code page holds ASCII
    try:
        return text.encode(enc, "replace").decode(enc, "replace")
    except LookupError:
        return text


def _local_minute(when):
    """A logon time in local time; UTC where the platform cannot convert it
    (Windows' C runtime refuses dates before 1970 or after 3000)."""
    try:
        return when.astimezone().strftime("%Y-%m-%d %H:%M")
    except (OverflowError, OSError, ValueError):
        return when.strftime("%Y-%m-%d %H:%MZ")


def _print_table(targets):
    # Headers and state words as `quser` shows them in the reader's language.
    rows = [("", _("SERVER"), _("ID"), _("SESSIONNAME"), _("USERNAME"),
             _("STATE"), _("IDLE TIME"), _("LOGON TIME"))]
    local = _("(local)")
    states = {}
    for t in targets:
        s = t.session
        logon = t.logon
        logon = _local_minute(logon) if logon else ""
        state = states.get(s.state)
        if state is None:
            state = states[s.state] = str(state_text(s.state))
        rows.append((">" if t.own else "", t.server or local, str(s.id),
                     s.name, s.account, state, format_idle(t.idle), logon))
    enc = getattr(OUT.stream(), "encoding", None) or "utf-8"
    cells, sizes = [], []
    for r in rows:
        if "".join(r).isascii():            # the common row: C speed
            cells.append(r)
            sizes.append(tuple(map(len, r)))
        else:
            r = tuple(_shown(c, enc) for c in r)
            cells.append(r)
            sizes.append(tuple(map(_width, r)))
    widths = [max(col) for col in zip(*sizes)]
    OUT.write("".join(
        " ".join(c + " " * (w - n) for c, n, w in zip(r, ns, widths))
        .rstrip() + "\n" for r, ns in zip(cells, sizes)))


# --- The command -------------------------------------------------------------------

def _on_signal(run):
    """Ctrl+C, SIGTERM, Ctrl+Break and a closed console window (which the C
    runtime reports as SIGBREAK) become a request to stop, seen between
    steps: no new change starts, and the report is still made."""
    import signal
    names = ["SIGINT", "SIGTERM", "SIGBREAK"]

    def handler(signum, frame):
        run.interrupted = signum
    saved = []
    for name in names:
        num = getattr(signal, name, None)
        if num is None:
            continue
        try:
            saved.append((num, signal.signal(num, handler)))
        except (ValueError, OSError):   # not the main thread
            pass

    def restore():
        for num, old in saved:
            try:
                signal.signal(num, old)
            except (ValueError, OSError, TypeError):
                pass
    return restore


def _usage_error(e):
    ERR.line(str(Text("Invalid parameter(s): %(why)s", why=e.args[0])))
    ERR.write(_(USAGE_BASIC))
    ERR.line(_("Type LOGOFF /? for every switch."))
    return 1


def main(argv=None):
    """Run the command; return the exit code (0, 1 or 2)."""
    if argv is None:
        argv = sys.argv[1:]
    set_language()
    try:
        opts = parse_args(argv)
    except UsageError as e:
        return _usage_error(e)
    except KeyboardInterrupt:           # while /server:@- reads stdin
        ERR.line(_("logoff: interrupted."))
        return 1
    if opts.help:
        OUT.write(_(USAGE_BASIC) + _(USAGE_MORE))
        return 0
    run = Run(opts)
    restore = _on_signal(run)
    try:
        if opts.log:
            try:
                run.trail.audit = Audit(opts.log)
            except AuditError as e:
                ERR.line(str(Text("logoff: cannot open the log file "
                                  "%(file)s: %(why)s", file=opts.log,
                                  why=e.args[0])))
                return 1
        if opts.eventlog is not None:
            try:
                run.trail.eventlog = EventLog(opts.eventlog)
            except (OSError, ValueError) as e:
                ERR.line(str(Text("logoff: cannot register the event source "
                                  "%(source)s: %(why)s", source=opts.eventlog,
                                  why=_event_failure(e))))
                return 1
        if opts.session is None and not opts.selecting and not opts.query:
            return logoff_own(run)
        run.progress.start()
        return execute(run)
    except KeyboardInterrupt:
        ERR.line(_("logoff: interrupted."))
        return run.trail.summary(1, message=Text("interrupted"))
    except OSError as e:
        # The library could not be loaded, or a local call failed.
        failure = failure_of(e)
        ERR.line("logoff: %s" % failure.screen())
        # With /eventlog the run still ends with its summary: under
        # pythonw.exe in a scheduled task nobody sees stderr.
        return run.trail.summary(1, message=failure.message)
    except Exception as e:         # a bug of ours: one line, not a traceback
        failure = failure_of(e)
        ERR.line("logoff: %s" % failure.screen())
        return run.trail.summary(1, message=failure.message)
    finally:
        restore()
        run.trail.close()


if __name__ == "__main__":
    sys.exit(main())
