"""The implementation of logoff.py (which see); imported as ``logoff``.

A drop-in for Windows' ``logoff.exe``, plus selection by user, state and idle
time, warn-then-logoff, many servers at once, JSON output and an audit log.
Standard library only; the Windows calls live in ``wtsapi.py``.  Modules a
path does not need (threading, json, fnmatch, datetime, socket) are imported
where they are used, to keep start-up near the floor of ``import ctypes``.

``main(argv=None) -> int`` is the whole program; exit codes are in ``/?``.
"""

import _thread
import os
import sys

USAGE = """\
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

Beyond logoff.exe: select sessions instead of naming one (all combinable):
  /USER:PATTERN[,...] Users, as name or DOMAIN\\name; * and ? wildcards.
  /STATE:LIST         States: active, disconnected (disc), idle, connected,
                      connectquery, shadow, reset, down, init.
  /IDLE:DURATION      Idle at least this long, by the server's clock (for a
                      disconnected session: since it was disconnected).
  A selection never includes session 0, listeners, the console session or
  your own session; one that matches nothing is not an error.
  /QUERY              List the sessions (the selected ones, with a
                      selection); change nothing.
  /WARN:TEXT          Send TEXT to each selected session first, wait /GRACE,
                      look again, and log off only the sessions that still
                      exist, belong to the same user and match.
  /GRACE:DURATION     Time between warning and logoff (default 5m).
  /WAIT[:DURATION]    Wait until each logoff has finished (at most DURATION).
  /WHATIF             Show what would be done; send and log off nothing.
  /SERVER:A,B,@FILE   Several servers: names, and files of names (one a
                      line, # comments).
  /PARALLEL:N         Servers worked on at once (default 16).
  /TIMEOUT:DURATION   Time limit for each server (default 60s).
  /JSON               One JSON document on stdout instead of text.
  /LOG:FILE           Append one JSON line per action to FILE (audit log).
  DURATION: a number with an optional unit s, m, h or d (90s, 15m, 2h, 1d);
  a bare number is seconds.

Exit codes: 0 all done, or nothing matched; 1 invalid parameters, or nothing
requested succeeded; 2 partly done (some sessions or servers failed).
"""

MAX_SESSION_ID = 0xFFFFFFFE           # 0xFFFFFFFF is WTS_CURRENT_SESSION

# name -> value policy: None none allowed, True required, False optional.
_SWITCHES = {
    "?": None, "v": None, "query": None, "whatif": None, "json": None,
    "server": True, "user": True, "state": True, "idle": True, "warn": True,
    "grace": True, "parallel": True, "timeout": True, "log": True,
    "wait": False,
}
_SELECTORS = ("user", "state", "idle")

_STATE_NAMES = {
    "active": 0, "connected": 1, "connectquery": 2, "shadow": 3,
    "disconnected": 4, "disc": 4, "idle": 5, "listen": 6, "reset": 7,
    "down": 8, "init": 9,
}
_STATE_LABELS = ("Active", "Connected", "ConnectQuery", "Shadow",
                 "Disconnected", "Idle", "Listen", "Reset", "Down", "Init")
_ACTIVE, _DISCONNECTED, _LISTEN = 0, 4, 6

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class UsageError(Exception):
    """Invalid parameters: nothing has been called."""


class Refused(Exception):
    """A request this tool will not carry out; ``code`` is the Win32 error
    code that best describes it, if any."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


# --- Output -----------------------------------------------------------------------

def _write(stream, text):
    """Write text that may hold any script: replaced, never a crash, where
    the stream's encoding (a code page, ASCII) cannot hold a character."""
    try:
        stream.write(text)
    except UnicodeEncodeError:
        enc = getattr(stream, "encoding", None) or "ascii"
        stream.write(text.encode(enc, "replace").decode(enc, "replace"))
    try:
        stream.flush()
    except (OSError, ValueError):
        pass


def _say(text):
    _write(sys.stdout, text + "\n")


def _complain(text):
    _write(sys.stderr, text + "\n")


# --- Parsing ----------------------------------------------------------------------

