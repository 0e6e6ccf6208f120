"""Drive the native test double (tests/wtsdouble.c) from Python.

``Farm`` writes the double's farm file; ``Double`` builds the library and
speaks its control API (TD_*): load a farm, count calls, read the call log,
check for leaked buffers and handles.  See docs/test-double.md.

Run as a script, it serves a small simulated farm (``demo_farm()``) to
logoff.py, so anyone can see the tool work on a machine without Windows:

    python3 tests/farm.py /query

(see ``demo()``: it builds both doubles in a temporary folder, which it
removes, and exits 3 with one line on stderr when it cannot build them).
"""

import ctypes
import os
import subprocess
import sys
import tempfile
import time
from urllib.parse import quote, unquote

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SOURCE = os.path.join(HERE, "wtsdouble.c")
EVT_SOURCE = os.path.join(HERE, "evtdouble.c")     # the event-log double
WINDOWS = sys.platform == "win32"

# FILETIME arithmetic: 100 ns ticks.
SECOND = 10 ** 7
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
CLOCK = 133500000000000000          # the double's default server clock

ACTIVE, CONNECTED, CONNECTQUERY, SHADOW, DISCONNECTED, IDLE, LISTEN, RESET, \
    DOWN, INIT = range(10)

# server(..., unreachable=OPEN_NULL): WTSOpenServerW itself fails (NULL, 1722)
# instead of handing out a handle whose first call fails.
OPEN_NULL = "null"
# What WTSSendMessageW to a disconnected session fails with by default (an
# unverified stand-in, see wtsdouble.c); discmsg="ok" makes it succeed.
DISCMSG_ERROR = 7007
LOGOFF_HANG_SECONDS = 30            # logoff_hang=1: bWait=TRUE blocks this long


def _q(text):
    return quote(str(text), safe="")


class ServerSpec:
    """One server of a farm.  ``flags`` are the double's server options:
    ``unreachable=True`` (a handle, then 1722) or ``unreachable=OPEN_NULL``
    (WTSOpenServerW returns NULL with 1722), ``noex=True`` (no
    WTSEnumerateSessionsExW), ``noquery=True`` (no Query Information: both
    enumerations answer 259, session queries 5), ``fullcontrol=False``,
    ``clock=FILETIME``, ``discmsg="fail"|"ok"|N`` (messages to its
    disconnected sessions), ``missing=2|7022`` (what its per-session calls
    answer for a session id it does not have: 2 as on the LSM RPC path,
    7022, the default, as on the legacy WinStation path), ``alias=NAME``."""

    def __init__(self, name, **flags):
        self.name = name
        self.flags = flags
        self.sessions = []
        self.processes = []

    def session(self, id, name="", state=ACTIVE, user="", domain="", **times):
        """Add a session; ``times`` are logon/connect/disconnect/input
        FILETIMEs, ``logoff_ms`` (a logoff takes that long: without waiting
        the session stays visible until then), ``logoff_hang=1`` (a waiting
        logoff blocks LOGOFF_HANG_SECONDS or until the double is reset),
        ``discmsg`` (as the server's, for this session), ``noquery=1``
        (the caller may not query this session: it is listed, but every
        per-session call on it fails with 7022), ``client=NAME``,
        ``address="A.B.C.D"`` or an IPv6 literal (WTSClientName and
        WTSClientAddress), ``locked=1|0|"unknown"`` (WTSSessionInfoEx's lock
        state; unknown by default) and ``response`` as the double takes
        them."""
        self.sessions.append(dict(id=id, name=name, state=state, user=user,
                                  domain=domain, **times))
        return self

    def process(self, session, pid, name=""):
        """Add a process running in ``session`` (listed while that session
        exists: a logoff ends its processes)."""
        self.processes.append(dict(session=session, pid=pid, name=name))
        return self

    def render(self):
        words = ["server", _q(self.name)]
        for key, value in self.flags.items():
            if value is True:
                words.append(key)
            elif value is False:
                words.append("%s=0" % key)
            elif value is not None:
                words.append("%s=%s" % (key, _q(value)))
        lines = [" ".join(words)]
        for s in self.sessions:
            lines.append("session " + " ".join(
                "%s=%s" % (k, _q(v)) for k, v in s.items() if v != ""))
        for p in self.processes:
            lines.append("process " + " ".join(
                "%s=%s" % (k, _q(v)) for k, v in p.items() if v != ""))
        return lines