def parse_duration(text, what):
    """'90s', '15m', '2h', '1d' or a bare number of seconds -> seconds."""
    t = text.strip().lower()
    factor = _UNITS.get(t[-1:], None)
    number = t[:-1] if factor else t
    factor = factor or 1
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if not number or not value >= 0 or value * factor > 10 ** 9 or \
            number.lstrip("0123456789.") != "":
        raise UsageError("%s: %r is not a duration (such as 90s, 15m, 2h, 1d)"
                         % (what, text))
    return value * factor


def _is_session_id(text):
    # str.isdigit() would also take '²' or Arabic-Indic digits.
    return text != "" and all("0" <= c <= "9" for c in text)


def _split_list(text):
    return [p.strip() for p in text.split(",") if p.strip()]


def _read_server_file(path):
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError("/server:@%s: cannot read the file: %s" % (
            path, getattr(e, "strerror", None) or e))
    names = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(line)
    return names


def _parse_servers(value):
    names = []
    for item in _split_list(value):
        if item.startswith("@"):
            if not item[1:]:
                raise UsageError("/server:@ needs a file name")
            names.extend(_read_server_file(item[1:]))
        else:
            names.append(item)
    seen, out = set(), []
    for name in names:
        name = name.lstrip("\\")          # \\SERVER is how admins write it
        if not name or any(c in name for c in " \t\\/,:"):
            raise UsageError("/server: %r is not a server name" % name)
        if name.lower() not in seen:
            seen.add(name.lower())
            out.append(name)
    if not out:
        raise UsageError("/server: needs a server name")
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
        self.wait = False
        self.wait_limit = None
        self.parallel = 16
        self.timeout = 60.0
        self.log = None

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
                raise UsageError("unknown switch %s" % arg.partition(":")[0])
            if name in seen:
                raise UsageError("/%s is given twice" % name)
            seen.add(name)
            policy = _SWITCHES[name]
            if policy is None and colon:
                raise UsageError("/%s takes no value" % name)
            if policy is True and not value.strip():
                raise UsageError("/%s needs a value (/%s:...)" % (name, name))
            if policy is False and colon and not value.strip():
                raise UsageError("/%s: needs a value after the colon" % name)
            _apply_switch(opts, name, value if colon else None)
        else:
            positional.append(arg)
    if opts.help:
        return opts
    if len(positional) > 1:
        raise UsageError("more than one session given")
    if positional:
        arg = positional[0]
        if _is_session_id(arg):
            sid = int(arg)
            if sid > MAX_SESSION_ID:
                raise UsageError("session ID %s is out of range (0 to %d)"
                                 % (arg, MAX_SESSION_ID))
            opts.session = sid
        elif arg.strip() == "" or arg.startswith(("/", "-")) or ":" in arg:
            raise UsageError("%r is not a session name or ID" % arg)
        else:
            opts.session = arg
    _check_combination(opts, seen)
    return opts


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
            raise UsageError("/user: needs a user name or pattern")
    elif name == "state":
        states = set()
        for word in _split_list(value):
            code = _STATE_NAMES.get(word.lower())
            if code is None:
                raise UsageError("/state: unknown state %r (use %s)" % (
                    word, ", ".join(sorted(_STATE_NAMES))))
            states.add(code)
        if not states:
            raise UsageError("/state: needs a state name")
        opts.states = states
    elif name == "idle":
        opts.idle = parse_duration(value, "/idle")
    elif name == "warn":
        opts.warn = value
    elif name == "grace":
        opts.grace = parse_duration(value, "/grace")
    elif name == "wait":
        opts.wait = True
        if value is not None:
            opts.wait_limit = parse_duration(value, "/wait")
    elif name == "parallel":
        v = value.strip()
        if not _is_session_id(v) or not 1 <= int(v) <= 256:
            raise UsageError("/parallel: %r is not a number from 1 to 256"
                             % value)
        opts.parallel = int(v)
    elif name == "timeout":
        opts.timeout = parse_duration(value, "/timeout")
        if opts.timeout <= 0:
            raise UsageError("/timeout: must be more than 0")
    elif name == "log":
        opts.log = value


def _check_combination(opts, seen):
    if opts.session is not None:
        if opts.selecting:
            raise UsageError("a session name or ID cannot be combined with "
                             "/user, /state or /idle")
        if len(opts.servers) > 1:
            raise UsageError("a session name or ID needs exactly one server")
    elif not opts.selecting and not opts.query:
        if opts.servers:
            raise UsageError("/server needs a session name or ID, or a "
                             "selection: your current session is not on "
                             "another server")
        if opts.warn is not None or opts.json:
            raise UsageError("/warn and /json need a session name or ID, "
                             "or a selection")
    if "grace" in seen and opts.warn is None:
        raise UsageError("/grace goes with /warn")
    if opts.query and (opts.warn is not None or opts.wait or opts.whatif):
        raise UsageError("/query changes nothing: it cannot be combined "
                         "with /warn, /wait or /whatif")


# --- Helpers over sessions --------------------------------------------------------

def state_label(state):
    try:
        return _STATE_LABELS[state]
    except (IndexError, TypeError):
        return str(int(state))


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


def _server_label(server):
    return "the local server" if server is None else "server %s" % server


def _own_session_id(srv, server):
    """The caller's own session id, asked of the local server."""
    if server is None:
        return srv.session_id()
    # WTS_CURRENT_SESSION means nothing on a remote handle, even one that
    # happens to name this machine.
    import wtsapi
    return wtsapi.current_session_id()


_LOCAL_NAMES = []


def _is_local_name(server):
    if server is None:
        return True
    name = server.lower()
    if name in (".", "localhost", "127.0.0.1", "::1"):
        return True
    if not _LOCAL_NAMES:
        names = {os.environ.get("COMPUTERNAME", "").lower()}
        try:
            import socket
            host = socket.gethostname().lower()
            names.update((host, host.split(".")[0]))
        except OSError:
            pass
        names.discard("")
        _LOCAL_NAMES.append(names)
    names = _LOCAL_NAMES[0]
    return name in names or name.split(".")[0] in names


def describe_error(e):
    """One line for a failed call, in words an administrator acts on."""
    code = getattr(e, "winerror", None)
    text = getattr(e, "strerror", None) or str(e)
    if code == 5:
        text += (" Logging off, disconnecting or messaging another user's "
                 "session needs Full Control permission on that session "
                 "(run as an administrator of the server).")
    elif code == 1722:
        text += (" The server cannot be reached, or it is not a Remote "
                 "Desktop Session Host.")
    if code is None:
        return text
    return "%s (error %d)" % (text, code)


class Target:
    """A session chosen for action, and what happened to it."""

    __slots__ = ("server", "session", "idle", "logon", "own", "action",
                 "result", "error", "message", "warned")

    def __init__(self, server, session, idle=None, logon=None, own=False):
        self.server = server
        self.session = session
        self.idle = idle
        self.logon = logon
        self.own = own
        self.action = None
        self.result = None
        self.error = None
        self.message = None
        self.warned = None

    def who(self):
        s = self.session
        parts = [s.name] if s.name else []
        if s.account:
            parts.append(s.account)
        parts.append(state_label(s.state))
        if self.idle is not None:
            parts.append("idle %s" % (format_idle(self.idle) or "."))
        return "session %d (%s) on %s" % (s.id, ", ".join(parts),
                                           _server_label(self.server))

    def record(self):
        s = self.session
        return {
            "server": self.server, "id": s.id, "name": s.name,
            "user": s.user, "domain": s.domain,
            "state": state_label(s.state).lower(), "state_code": int(s.state),
            "idle_seconds": self.idle,
            "logon_time": (self.logon.isoformat().replace("+00:00", "Z")
                           if self.logon else None),
            "own": self.own, "action": self.action, "result": self.result,
            "warned": self.warned, "error": self.error,
            "message": self.message,
        }


# --- The drop-in: one named session, or the caller's own ---------------------------

def _find_explicit(server_name, srv, wanted):
    """The session the command line names, under logoff.exe's rules."""
    import wtsapi
    sessions = srv.sessions()
    if isinstance(wanted, int):
        found = [s for s in sessions if s.id == wanted]
        if not found:
            raise Refused("Session ID %d was not found on %s." % (
                wanted, _server_label(server_name)), 7022)
    else:
        key = wanted.casefold()
        found = [s for s in sessions if s.name and s.name.casefold() == key]
        if not found:
            raise Refused("Session %s was not found on %s." % (
                wanted, _server_label(server_name)), 7022)
        if found[0].state != wtsapi.WTS_CONNECTSTATE_CLASS.WTSActive:
            raise Refused(
                "Session %s (ID %d) is %s; a session given by name must be "
                "active. Give its ID to log it off." % (
                    found[0].name, found[0].id,
                    state_label(found[0].state).lower()))
    session = found[0]
    own = False
    if session.id == 0:
        raise Refused("Session 0 is the services session; it has no user "
                      "to log off.")
    if session.state == _LISTEN:
        raise Refused("Session %d (%s) is a listener, not a user session; "
                      "logging it off would reset the listener." % (
                          session.id, session.name))
    if session.name.casefold() == "console":
        if _is_local_name(server_name):
            own = _own_session_id(srv, server_name) == session.id
        if not own:
            raise Refused("Session %d is the console session; users cannot "
                          "be logged off from the console session." %
                          session.id)
    return Target(server_name, session, own=own)