class Farm:
    """A farm of simulated session hosts; ``"."`` is the local server."""

    def __init__(self, caller=None, fullcontrol=True):
        self.servers = {}
        self.rules = []
        self.caller_session = caller
        self.caller_fullcontrol = fullcontrol
        self.server(".")

    def server(self, name, **flags):
        """The server ``name`` (created on first use), to add sessions to."""
        spec = self.servers.get(name)
        if spec is None:
            spec = self.servers[name] = ServerSpec(name, **flags)
        else:
            spec.flags.update(flags)
        return spec

    def latency(self, server, func, ms):
        self.rules.append("latency server=%s func=%s ms=%d"
                          % (_q(server), func, ms))
        return self

    def fail(self, server, func, error, count=None, session=None):
        line = "fail server=%s func=%s error=%d" % (_q(server), func, error)
        if count is not None:
            line += " count=%d" % count
        if session is not None:
            line += " session=%d" % session
        self.rules.append(line)
        return self

    def querysize(self, server, info_class, bytes, session=None):
        """WTSQuerySessionInformationW on ``server`` reports at most
        ``bytes`` for ``info_class`` (a short answer; the data is intact)."""
        line = "querysize server=%s class=%d bytes=%d" % (
            _q(server), info_class, bytes)
        if session is not None:
            line += " session=%d" % session
        self.rules.append(line)
        return self

    def mutate(self, after, server, id, **changes):
        """After the N-th call of a function (``after="FUNC:N"``), change or
        (``remove=1``) remove a session."""
        self.rules.append("mutate after=%s server=%s id=%d %s" % (
            after, _q(server), id,
            " ".join("%s=%s" % (k, _q(v)) for k, v in changes.items())))
        return self

    def render(self):
        lines = []
        for spec in self.servers.values():
            lines.extend(spec.render())
            if spec.name == "." and self.caller_session is not None and \
                    not any(s["id"] == self.caller_session
                            for s in spec.sessions):
                # Whoever runs the tool is logged on to the local machine:
                # a farm that does not say as whom gets an operator there.
                lines.append("session id=%d name=%s state=%d user=operator "
                             "domain=CORP logon=%d" % (
                                 self.caller_session,
                                 _q("RDP-Tcp#%d" % self.caller_session),
                                 ACTIVE, CLOCK - HOUR))
        if self.caller_session is not None:
            lines.append("caller session=%d fullcontrol=%d" % (
                self.caller_session, 1 if self.caller_fullcontrol else 0))
        lines.extend(self.rules)
        return "\n".join(lines) + "\n"

    def write(self, path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.render())
        return path


def standard_farm():
    """The farm most tests start from.

    Local server: 0 services, 1 console (admin), 2 the caller (operator),
    3 alice active, 4 bob disconnected, 5 田中 active, 65536 the listener.
    RDS1, RDS2: a few users each.  DOWN: unreachable.
    """
    farm = Farm(caller=2)
    local = farm.server(".")
    local.session(0, "Services", DISCONNECTED)
    local.session(1, "Console", ACTIVE, "admin", "CORP",
                  logon=CLOCK - 5 * DAY, input=CLOCK - 10 * SECOND)
    local.session(2, "RDP-Tcp#7", ACTIVE, "operator", "CORP",
                  logon=CLOCK - HOUR, input=CLOCK - 2 * SECOND)
    local.session(3, "RDP-Tcp#8", ACTIVE, "alice", "CORP",
                  logon=CLOCK - 3 * HOUR, input=CLOCK - 30 * MINUTE)
    local.session(4, "", DISCONNECTED, "bob", "CORP",
                  logon=CLOCK - DAY, input=CLOCK - 9 * HOUR,
                  disconnect=CLOCK - 3 * HOUR)
    local.session(5, "RDP-Tcp#9", ACTIVE, "田中", "CORP",
                  logon=CLOCK - 2 * HOUR, input=CLOCK - 5 * MINUTE)
    local.session(65536, "RDP-Tcp", LISTEN)
    rds1 = farm.server("RDS1")
    rds1.session(0, "Services", DISCONNECTED)
    rds1.session(2, "RDP-Tcp#1", ACTIVE, "carol", "CORP",
                 logon=CLOCK - HOUR, input=CLOCK - 1 * MINUTE)
    rds1.session(3, "", DISCONNECTED, "dave", "CORP",
                 logon=CLOCK - DAY, disconnect=CLOCK - 5 * HOUR)
    rds1.session(65536, "RDP-Tcp", LISTEN)
    rds2 = farm.server("RDS2")
    rds2.session(0, "Services", DISCONNECTED)
    rds2.session(4, "RDP-Tcp#3", ACTIVE, "erin", "CORP",
                 logon=CLOCK - HOUR, input=CLOCK - 4 * HOUR)
    rds2.session(65536, "RDP-Tcp", LISTEN)
    farm.server("DOWN", unreachable=True)
    return farm