# --- Selection ------------------------------------------------------------------

def _user_matcher(patterns):
    """A predicate over Session: any pattern matches (case-insensitive,
    * and ?); a pattern with a backslash matches DOMAIN\\user, else user."""
    from fnmatch import fnmatchcase
    # '[' cannot be in a Windows user name; keep fnmatch from reading sets.
    pats = [(p.casefold().replace("[", "[[]"), "\\" in p) for p in patterns]

    def match(session):
        if not session.user:
            return False
        user = session.user.casefold()
        account = ("%s\\%s" % (session.domain, session.user)).casefold()
        return any(fnmatchcase(account if with_domain else user, p)
                   for p, with_domain in pats)
    return match


def _select(run, server, srv, times_for_all=False, sessions=None):
    """Targets on one server: the selection's filters ANDed, never session
    0, listeners, the console or the caller's own session.  One
    enumeration (unless ``sessions`` are given); one times query per
    session only where idle time is asked for (by /idle after the other
    filters, or for a listing)."""
    opts = run.opts
    if sessions is None:
        sessions = srv.sessions()
    own_id = run.own_session_id(srv, server) if _is_local_name(server) \
        else None
    users = _user_matcher(opts.users) if opts.users is not None else None
    picked = []
    for s in sessions:
        own = s.id == own_id
        if not opts.query or opts.selecting:
            if (s.id == 0 or s.state == _LISTEN or own
                    or s.name.casefold() == "console"):
                continue
            if opts.states is not None and int(s.state) not in opts.states:
                continue
            if users is not None and not users(s):
                continue
        picked.append(Target(server, s, own=own))
    if opts.idle is not None or times_for_all:
        import wtsapi
        kept = []
        for t in picked:
            if t.session.user or opts.idle is not None:
                try:
                    times = srv.times(t.session.id)
                except wtsapi.WTSError as e:
                    if e.winerror == wtsapi.ERROR_CTX_WINSTATION_NOT_FOUND:
                        continue        # it ended since the enumeration
                    raise
                t.idle, t.logon = times.idle, times.logon
            if opts.idle is None or (t.idle is not None and
                                     t.idle >= opts.idle):
                kept.append(t)
        picked = kept
    return picked


class _Flag:
    """A one-way signal between threads (threading.Event without importing
    threading on the single-session path)."""

    __slots__ = ("_set",)

    def __init__(self):
        self._set = False

    def set(self):
        self._set = True

    def is_set(self):
        return self._set


class Job:
    """One server's share of the work; ``cancel`` is set when the server ran
    out of time or the run was interrupted: no new state change starts."""

    def __init__(self, server):
        self.server = server
        self.cancel = _Flag()
        self.targets = []
        self.warned = []
        self.error = None
        self.timed_out = False


def _fan_out(jobs, work, parallel, timeout):
    """Run ``work(job)`` for every job on at most ``parallel`` daemon threads;
    a job that runs past ``timeout`` seconds is given up (its thread is
    left to finish on its own, with ``job.cancel`` set) and a fresh worker
    takes its place, so a hung server never holds up the others or the
    exit."""
    import threading
    import time
    cond = threading.Condition()
    pending = list(reversed(jobs))
    started = {}
    finished = set()

    def worker():
        while True:
            with cond:
                if not pending:
                    return
                job = pending.pop()
                started[id(job)] = time.monotonic()
            try:
                work(job)
            except BaseException as e:     # reported, never a traceback
                job.error = job.error or e
            with cond:
                finished.add(id(job))
                cond.notify_all()
            if job.timed_out:
                return                     # a replacement took this slot

    def spawn():
        threading.Thread(target=worker, daemon=True).start()

    for _ in range(min(parallel, len(jobs))):
        spawn()
    try:
        with cond:
            while len(finished) < len(jobs):
                now = time.monotonic()
                wake = now + 0.5           # Ctrl+C is seen between waits
                for job in jobs:
                    t0 = started.get(id(job))
                    if (t0 is None or id(job) in finished
                            or job.timed_out):
                        continue
                    if now >= t0 + timeout:
                        job.timed_out = True
                        job.cancel.set()
                        finished.add(id(job))
                        spawn()
                    else:
                        wake = min(wake, t0 + timeout)
                if len(finished) < len(jobs):
                    cond.wait(max(0.0, wake - now))
    except BaseException:
        for job in jobs:
            job.cancel.set()
        raise


def _logoff_one(run, srv, target):
    """Log off one target, honouring /wait and its limit."""
    opts = run.opts
    if opts.wait_limit is None:
        srv.logoff(target.session.id, wait=opts.wait)
        return
    import threading
    import wtsapi
    outcome = []

    def call():
        # A handle of its own: the caller may close srv while this waits.
        try:
            with wtsapi.Server(target.server) as s:
                s.logoff(target.session.id, wait=True)
            outcome.append(None)
        except BaseException as e:
            outcome.append(e)
    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(opts.wait_limit)
    if not outcome:
        raise Refused("the logoff did not finish within %s" %
                      _seconds_label(opts.wait_limit), 1460)
    if outcome[0] is not None:
        raise outcome[0]