# --- The library ---------------------------------------------------------------

def build(outdir=None, cc=None, source=SOURCE, prebuilt="WTSDOUBLE_PREBUILT"):
    """Compile the double with the host C compiler; return the library path.
    ``source`` may name another double (EVT_SOURCE, whose DLL on Windows
    is named by ``prebuilt="EVTDOUBLE_PREBUILT"``).

    The compiler is ``cc`` if given, else ``$CC``, else ``cc`` from PATH, else
    zig's C compiler from PyPI ``ziglang`` (``python -m ziglang cc``, one of
    the test dependencies), so the tests need no system compiler.

    On Windows there is no compiler to count on: ``WTSDOUBLE_PREBUILT`` names
    a DLL cross-compiled from the same source (tests/winleg.py builds it).
    """
    if WINDOWS:
        path = os.environ.get(prebuilt)
        if not path or not os.path.exists(path):
            raise RuntimeError("on Windows, set %s to the test double "
                               "built as a DLL" % prebuilt)
        return path
    import importlib.util
    import shlex
    import shutil
    if cc:
        compiler = [cc]
    elif os.environ.get("CC", "").strip():
        compiler = shlex.split(os.environ["CC"])      # e.g. CC="ccache gcc"
    elif shutil.which("cc"):
        compiler = ["cc"]
    elif importlib.util.find_spec("ziglang") is not None:
        # zig's first build of its C runtime takes a while; later ones not.
        compiler = [sys.executable, "-m", "ziglang", "cc"]
    else:
        raise RuntimeError(
            "no C compiler for the test double: no cc on PATH, CC unset and "
            "no ziglang (python3 -m pip install -r tests/requirements.txt)")
    outdir = outdir or tempfile.mkdtemp(prefix="wtsdouble-")
    name = os.path.splitext(os.path.basename(source))[0]
    path = os.path.join(outdir, "lib%s.so" % name)
    cmd = compiler + ["-std=c11", "-O1", "-g", "-shared", "-fPIC", "-o", path,
                      source, "-lpthread"]
    subprocess.run(cmd, check=True)
    return path


def run_child(cmd, **kwargs):
    """subprocess.run, but a child that Windows could not even start is
    started again (twice at most).  Wine's CreateProcess fails now and then
    with 1359 ("Internal error"); the child never ran, so a retry repeats
    nothing, and any failure of the child itself is returned as is."""
    for attempt in range(3):
        try:
            return subprocess.run(cmd, **kwargs)
        except OSError:
            if not WINDOWS or attempt == 2:
                raise
            time.sleep(0.5)


class LogEntry(tuple):
    """One call the double saw: func, server, session, ok, error, extra."""
    __slots__ = ()
    func = property(lambda self: self[0])
    server = property(lambda self: self[1])
    session = property(lambda self: self[2])
    ok = property(lambda self: self[3])
    error = property(lambda self: self[4])
    extra = property(lambda self: self[5])

    def fields(self):
        """EXTRA as a dict (percent-decoded)."""
        out = {}
        for part in self.extra.split(";") if self.extra else ():
            key, _, value = part.partition("=")
            out[key] = unquote(value)
        return out


def parse_log(text):
    """The double's call log (TD_Log or a WTSDOUBLE_LOG file) as entries;
    an ``#exit`` line becomes a dict under the key ``None``."""
    entries, exit_stats = [], None
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#exit"):
            exit_stats = dict(p.split("=", 1) for p in line.split("\t")[1:])
            exit_stats = {k: int(v) for k, v in exit_stats.items()}
            continue
        func, server, session, ok, error, extra = (line.split("\t") + [""])[:6]
        entries.append(LogEntry((
            func, server, None if session == "-" else int(session),
            ok == "1", int(error), extra)))
    return entries, exit_stats