def _seconds_label(seconds):
    """A duration as the switches take it: 45s, 10m, 2h30m, 1d2h."""
    if seconds < 60:
        return "%gs" % seconds
    out, rest = "", int(round(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out += "%d%s" % (rest // size, unit)
            rest %= size
    return out


def _act(run, job, srv, targets):
    """Log off (or, with /whatif, report) each target, one call each."""
    import wtsapi
    opts = run.opts
    for target in targets:
        target.action = "logoff"
        if opts.whatif:
            target.result = "would-log-off"
            continue
        if job.cancel.is_set():
            target.result = "failed"
            target.error = 1460
            target.message = "not attempted: the server ran out of time"
            continue
        run.verbose("Logging off %s." % target.who())
        try:
            _logoff_one(run, srv, target)
        except (wtsapi.WTSError, Refused) as e:
            run.session_failed(target, e)
        else:
            target.result = "logged-off"
            run.verbose("Session ID %d on %s has been logged off." % (
                target.session.id, _server_label(target.server)))
        run.audit_target(target, "logoff")


def _warn(run, job, srv, targets):
    """Send the warning; only sessions that got it go on to the logoff."""
    import wtsapi
    opts = run.opts
    warned = []
    for target in targets:
        target.action = "logoff"
        if opts.whatif:
            target.warned = False
            target.result = "would-log-off"
            continue
        if job.cancel.is_set():
            break
        run.verbose("Warning %s." % target.who())
        try:
            srv.send_message(target.session.id, run.title(), opts.warn,
                             timeout=int(opts.grace), wait=False)
        except wtsapi.WTSError as e:
            target.warned = False
            run.session_failed(target, e, "could not warn")
        else:
            target.warned = True
            warned.append(target)
        run.audit_target(target, "warn", ok=target.warned)
    return warned


def _phase_select(run, job):
    """Phase one on a server: choose, then list, report, warn or log off."""
    import wtsapi
    opts = run.opts
    with wtsapi.Server(job.server) as srv:
        if opts.session is not None:
            targets = [_find_explicit(job.server, srv, opts.session)]
        else:
            targets = _select(run, job.server, srv, times_for_all=opts.query)
        job.targets.extend(targets)
        if opts.query:
            for t in targets:
                t.action, t.result = "list", "listed"
        elif opts.warn is not None:
            job.warned = _warn(run, job, srv, targets)
        else:
            _act(run, job, srv, targets)


def _phase_recheck(run, job):
    """Phase two, after the grace period: look again, and log off only the
    warned sessions that still exist, still belong to the same user and
    still match the selection."""
    import wtsapi
    opts = run.opts
    with wtsapi.Server(job.server) as srv:
        if opts.session is not None:
            sessions = None
            try:
                now = {t.session.id: t for t in
                       [_find_explicit(job.server, srv, opts.session)]}
            except Refused:
                now = {}
        else:
            sessions = srv.sessions()
            now = {t.session.id: t for t in
                   _select(run, job.server, srv, sessions=sessions)}
        going = []
        for target in job.warned:
            fresh = now.get(target.session.id)
            why = _spare_reason(target, fresh, sessions)
            if why:
                target.result, target.message = "spared", why
                run.verbose("Sparing %s: %s." % (target.who(), why))
                run.audit_target(target, "logoff")
                continue
            fresh.warned = True
            going.append((target, fresh))
        _act(run, job, srv, [fresh for _, fresh in going])
        for target, fresh in going:
            _copy_outcome(fresh, target)


def _spare_reason(target, fresh, sessions):
    """Why a warned session is not logged off after all (None: it is)."""
    before = (target.session.user.casefold(),
              target.session.domain.casefold())
    if fresh is not None:
        now = fresh.session
    else:
        now = next((s for s in sessions or () if s.id == target.session.id),
                   None)
        if now is None:
            return "the session has ended"
    if (now.user.casefold(), now.domain.casefold()) != before:
        return "the session now belongs to %s" % (now.account or "no user")
    if fresh is None:
        return "the session no longer matches (now %s)" % state_label(
            now.state).lower()
    return None


def _copy_outcome(src, dst):
    dst.session, dst.idle = src.session, src.idle
    dst.action, dst.result = src.action, src.result
    dst.error, dst.message = src.error, src.message


# --- Reporting ---------------------------------------------------------------------

class Audit:
    """The /log file: one JSON line per action, appended and flushed as it
    happens.  Several runs may append at once: on POSIX one O_APPEND write
    of a whole line is atomic; Windows emulates O_APPEND with a seek, so
    there a byte-range lock serialises the writers."""

    _LOCK_OFFSET = 0x7FFFFFFF            # far past any real log's end

    def __init__(self, path):
        import json
        self._json = json
        self._lock = _thread.allocate_lock()
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT |
                          getattr(os, "O_BINARY", 0), 0o644)
        self.operator = _operator()

    def write(self, entry):
        import time
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        line = dict(time="%s.%03dZ" % (stamp, int(now % 1 * 1000)),
                    operator=self.operator)
        line.update(entry)
        data = (self._json.dumps(line, ensure_ascii=False) + "\n").encode(
            "utf-8")
        with self._lock:
            if self.fd is None:
                return          # a given-up server's late thread: run over
            if sys.platform == "win32":
                self._write_locked(data)
            else:
                os.write(self.fd, data)

    def _write_locked(self, data):
        import msvcrt
        os.lseek(self.fd, self._LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(self.fd, msvcrt.LK_LOCK, 1)   # retries for ~10 s
        try:
            os.lseek(self.fd, 0, os.SEEK_END)
            os.write(self.fd, data)
        finally:
            os.lseek(self.fd, self._LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(self.fd, msvcrt.LK_UNLCK, 1)

    def close(self):
        with self._lock:
            fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


def _operator():
    if sys.platform == "win32":
        user = os.environ.get("USERNAME", "")
        domain = os.environ.get("USERDOMAIN", "")
        if user:
            return "%s\\%s" % (domain, user) if domain else user
    try:
        import getpass
        return getpass.getuser()
    except Exception:               # no user name to be had: not fatal
        return ""


class Run:
    """One invocation: options, the jobs and what came of them."""

    def __init__(self, opts):
        self.opts = opts
        self.jobs = []
        self.audit = None
        self._own_id = None
        self._title = None
        self._print_lock = _thread.allocate_lock()

    # -- output ----------------------------------------------------------------

    def verbose(self, text):
        if self.opts.verbose and not self.opts.json:
            with self._print_lock:
                _say(text)

    def own_session_id(self, srv, server):
        """The caller's session id, asked once a run (the re-check after a
        grace period needs it again)."""
        if self._own_id is None:
            self._own_id = _own_session_id(srv, server)
        return self._own_id

    def title(self):
        if self._title is None:
            operator = (self.audit.operator if self.audit is not None
                        else _operator())
            self._title = "Message from %s" % (operator or
                                                "your administrator")
        return self._title

    def session_failed(self, target, exc, doing="could not log off"):
        target.result = "failed"
        target.error = getattr(exc, "winerror", None)
        if target.error is None and isinstance(exc, Refused):
            target.error = exc.code
        target.message = "%s: %s" % (doing, _message_of(exc)) \
            if doing != "could not log off" else _message_of(exc)
        if not self.opts.json:
            with self._print_lock:
                _complain("logoff: %s %s: %s" % (
                    doing, target.who(), describe_error_or_refusal(exc)))

    def audit_target(self, target, action, ok=None):
        if self.audit is None:
            return
        s = target.session
        if ok is None:
            result = target.result
        else:
            result = "ok" if ok else "failed"
        self.audit.write(dict(
            server=target.server, session=s.id, user=s.user, domain=s.domain,
            action=action, result=result,
            error=target.error if result == "failed" else None,
            message=target.message if result != "logged-off" else None))

    def audit_own(self, sid, result, error, message):
        if self.audit is not None:
            self.audit.write(dict(server=None, session=sid, user=None,
                                  domain=None, action="logoff", result=result,
                                  error=error, message=message))

    def targets(self):
        return [t for job in self.jobs for t in job.targets]

    def server_errors(self):
        errors = []
        for job in self.jobs:
            exc = job.error
            if job.timed_out:
                errors.append({"server": job.server, "function": None,
                               "error": 1460, "message":
                               "no answer within %s; the server was given up"
                               % _seconds_label(self.opts.timeout)})
            elif exc is not None:
                code = getattr(exc, "winerror", None)
                if code is None and isinstance(exc, Refused):
                    code = exc.code
                errors.append({"server": job.server,
                               "function": getattr(exc, "function", None),
                               "error": code, "message": _message_of(exc),
                               "exception": exc})
        return errors

    def exit_code(self):
        targets = self.targets()
        done = sum(1 for t in targets
                   if t.result in ("logged-off", "would-log-off", "listed"))
        failed = (sum(1 for t in targets if t.result == "failed")
                  + len(self.server_errors()))
        if not failed:
            return 0
        return 2 if done else 1

    def finish_timed_out(self):
        for job in self.jobs:
            if job.timed_out:
                for t in job.targets:
                    if t.result is None:
                        t.result = "failed"
                        t.error = 1460
                        t.message = ("the server ran out of time; the "
                                     "outcome is unknown")

    def report(self):
        """Server errors (stderr), listings and what-ifs (stdout), or the
        JSON document; returns the exit code."""
        opts = self.opts
        self.finish_timed_out()
        errors = self.server_errors()
        code = self.exit_code()
        if opts.json:
            import json
            doc = {"sessions": [t.record() for t in self.targets()],
                   "server_errors": [{k: v for k, v in e.items()
                                      if k != "exception"} for e in errors],
                   "exit_code": code}
            _say(json.dumps(doc, ensure_ascii=False, indent=2))
            return code
        for e in errors:
            exc = e.get("exception")
            if isinstance(exc, Refused):
                _complain("logoff: %s" % exc)   # names its server already
                continue
            text = (describe_error(exc) if exc is not None else
                    "%s (error %d)" % (e["message"], e["error"]))
            label = _server_label(e["server"])
            _complain("logoff: %s%s: %s" % (label[0].upper(), label[1:],
                                             text))
        if opts.query:
            _print_table(self.targets())
        elif opts.whatif:
            for t in self.targets():
                if opts.warn is not None:
                    _say("What if: warn %s, wait %s, then log it off if it "
                         "still matches." % (t.who(),
                                             _seconds_label(opts.grace)))
                else:
                    _say("What if: log off %s." % t.who())
        if not self.targets() and not errors and (opts.selecting or
                                                  opts.query):
            self.verbose("No session matches the selection.")
        return code


def _width(text):
    """Columns a string takes in a terminal: East Asian wide characters
    take two."""
    if text.isascii():
        return len(text)
    from unicodedata import east_asian_width
    return sum(2 if east_asian_width(c) in "WF" else 1 for c in text)


def _print_table(targets):
    rows = [("", "SERVER", "ID", "SESSIONNAME", "USERNAME", "STATE",
             "IDLE TIME", "LOGON TIME")]
    for t in targets:
        s = t.session
        logon = ""
        if t.logon is not None:
            logon = t.logon.astimezone().strftime("%Y-%m-%d %H:%M")
        rows.append((">" if t.own else "", t.server or "(local)", str(s.id),
                     s.name, s.account, state_label(s.state),
                     format_idle(t.idle), logon))
    widths = [max(_width(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        _say(" ".join(c + " " * (w - _width(c))
                      for c, w in zip(r, widths)).rstrip())


# --- The command -------------------------------------------------------------------

def _message_of(exc):
    return getattr(exc, "strerror", None) or str(exc)


def describe_error_or_refusal(exc):
    if isinstance(exc, Refused):
        return str(exc)
    return describe_error(exc)


def _logoff_own(run):
    """logoff with no session: the caller's own, as WTS_CURRENT_SESSION."""
    import wtsapi
    opts = run.opts
    with wtsapi.Server() as local:
        sid = None
        if opts.verbose or opts.whatif or run.audit is not None:
            sid = local.session_id()
        if opts.whatif:
            _say("What if: log off session %d, the current session." % sid)
            return 0
        if opts.verbose:
            run.verbose("Logging off session ID %d, the current session."
                        % sid)
        try:
            local.logoff(wtsapi.WTS_CURRENT_SESSION, wait=opts.wait)
        except wtsapi.WTSError as e:
            run.audit_own(sid, "failed", e.winerror, e.strerror)
            raise
        run.audit_own(sid, "logged-off", None, None)
    return 0


def _grace(run):
    """Wait the grace period; Ctrl+C spares everyone."""
    import time
    warned = [t for job in run.jobs for t in job.warned]
    if not warned:
        return True
    run.verbose("Waiting %s before logging off %d session(s)." % (
        _seconds_label(run.opts.grace), len(warned)))
    try:
        time.sleep(run.opts.grace)
    except KeyboardInterrupt:
        for t in warned:
            t.result = "spared"
            t.message = "interrupted during the grace period"
            run.audit_target(t, "logoff")
        if not run.opts.json:
            _complain("logoff: interrupted during the grace period: no one "
                      "was logged off.")
        return False
    return True


def _execute(run):
    opts = run.opts
    run.jobs = [Job(s) for s in (opts.servers or [None])]
    inline = opts.session is not None      # one server, logoff.exe-style

    def go(phase, jobs):
        if inline:
            for job in jobs:
                try:
                    phase(run, job)
                except Exception as e:
                    job.error = e
        else:
            _fan_out(jobs, lambda job: phase(run, job), opts.parallel,
                     opts.timeout)
    go(_phase_select, run.jobs)
    if opts.warn is not None and not opts.whatif:
        if not _grace(run):
            run.report()
            return 1
        go(_phase_recheck, [j for j in run.jobs if j.warned
                            and j.error is None and not j.timed_out])
    return run.report()


def main(argv=None):
    """Run the command; return the exit code (0, 1 or 2)."""
    if argv is None:
        argv = sys.argv[1:]
    try:
        opts = parse_args(argv)
    except UsageError as e:
        _complain("Invalid parameter(s): %s" % e)
        _write(sys.stderr, USAGE[:USAGE.index("Beyond")])
        _complain("Type LOGOFF /? for every switch.")
        return 1
    if opts.help:
        _write(sys.stdout, USAGE)
        return 0
    run = Run(opts)
    try:
        if opts.log:
            try:
                run.audit = Audit(opts.log)
            except OSError as e:
                _complain("logoff: cannot open the log file %s: %s" % (
                    opts.log, e.strerror or e))
                return 1
        if opts.session is None and not opts.selecting and not opts.query:
            return _logoff_own(run)
        return _execute(run)
    except KeyboardInterrupt:
        _complain("logoff: interrupted.")
        return 1
    except OSError as e:
        # The library could not be loaded, or the own-session call failed.
        if getattr(e, "winerror", None) is not None:
            _complain("logoff: %s" % describe_error(e))
        else:
            _complain("logoff: %s" % (e.strerror or e))
        return 1
    except Exception as e:         # a bug of ours: one line, not a traceback
        _complain("logoff: internal error: %s: %s" % (type(e).__name__, e))
        return 1
    finally:
        if run.audit is not None:
            run.audit.close()


def _console_script():
    sys.exit(main())