class Double:
    """The control API of a loaded test double."""

    STATE_CHANGING = ("WTSLogoffSession", "WTSDisconnectSession",
                      "WTSSendMessageW")

    def __init__(self, path):
        self.path = path
        lib = ctypes.CDLL(path)
        c_char_p, c_int, c_long = ctypes.c_char_p, ctypes.c_int, ctypes.c_long
        for name, res, args in (
                ("TD_Load", c_int, [c_char_p]),
                ("TD_Reset", None, []),
                ("TD_Calls", c_int, [c_char_p, c_char_p]),
                ("TD_LiveAllocations", c_long, []),
                ("TD_OpenHandles", c_long, []),
                ("TD_BadFrees", c_long, []),
                ("TD_BadHandles", c_long, []),
                ("TD_InFlight", c_int, []),
                ("TD_MaxInFlight", c_int, []),
                ("TD_MaxInFlightFor", c_int, [c_char_p, c_char_p]),
                ("TD_Log", c_char_p, []),
                ("TD_SessionExists", c_int, [c_char_p, ctypes.c_uint32]),
                ("TD_SessionState", c_int, [c_char_p, ctypes.c_uint32])):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        self.lib = lib

    @staticmethod
    def _b(text):
        return None if text is None else text.encode("utf-8")

    def load(self, farm, path):
        farm.write(path)
        line = self.lib.TD_Load(self._b(os.fspath(path)))
        if line:
            raise ValueError("the double rejected line %d of the farm:\n%s"
                             % (line, farm.render()))

    def reset(self):
        self.lib.TD_Reset()

    def calls(self, server=None, func=None):
        return self.lib.TD_Calls(self._b(server), self._b(func))

    # Opening and closing a server handle are local; everything else is a
    # round trip to the server.  Freeing is local too.
    LOCAL_ONLY = ("WTSOpenServerW", "WTSCloseServer", "WTSFreeMemory",
                  "WTSFreeMemoryExW")

    def rpcs(self, server=None):
        """Calls that would cross the network to ``server``."""
        return self.calls(server) - sum(self.calls(server, f)
                                        for f in self.LOCAL_ONLY)

    def max_in_flight(self):
        """The most exported calls running at once since the last load."""
        return self.lib.TD_MaxInFlight()

    def max_in_flight_for(self, server=None, func=None):
        """The most calls running at once since the last load, counting only
        those to ``server`` (its farm name; None: any) and of ``func`` (an
        export's name; None: any).  A call counts from its entry, through
        any injected latency, to its return."""
        return self.lib.TD_MaxInFlightFor(self._b(server), self._b(func))

    def log(self):
        return parse_log(self.lib.TD_Log().decode("utf-8"))[0]

    def state_changes(self):
        return [e for e in self.log() if e.func in self.STATE_CHANGING]

    def exists(self, server, session_id):
        return bool(self.lib.TD_SessionExists(self._b(server), session_id))

    def state(self, server, session_id):
        return self.lib.TD_SessionState(self._b(server), session_id)

    def leaks(self):
        return dict(live=self.lib.TD_LiveAllocations(),
                    handles=self.lib.TD_OpenHandles(),
                    badfrees=self.lib.TD_BadFrees(),
                    badhandles=self.lib.TD_BadHandles())

    def in_flight(self):
        return self.lib.TD_InFlight()


class EventCall(tuple):
    """One call the event-log double saw: func, handle (its number; 0 for
    none), ok, error, and its EXTRA fields as a dict (decoded)."""
    __slots__ = ()
    func = property(lambda self: self[0])
    handle = property(lambda self: self[1])
    ok = property(lambda self: self[2])
    error = property(lambda self: self[3])
    fields = property(lambda self: self[4])

    @property
    def strings(self):
        """ReportEventW's insertion strings, in order."""
        f = self.fields
        return [f["s%d" % i] for i in range(int(f.get("nstrings", 0)))
                if "s%d" % i in f]


def parse_event_log(text):
    """The event-log double's call log (EV_Log or an EVTDOUBLE_LOG file) as
    EventCall entries, and its ``#exit`` line as a dict (or None)."""
    entries, exit_stats = [], None
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#exit"):
            exit_stats = {k: int(v) for k, v in
                          (p.split("=", 1) for p in line.split("\t")[1:])}
            continue
        func, handle, ok, error, extra = (line.split("\t") + [""])[:5]
        fields = {}
        for part in extra.split(";") if extra else ():
            key, _, value = part.partition("=")
            fields[key] = unquote(value, errors="surrogatepass")
        entries.append(EventCall((func, int(handle), ok == "1", int(error),
                                  fields)))
    return entries, exit_stats


class EventDouble:
    """The control API of the event-log double (tests/evtdouble.c)."""

    def __init__(self, path):
        self.path = path
        lib = ctypes.CDLL(path)
        for name, res, args in (
                ("EV_Reset", None, []),
                ("EV_Fail", ctypes.c_int, [ctypes.c_char_p, ctypes.c_ulong,
                                           ctypes.c_ulong, ctypes.c_uint32]),
                ("EV_Calls", ctypes.c_ulong, [ctypes.c_char_p]),
                ("EV_OpenHandles", ctypes.c_long, []),
                ("EV_BadHandles", ctypes.c_long, []),
                ("EV_Log", ctypes.c_char_p, [])):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        self.lib = lib

    def reset(self):
        self.lib.EV_Reset()

    def fail(self, func, nth=1, count=1, error=0):
        """The ``nth`` call of ``func`` from now on fails, and the
        ``count`` - 1 after it (``count`` 0: all from then on), with
        ``error`` (0: the double's default for that function)."""
        if self.lib.EV_Fail(func.encode("ascii"), nth, count, error):
            raise ValueError("the double has no %s" % func)

    def calls(self, func=None):
        return self.lib.EV_Calls(None if func is None
                                 else func.encode("ascii"))

    def log(self):
        return parse_event_log(self.lib.EV_Log().decode("utf-8"))[0]

    def events(self):
        """The ReportEventW calls that succeeded."""
        return [e for e in self.log() if e.func == "ReportEventW" and e.ok]

    def leaks(self):
        return dict(handles=self.lib.EV_OpenHandles(),
                    badhandles=self.lib.EV_BadHandles())


# --- The demo: python3 tests/farm.py ARGS --------------------------------------

def demo_farm():
    """``standard_farm()`` plus what the README's examples name.

    Local server: also session 12 (chen, active), so that the drop-in
    ``logoff 12`` acts on it.  Server1: session TERM04 (wang, active; the
    reference page's ``logoff TERM04 /server:Server1``) and Yıldız,
    disconnected.  RDSH01, RDSH02 (the README's farm.txt): active sessions,
    disconnected ones idle for 30 minutes, 3 hours, 9 hours and 26 hours,
    and a service account (svc-report, for ``/exclude``).

    Every user session has a client name and address and its processes
    (csrss.exe, winlogon.exe, explorer.exe and what its user runs: EXCEL.EXE
    for zhang and erin, robocopy.exe in suzuki's disconnected session, for
    ``/busy``); the active ones say whether their screen is locked (alice,
    erin and zhang are), the disconnected ones leave it unknown.  Every
    session and ID of the standard farm is kept as it is.
    """
    farm = standard_farm()
    local = farm.server(".")
    local.session(12, "RDP-Tcp#12", ACTIVE, "chen", "CORP",
                  logon=CLOCK - 4 * HOUR, input=CLOCK - 15 * MINUTE)
    local.sessions.sort(key=lambda s: s["id"])
    server1 = farm.server("Server1")
    server1.session(0, "Services", DISCONNECTED)
    server1.session(2, "TERM04", ACTIVE, "wang", "CORP",
                    logon=CLOCK - 2 * HOUR, input=CLOCK - 3 * MINUTE)
    server1.session(3, "", DISCONNECTED, "Yıldız", "CORP",
                    logon=CLOCK - DAY, disconnect=CLOCK - 6 * HOUR)
    server1.session(65536, "RDP-Tcp", LISTEN)
    rdsh01 = farm.server("RDSH01")
    rdsh01.session(0, "Services", DISCONNECTED)
    rdsh01.session(2, "RDP-Tcp#1", ACTIVE, "sato", "CORP",
                   logon=CLOCK - 3 * HOUR, input=CLOCK - 5 * MINUTE)
    rdsh01.session(3, "", DISCONNECTED, "suzuki", "CORP",
                   logon=CLOCK - 8 * HOUR, disconnect=CLOCK - 3 * HOUR)
    rdsh01.session(4, "", DISCONNECTED, "li", "CORP",
                   logon=CLOCK - 2 * HOUR, disconnect=CLOCK - 30 * MINUTE)
    rdsh01.session(65536, "RDP-Tcp", LISTEN)
    rdsh02 = farm.server("RDSH02")
    rdsh02.session(0, "Services", DISCONNECTED)
    rdsh02.session(5, "RDP-Tcp#4", ACTIVE, "zhang", "CORP",
                   logon=CLOCK - 5 * HOUR, input=CLOCK - HOUR)
    rdsh02.session(6, "", DISCONNECTED, "kim", "CORP",
                   logon=CLOCK - 2 * DAY, disconnect=CLOCK - 26 * HOUR)
    rdsh02.session(7, "", DISCONNECTED, "svc-report", "CORP",
                   logon=CLOCK - 10 * HOUR, disconnect=CLOCK - 9 * HOUR)
    rdsh02.session(65536, "RDP-Tcp", LISTEN)

    # Who connects from where, whose screen is locked (None: unknown, as
    # for disconnected sessions), and what runs in each session beyond
    # csrss.exe, winlogon.exe and explorer.exe.
    users = {
        ".": {1: ("", "", 0, ()),               # the console: no client
              2: ("ADMIN-PC", "10.0.0.50", 0, ("mmc.exe",)),
              3: ("LAPTOP-ALICE", "10.0.1.23", 1, ("OUTLOOK.EXE",)),
              4: ("LAPTOP-BOB", "10.0.1.31", None, ("notepad.exe",)),
              5: ("PC-TANAKA", "10.0.2.5", 0, ("WINWORD.EXE",)),
              12: ("THIN-012", "10.20.1.12", 0, ("chrome.exe",))},
        "RDS1": {2: ("LAPTOP-CAROL", "10.0.3.14", 0, ("OUTLOOK.EXE",)),
                 3: ("LAPTOP-DAVE", "10.0.3.20", None, ())},
        "RDS2": {4: ("WS-ERIN", "10.0.3.41", 1, ("EXCEL.EXE",))},
        "Server1": {2: ("WS-WANG", "10.0.4.8", 0, ("WINWORD.EXE",)),
                    3: ("LAPTOP-YILDIZ", "fd00::4:19", None, ())},
        "RDSH01": {2: ("THIN-017", "10.20.1.17", 0, ("chrome.exe",)),
                   3: ("THIN-021", "10.20.1.21", None, ("robocopy.exe",)),
                   4: ("LAPTOP-LI", "10.0.5.2", None, ())},
        "RDSH02": {5: ("THIN-033", "10.20.1.33", 1,
                       ("EXCEL.EXE", "OUTLOOK.EXE")),
                   6: ("LAPTOP-KIM", "10.0.6.7", None, ("notepad.exe",)),
                   7: ("RPT01", "10.0.9.1", None, ("sqlcmd.exe",))},
    }
    for name in (".", "RDS1", "RDS2", "Server1", "RDSH01", "RDSH02"):
        spec = farm.server(name)
        pid = 4
        for s in spec.sessions:
            if s["state"] == LISTEN:
                continue
            if s["id"] == 0:
                images = ("csrss.exe", "services.exe", "lsass.exe",
                          "svchost.exe")
            else:
                client, address, locked, own = users[name][s["id"]]
                if client:
                    s["client"] = client
                if address:
                    s["address"] = address
                if locked is not None:
                    s["locked"] = locked
                images = ("csrss.exe", "winlogon.exe", "explorer.exe") + own
            for image in images:
                pid += 4 * (7 + s["id"])
                spec.process(s["id"], pid, image)
    return farm


class DemoError(Exception):
    """The demo could not be set up; its text is the one line to print."""


SETUP_FAILED = 3        # farm.py's exit code when the demo cannot start
INSTALL_HINT = ("install gcc (apt-get install gcc) or run "
                "python3 -m pip install -r tests/requirements.txt")
_EVENT_TYPES = {1: "Error", 2: "Warning", 4: "Information",
                8: "Audit Success", 16: "Audit Failure"}


def _build_quietly(outdir, source, prebuilt):
    """build(), with the compiler's output kept out of the terminal: a
    failure becomes one DemoError line."""
    import importlib.util
    import shutil
    if not WINDOWS and not os.environ.get("CC", "").strip() \
            and not shutil.which("cc") \
            and importlib.util.find_spec("ziglang") is None:
        raise DemoError("no C compiler for the test double: " + INSTALL_HINT)
    out_path = os.path.join(outdir, "cc-output.txt")
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(out_path, "wb") as out:
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
        try:
            return build(outdir, source=source, prebuilt=prebuilt)
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
    except subprocess.CalledProcessError as e:
        with open(out_path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        first = next((line for line in lines if "error" in line.lower()),
                     lines[0] if lines else "exit code %s" % e.returncode)
        raise DemoError("the test double %s did not compile: %s"
                        % (os.path.relpath(source, ROOT), first))
    except OSError as e:
        raise DemoError("cannot run the C compiler (%s): %s"
                        % (e.strerror or e, INSTALL_HINT))
    except RuntimeError as e:
        raise DemoError(str(e))
    finally:
        for fd in saved:
            os.close(fd)


def _report_events(path):
    """Where /eventlog's events went: the event-log double, whose log is
    in the temporary folder about to be removed; print them on stderr."""
    try:
        with open(path, encoding="utf-8") as f:
            calls, _ = parse_event_log(f.read())
    except OSError:
        return
    if not calls:
        return
    sources = {c.handle: c.fields.get("source", "?") for c in calls
               if c.func == "RegisterEventSourceW" and c.ok}
    events = [c for c in calls if c.func == "ReportEventW" and c.ok]
    lines = ["farm.py: /eventlog wrote %d event%s to the event-log double "
             "(tests/evtdouble.c), not to a real event log; as Event "
             "Viewer would list them (ID, level, source, first line):"
             % (len(events), "" if len(events) == 1 else "s")]
    for e in events:
        text = (e.strings or [""])[0]
        lines.append("  %s %s %s: %s" % (
            e.fields.get("id", "?"),
            _EVENT_TYPES.get(int(e.fields.get("type", 0)), "?"),
            sources.get(e.handle, "?"), text.split("\r\n")[0]))
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


def demo(argv):
    """Run logoff.py with ``argv`` against ``demo_farm()``, served by the
    test double (wtsapi32) and the event-log double (advapi32), both built
    in a temporary folder that is removed afterwards, whatever happens.
    Returns logoff.py's exit code, or SETUP_FAILED after one line on
    stderr when the doubles cannot be built."""
    import shutil
    import signal
    outdir = child = None
    handlers = {}
    try:
        outdir = tempfile.mkdtemp(prefix="logoff-demo-")
        lib = _build_quietly(outdir, SOURCE, "WTSDOUBLE_PREBUILT")
        evt = _build_quietly(outdir, EVT_SOURCE, "EVTDOUBLE_PREBUILT")
        events = os.path.join(outdir, "events.log")
        env = dict(os.environ,
                   WTSAPI32_DLL=lib, ADVAPI32_DLL=evt, EVTDOUBLE_LOG=events,
                   WTSDOUBLE_FARM=demo_farm().write(
                       os.path.join(outdir, "farm.txt")))
        for name in ("WTSDOUBLE_LOG", "EVTDOUBLE_FAIL"):
            env.pop(name, None)

        def forward(signum, frame):
            # Ctrl+C at a terminal reaches logoff.py too; a signal sent to
            # farm.py alone is passed on.  Either way logoff.py ends its
            # run (no new change, its report made) and the folder goes.
            if child is not None and child.poll() is None:
                child.send_signal(signum)
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            num = getattr(signal, name, None)
            if num is not None:
                handlers[num] = signal.signal(num, forward)
        child = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "logoff.py")] + list(argv),
            env=env)
        code = child.wait()
        _report_events(events)
        return code
    except DemoError as e:
        sys.stderr.write("farm.py: %s\n" % e)
        return SETUP_FAILED
    except KeyboardInterrupt:          # while building, before logoff.py ran
        sys.stderr.write("farm.py: interrupted.\n")
        return SETUP_FAILED
    finally:
        for num, old in handlers.items():
            signal.signal(num, old)
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        if outdir is not None:
            shutil.rmtree(outdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(demo(sys.argv[1:]))
