"""Benchmarks of logoff.py against the native test double (tests/wtsdouble.c).

    python benchmarks/run.py            # the full run (about 90 s)
    python benchmarks/run.py --quick    # a smoke run of every section

Prints one markdown document: the machine, then a table per section:

1. Start-up: `python logoff.py /?`, `python logoff.py 12` and `python -m
   logoff 12` against the floor `python -c "import ctypes"`, interleaved,
   median of the pairs' ratios; what they import beyond ctypes, and what
   compiling (script form) or loading cached bytecode (-m) costs.
2. A translated run's start-up (LOGOFF_LANG=ja-JP) against English, once
   logoff.py has translations.
3. Calls per operation, as counted by the double (exact).
4. Slow links: one server with N sessions and latency on every call, for a
   listing and an /idle selection, against 1 + ceil(N / 8) round trips.
5. Fan-out: M servers with 100 ms latency on every call, against the ideal.
6. Many unreachable servers, /parallel:256, each in a fresh process, against
   the same calls made by a plain ctypes loop on as many threads (and on
   one: the double's own cost).
7. Scale: one server with up to 10,000 sessions, in-process.

Speed and memory are reported as ratios against a baseline measured in the
same run; they never fail the run.  Standard library only.  Exit status 1
if a call count differs from its formula or a run of logoff fails.
"""

import argparse
import contextlib
import json
import marshal
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPT = os.path.join(ROOT, "logoff.py")
WTSAPI = os.path.join(ROOT, "wtsapi.py")
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import farm as farmlib  # noqa: E402  (tests/farm.py)

SCRIPT_TARGET = 1.30          # python logoff.py ...
MODULE_TARGET = 1.15          # python -m logoff ...
FANOUT_TARGET = 1.25
SLOW_TARGET = 1.25
TIMES_READERS = 8             # logoff.TIMES_READERS: the ideal assumes it
US_PER_SESSION_TARGETS = {"`/query`": 7.0}
US_PER_SESSION_TARGET = 20.0  # every other scale row
LATENCY_MS = 100
SLOW_LATENCY_MS = 50
# The caller's session, on the local server.  No session of the benchmark
# servers has this ID, so no selection needs to ask whether one of them is
# the caller's (a query the tests count, outside the formulas here).
CALLER = 99999
# The calls that cross the network on a real server; opening and closing a
# handle and freeing a buffer are local.
NETWORK_CALLS = ("WTSEnumerateSessionsExW", "WTSEnumerateSessionsW",
                 "WTSQuerySessionInformationW", "WTSLogoffSession",
                 "WTSDisconnectSession", "WTSSendMessageW")

problems = []           # call counts off their formula, failed runs


def median(values):
    return statistics.median(values)


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def met(value, target):
    return "yes" if value <= target else "**no**"


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = re.search(r"model name\s*:\s*(.*)", f.read()).group(1)
    except (OSError, AttributeError):
        pass
    return ("CPU: %s (%d logical cores); Python: %s %s; OS: %s" % (
        cpu, os.cpu_count() or 0, platform.python_implementation(),
        platform.python_version(), platform.platform(terse=True)))


# --- 1. Start-up -------------------------------------------------------------

def wall(cmd, env):
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def import_times(cmd, env, reps):
    """{module: median self time in us} under -X importtime."""
    seen = {}
    for _ in range(reps):
        err = subprocess.run(cmd[:1] + ["-X", "importtime"] + cmd[1:],
                             env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE,
                             universal_newlines=True).stderr
        for us, mod in re.findall(
                r"import time:\s+(\d+) \|\s+\d+ \| *(\S+)", err):
            seen.setdefault(mod, []).append(int(us))
    return {name: median(us) for name, us in seen.items()}


def per_call_ms(fn, reps):
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps * 1000


def compile_ms(path, reps=20):
    """What `python path` pays on every run: compiling the script."""
    with open(path, encoding="utf-8") as f:
        source = f.read()
    return per_call_ms(lambda: compile(source, path, "exec"), reps)


def cached_bytecode(path, prefix):
    """The .pyc an import of ``path`` reads under PYTHONPYCACHEPREFIX."""
    import importlib.util
    saved = sys.pycache_prefix
    sys.pycache_prefix = prefix
    try:
        return importlib.util.cache_from_source(path)
    finally:
        sys.pycache_prefix = saved


def unmarshal_ms(pyc, reps=20):
    """What an import from cached bytecode pays instead of compiling."""
    with open(pyc, "rb") as f:
        data = f.read()[16:]
    return per_call_ms(lambda: marshal.loads(data), reps)


def startup_env(lib, tmp):
    farm = farmlib.Farm(caller=CALLER)
    farm.server(".").session(12, "RDP-Tcp#12", farmlib.ACTIVE, "u12", "CORP")
    env = dict(os.environ, WTSAPI32_DLL=lib,
               WTSDOUBLE_FARM=farm.write(os.path.join(tmp, "farm12.txt")),
               PYTHONPYCACHEPREFIX=os.path.join(tmp, "pycache"))
    # Imported modules are run from cached bytecode, as when installed.
    for name in ("PYTHONDONTWRITEBYTECODE", "WTSDOUBLE_LOG", "PYTHONSTARTUP",
                 "LOGOFF_LANG"):
        env.pop(name, None)
    return env


def check_runs(cases, env):
    """Run each command once (a warm-up that also writes the bytecode
    cache); a failure is a problem.  Returns their stdout."""
    out = {}
    for name, cmd in cases:
        done = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE,
                              universal_newlines=True)
        if done.returncode != 0:
            problems.append("`%s` exited %d: %s" % (
                name, done.returncode, done.stderr.strip()))
        out[name] = done.stdout
    return out


def interleaved(pairs, env_of, reps):
    """For each (name, base, cmd): reps runs of cmd, each right after a run
    of base.  {name: (base times, cmd times)}."""
    got = {name: ([], []) for name, _, _ in pairs}
    for _ in range(reps):
        for name, base, cmd in pairs:
            b = wall(base, env_of(name, "base"))
            c = wall(cmd, env_of(name, "cmd"))
            got[name][0].append(b)
            got[name][1].append(c)
    return got


def startup(env, tmp, reps, quick):
    """Interleaved wall times of each command and the floor, with the
    default site (this machine's site-packages) and with -S."""
    rows, findings = [], []
    for flags in ([], ["-S"]):
        py = [sys.executable] + flags
        floor = py + ["-c", "import ctypes"]
        cases = [("logoff.py /?", py + [SCRIPT, "/?"], SCRIPT_TARGET),
                 ("logoff.py 12", py + [SCRIPT, "12"], SCRIPT_TARGET),
                 ("-m logoff 12", py + ["-m", "logoff", "12"],
                  MODULE_TARGET)]
        check_runs([(n, c) for n, c, _ in cases], env)
        got = interleaved([(n, floor, c) for n, c, _ in cases],
                          lambda name, side: env, reps)
        label = "python " + " ".join(flags) if flags else "python"
        for name, _, target in cases:
            base, mine = got[name]
            ratio = median([c / b for b, c in zip(base, mine)])
            extra = median([c - b for b, c in zip(base, mine)])
            rows.append((
                "`%s %s`" % (label, name), "%.1f" % (median(mine) * 1000),
                "%.1f" % (median(base) * 1000), "%+.1f" % (extra * 1000),
                "%.2fx" % ratio,
                "≤ %.2fx: %s" % (target, met(ratio, target)) if not flags
                else "– (attribution)"))
    # Attributed under -S, where site has not already imported half the
    # standard library on both sides; the default run pays only for what
    # site has not imported already.
    ireps = 2 if quick else 5
    for flags in (["-S"], []):
        py = [sys.executable] + flags
        base = import_times(py + ["-c", "import ctypes"], env, ireps)
        for name, args in (("logoff.py 12", [SCRIPT, "12"]),
                           ("-m logoff 12", ["-m", "logoff", "12"])):
            mine = import_times(py + args, env, ireps)
            extra = sorted(((us, mod) for mod, us in mine.items()
                            if mod not in base), reverse=True)
            total = sum(us for us, _ in extra) / 1000
            if flags:
                findings.append(
                    "`%s` imports, beyond what `import ctypes` does (self "
                    "ms, `python -S -X importtime`): %s; %.1f ms in all." % (
                        name, ", ".join(
                            "%s %.1f" % (mod, us / 1000)
                            for us, mod in extra if us >= 50) or "nothing",
                        total))
            else:
                findings.append(
                    "With `site` (the default run), `%s` imports %s beyond "
                    "`import ctypes`: %.1f ms (self, `-X importtime`)." % (
                        name, ", ".join(mod for _, mod in extra) or
                        "nothing", total))
    pycache = os.path.join(tmp, "pycache")
    pyc = cached_bytecode(SCRIPT, pycache)
    mod_pyc = cached_bytecode(WTSAPI, pycache)
    findings.append(
        "Code that runs: `python logoff.py` compiles logoff.py (%d lines) "
        "on every run, %.1f ms (a script's bytecode is never cached); "
        "`python -m logoff` loads its cached bytecode instead, %s; both "
        "load wtsapi's, %s (compiling wtsapi.py would take %.1f ms)." % (
            sum(1 for _ in open(SCRIPT, encoding="utf-8")),
            compile_ms(SCRIPT),
            "%.1f ms" % unmarshal_ms(pyc) if os.path.exists(pyc)
            else "**no cached bytecode was found** (%s)" % pyc,
            "%.1f ms" % unmarshal_ms(mod_pyc) if os.path.exists(mod_pyc)
            else "**not cached**", compile_ms(WTSAPI)))
    return rows, findings


# --- 2. A translated run's start-up -----------------------------------------

LANG = "ja-JP"


def translated(env, reps):
    """`LOGOFF_LANG=ja-JP` against English (LOGOFF_LANG unset), both the
    script form, interleaved; None when the help text is the same in both
    (logoff.py has no translation yet)."""
    ja = dict(env, LOGOFF_LANG=LANG)
    help_cmd = [sys.executable, SCRIPT, "/?"]
    english = check_runs([("logoff.py /?", help_cmd)], env)["logoff.py /?"]
    local = check_runs([("LOGOFF_LANG=%s logoff.py /?" % LANG, help_cmd)],
                       ja)["LOGOFF_LANG=%s logoff.py /?" % LANG]
    if local == english:
        return None
    cases = [("logoff.py /?", help_cmd),
             ("logoff.py 12", [sys.executable, SCRIPT, "12"])]
    check_runs([("LOGOFF_LANG=%s %s" % (LANG, n), c) for n, c in cases], ja)
    got = interleaved([(n, c, c) for n, c in cases],
                      lambda name, side: env if side == "base" else ja, reps)
    rows = []
    for name, _ in cases:
        en, loc = got[name]
        rows.append(("`LOGOFF_LANG=%s python %s`" % (LANG, name),
                     "%.1f" % (median(loc) * 1000),
                     "%.1f" % (median(en) * 1000),
                     "%+.1f" % (median([b - a for a, b in zip(en, loc)])
                                * 1000),
                     "%.2fx" % median([b / a for a, b in zip(en, loc)])))
    return rows


# --- In-process runs against the double --------------------------------------

class InProcess:
    """logoff.main in this process, on a farm loaded into the double."""

    def __init__(self, lib, tmp):
        os.environ["WTSAPI32_DLL"] = lib     # before wtsapi loads the library
        import logoff
        self.logoff = logoff
        self.main = logoff.main
        self.double = farmlib.Double(lib)
        self.farm_path = os.path.join(tmp, "farm.txt")

    def load(self, farm):
        self.double.load(farm, self.farm_path)

    def run(self, args, expect=(0,)):
        """logoff.main(args) with stdout and stderr to the null device."""
        with open(os.devnull, "w", encoding="utf-8") as null, \
                contextlib.redirect_stdout(null), \
                contextlib.redirect_stderr(null):
            code = self.main(list(args))
        if code not in expect:
            problems.append("logoff %s exited %d" % (" ".join(args), code))
        return code


def one_server(n, name="S"):
    """A server with session 0, a listener and n user sessions 1..n: user
    u<i>, logged on a day and i minutes ago (every logon time differs, as
    on a real server, so no cache of formatted times can flatter a run);
    even ids disconnected (i minutes ago), odd ones active (input i
    minutes ago)."""
    farm = farmlib.Farm(caller=CALLER)
    srv = farm.server(name)
    srv.session(0, "Services", farmlib.DISCONNECTED)
    for i in range(1, n + 1):
        ago = farmlib.CLOCK - i * farmlib.MINUTE
        logon = ago - farmlib.DAY
        if i % 2:
            srv.session(i, "RDP-Tcp#%d" % i, farmlib.ACTIVE, "u%d" % i,
                        "CORP", logon=logon, input=ago)
        else:
            srv.session(i, "", farmlib.DISCONNECTED, "u%d" % i, "CORP",
                        logon=logon, input=ago, disconnect=ago)
    srv.session(65536, "RDP-Tcp", farmlib.LISTEN)
    return farm


# --- 3. Calls per operation --------------------------------------------------

FUNCS = (("e", "WTSEnumerateSessionsExW"),
         ("q", "WTSQuerySessionInformationW"),
         ("l", "WTSLogoffSession"), ("m", "WTSSendMessageW"))


def operations(n):
    """(label, formula, args, expected counts) on one_server(n)."""
    ids = range(1, n + 1)
    u1 = [i for i in ids if str(i).startswith("1")]
    disc = [i for i in ids if i % 2 == 0]
    k = len(u1)
    a = sum(1 for i in u1 if i % 2)         # the active ones among them
    return [
        ("log off a session by name", "1e + 1l",
         ["RDP-Tcp#1", "/server:S"], dict(e=1, l=1)),
        ("select by user", "1e",
         ["/whatif", "/user:u1*", "/server:S"], dict(e=1)),
        ("select by state", "1e",
         ["/whatif", "/state:disc", "/server:S"], dict(e=1)),
        ("select by idle", "1e + 1q per disconnected session",
         ["/whatif", "/state:disc", "/idle:1h", "/server:S"],
         dict(e=1, q=len(disc))),
        ("log off k", "1e + k l",
         ["/user:u1*", "/server:S"], dict(e=1, l=k)),
        ("warn, log off k", "2e + a m + k l",
         ["/user:u1*", "/warn:Bye", "/grace:0", "/server:S"],
         dict(e=2, m=a, l=k)),
    ]


def counts_cell(d, expected, server="S"):
    got = {key: d.calls(server, func) for key, func in FUNCS}
    got["other"] = d.rpcs(server) - sum(got.values())
    want = {key: expected.get(key, 0) for key in got}
    text = " + ".join("%d%s" % (v, key) for key, v in got.items() if v) or "0"
    if got == want:
        return text + " ✓"
    problems.append("calls %s, expected %s" % (got, want))
    return "%s ✗ (expected %s)" % (
        text, " + ".join("%d%s" % (v, k) for k, v in want.items() if v))


def call_counts(proc, sizes):
    rows = {}
    for n in sizes:
        for label, formula, args, expected in operations(n):
            proc.load(one_server(n))
            proc.run(args)
            shown = " ".join(a for a in args if a != "/server:S")
            row = rows.setdefault(label, ["%s: `%s`" % (label, shown),
                                          formula])
            row.append(counts_cell(proc.double, expected))
    header = ["Operation (on /server:S)", "Formula"] + \
        ["N = %d" % n for n in sizes]
    return table(header, list(rows.values()))


# --- 4. Slow links -----------------------------------------------------------

SLOW_CASES = [
    ("`/query`", ["/query", "/server:S"]),
    ("`/whatif /idle:1h`", ["/whatif", "/idle:1h", "/server:S"]),
]


def slow_links(proc, n, reps):
    """One server, n user sessions, SLOW_LATENCY_MS on every network call:
    one enumeration, then n session-time reads, TIMES_READERS at a time."""
    ideal = (1 + math.ceil(n / TIMES_READERS)) * SLOW_LATENCY_MS / 1000
    rows = []
    for label, args in SLOW_CASES:
        farm = one_server(n)
        for func in NETWORK_CALLS:
            farm.latency("S", func, SLOW_LATENCY_MS)
        times = []
        for _ in range(reps):
            proc.load(farm)
            t0 = time.perf_counter()
            proc.run(args)
            times.append(time.perf_counter() - t0)
        calls = counts_cell(proc.double, dict(e=1, q=n))
        took = median(times)
        ratio = took / ideal
        rows.append((label, n, SLOW_LATENCY_MS, calls,
                     proc.double.max_in_flight_for(
                         "S", "WTSQuerySessionInformationW"),
                     "%.2f" % ideal, "%.2f" % took, "%.2fx" % ratio,
                     met(ratio, SLOW_TARGET)))
    return table(["Run (/server:S)", "Sessions N", "Latency ms",
                  "Calls (formula 1e + Nq)", "Most queries at once",
                  "Ideal s", "Wall s", "Ratio",
                  "≤ %.2fx" % SLOW_TARGET], rows)


# --- 5. Fan-out --------------------------------------------------------------

def fan_out(proc, tmp, sizes, parallel=16):
    rows = []
    for m in sizes:
        names = ["R%03d" % i for i in range(1, m + 1)]
        farm = farmlib.Farm(caller=CALLER)
        for name in names:
            srv = farm.server(name)
            srv.session(0, "Services", farmlib.DISCONNECTED)
            srv.session(2, "RDP-Tcp#1", farmlib.ACTIVE, "a", "CORP")
            srv.session(3, "", farmlib.DISCONNECTED, "d", "CORP")
            srv.session(65536, "RDP-Tcp", farmlib.LISTEN)
            farm.latency(name, "*", LATENCY_MS)
        listing = os.path.join(tmp, "servers.txt")
        with open(listing, "w") as f:
            f.write("\n".join(names) + "\n")
        proc.load(farm)
        t0 = time.perf_counter()
        proc.run(["/state:disc", "/server:@" + listing,
                  "/parallel:%d" % parallel])
        took = time.perf_counter() - t0
        waits = [e for e in proc.double.log() if e.server in names]
        per_server = len(waits) / m
        logged_off = sum(1 for e in waits
                         if e.func == "WTSLogoffSession" and e.ok)
        if logged_off != m or not waits:
            problems.append("fan-out %d: %d logoffs" % (m, logged_off))
            continue
        ideal = math.ceil(m / parallel) * per_server * LATENCY_MS / 1000
        ratio = took / ideal
        rows.append((m, parallel, "%g" % per_server, "%.2f" % ideal,
                     "%.2f" % took, "%.2fx" % ratio,
                     met(ratio, FANOUT_TARGET)))
    return table(["Servers M", "/parallel", "Calls per server (waiting)",
                  "Ideal s", "Wall s", "Ratio", "≤ %.2fx" % FANOUT_TARGET],
                 rows)


# --- 6. Many unreachable servers ---------------------------------------------

MANY_PARALLEL = 256


def child_logoff(listing):
    """In a fresh process: logoff.main on the listed servers (none of them
    in the farm: each opens, then its first call fails with 1722).  Prints
    one JSON line: wall and CPU seconds of the run, the exit code and what
    the double counted."""
    import logoff
    args = ["/query", "/server:@" + listing, "/parallel:%d" % MANY_PARALLEL]
    with open(os.devnull, "w", encoding="utf-8") as null, \
            contextlib.redirect_stdout(null), \
            contextlib.redirect_stderr(null):
        cpu0, main0 = time.process_time(), time.thread_time()
        t0 = time.perf_counter()
        code = logoff.main(args)
        took = time.perf_counter() - t0
        main = time.thread_time() - main0
        cpu = time.process_time() - cpu0
    d = farmlib.Double(os.environ["WTSAPI32_DLL"])
    print(json.dumps(dict(
        wall=took, main_cpu=main, cpu=cpu, code=code,
        opens=d.calls(None, "WTSOpenServerW"),
        enums=d.calls(None, "WTSEnumerateSessionsExW"),
        closes=d.calls(None, "WTSCloseServer"),
        failed=sum(1 for e in d.log() if e.func == "WTSEnumerateSessionsExW"
                   and not e.ok and e.error == 1722))))


def child_floor(listing, threads):
    """In a fresh process: the same calls as plain ctypes, no logoff: open,
    one enumeration (fails with 1722), close, per server, on ``threads``
    threads taking the next name from a shared list."""
    import ctypes
    import threading
    dll = ctypes.CDLL(os.environ["WTSAPI32_DLL"], use_errno=True)
    dword, ptr = ctypes.c_uint32, ctypes.c_void_p
    dll.WTSOpenServerW.restype = ptr
    dll.WTSOpenServerW.argtypes = [ctypes.c_wchar_p]
    dll.WTSCloseServer.restype = None
    dll.WTSCloseServer.argtypes = [ptr]
    dll.WTSEnumerateSessionsExW.restype = ctypes.c_int32
    dll.WTSEnumerateSessionsExW.argtypes = [
        ptr, ctypes.POINTER(dword), dword, ctypes.POINTER(ptr),
        ctypes.POINTER(dword)]
    with open(listing, encoding="utf-8") as f:
        names = f.read().split()[::-1]
    failed = []

    def work():
        n = 0
        while names:
            try:
                name = names.pop()      # atomic under the GIL
            except IndexError:
                break
            h = dll.WTSOpenServerW(name)
            level, info, count = dword(1), ptr(), dword(0)
            if not dll.WTSEnumerateSessionsExW(h, ctypes.byref(level), 0,
                                               ctypes.byref(info),
                                               ctypes.byref(count)):
                n += ctypes.get_errno() == 1722
            dll.WTSCloseServer(h)
        failed.append(n)
    t0 = time.perf_counter()
    if threads == 1:
        work()
    else:
        pool = [threading.Thread(target=work) for _ in range(threads)]
        for th in pool:
            th.start()
        for th in pool:
            th.join()
    print(json.dumps(dict(wall=time.perf_counter() - t0,
                          failed=sum(failed))))


def in_child(kind, listing, env):
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", kind,
         listing], env=env, cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, universal_newlines=True)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        problems.append("the %s child on %s failed: %s" % (
            kind, listing, done.stderr.strip()[-500:]))
        return None


def many_servers(lib, tmp, sizes):
    farm = farmlib.Farm(caller=CALLER)
    env = dict(os.environ, WTSAPI32_DLL=lib,
               WTSDOUBLE_FARM=farm.write(os.path.join(tmp, "farm-many.txt")))
    env.pop("WTSDOUBLE_LOG", None)
    rows, per = [], {}
    for m in sizes:
        listing = os.path.join(tmp, "many-%d.txt" % m)
        with open(listing, "w", encoding="utf-8") as f:
            f.write("".join("U%06d\n" % i for i in range(m)))
        mine = in_child("logoff", listing, env)
        plain = in_child("floor:%d" % MANY_PARALLEL, listing, env)
        alone = in_child("floor:1", listing, env)
        if mine is None or plain is None or alone is None:
            continue
        exact = (mine["opens"], mine["enums"], mine["closes"],
                 mine["failed"]) == (m, m, m, m) and mine["code"] == 1
        if not exact:
            problems.append("%d unreachable servers: %r" % (m, mine))
        for floor in (plain, alone):
            if floor["failed"] != m:
                problems.append("%d unreachable servers, floor: %r" % (
                    m, floor))
        us = per[m] = dict(
            wall=mine["wall"] / m * 1e6, plain=plain["wall"] / m * 1e6,
            alone=alone["wall"] / m * 1e6, main=mine["main_cpu"] / m * 1e6)
        rows.append((
            "{:,}".format(m),
            "%d open + %d enum (1722) + %d close, exit %d%s" % (
                mine["opens"], mine["enums"], mine["closes"], mine["code"],
                " ✓" if exact else " ✗"),
            "%.2f" % mine["wall"], "%.1f" % us["wall"], "%.1f" % us["main"],
            "%.1f" % us["plain"], "%.2fx" % (mine["wall"] / plain["wall"]),
            "%.1f" % us["alone"]))
    text = table(["Servers M", "Calls (all servers)", "Wall s",
                  "µs per server", "Main thread CPU µs per server",
                  "Plain threads µs per server", "Ratio to plain threads",
                  "The double alone µs per server"], rows)
    ms = sorted(per)
    notes = ["Linearity, µs per server at M over the M before it (1.00 is "
             "linear): " + "; ".join(
                 "M = {:,}: logoff {:.2f}, main thread {:.2f}, plain "
                 "threads {:.2f}, the double alone {:.2f}".format(
                     b, per[b]["wall"] / per[a]["wall"],
                     per[b]["main"] / per[a]["main"],
                     per[b]["plain"] / per[a]["plain"],
                     per[b]["alone"] / per[a]["alone"])
                 for a, b in zip(ms, ms[1:])) + "."] if len(ms) > 1 else []
    return text, notes


# --- 7. Scale ----------------------------------------------------------------

SCALE_CASES = [
    ("`/query`", ["/query", "/server:S"]),
    ("`/whatif /user:u1* /state:disc`",
     ["/whatif", "/user:u1*", "/state:disc", "/server:S"]),
    ("`/user:u1* /state:disc` (logs off)",
     ["/user:u1*", "/state:disc", "/server:S"]),
]


def scale(proc, sizes, budget_s):
    """Median wall time of logoff.main (repeated within budget_s), and the
    tracemalloc peak of one more run."""
    rows, per, findings = [], {}, []
    for label, args in SCALE_CASES:
        target = US_PER_SESSION_TARGETS.get(label, US_PER_SESSION_TARGET)
        for n in sizes:
            farm = one_server(n)
            times = []
            deadline = time.perf_counter() + budget_s
            while len(times) < 3 or (time.perf_counter() < deadline and
                                     len(times) < 50):
                proc.load(farm)          # a logoff run changes the farm
                t0 = time.perf_counter()
                proc.run(args)
                times.append(time.perf_counter() - t0)
            proc.load(farm)
            tracemalloc.start()
            proc.run(args)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            us = per[label, n] = median(times) / n * 1e6
            if n == sizes[-1] and us > target:
                findings.append("%s at N = {:,}: %s".format(n) % (
                    label, hot_spots(proc, farm, args)))
            rows.append((label, "{:,}".format(n),
                         "%.2f" % (median(times) * 1000), "%.1f" % us,
                         "%.0f" % (peak / 1024), "%.0f" % (peak / n),
                         "%g" % target,
                         "–" if n == sizes[0] else met(us, target)))
    header = ["Run (in-process, /server:S)", "Sessions N", "Median ms",
              "µs per session", "Peak KiB (tracemalloc)",
              "Peak B per session", "Target µs", "Met"]
    big, mid = sizes[-1], sizes[-2]
    note = ("At N = {:,} the time is mostly the fixed cost of a run, so the "
            "target is judged at the larger N. ".format(sizes[0]) +
            "Linearity, µs per session at N = {:,} over N = {:,} (1.00 is "
            "linear): ".format(big, mid) + "; ".join(
                "%s %.2f" % (label, per[label, big] / per[label, mid])
                for label, _ in SCALE_CASES) + ".")
    return table(header, rows), note, findings


class _ProfiledThreads:
    """logoff's view of the threading module, with every Thread run under
    its own cProfile.Profile: cProfile sees only the thread it runs in,
    and logoff works on servers and reads session times on threads."""

    def __init__(self, threading, profiles):
        import cProfile
        self._threading = threading

        class Thread(threading.Thread):
            def run(self):
                prof = cProfile.Profile(time.thread_time)
                profiles.append(prof)
                prof.runcall(super().run)
        self.Thread = Thread

    def __getattr__(self, name):
        return getattr(self._threading, name)


def hot_spots(proc, farm, args, top=6):
    """The functions with the most own CPU time in one run (cProfile, each
    thread timed by its own CPU clock, so a thread waiting for another, or
    for the GIL, is not counted)."""
    import cProfile
    import pstats
    logoff = proc.logoff
    profiles = []
    saved = logoff.threading
    logoff.threading = _ProfiledThreads(saved, profiles)
    proc.load(farm)
    prof = cProfile.Profile(time.thread_time)
    try:
        prof.runcall(proc.run, args)
    finally:
        logoff.threading = saved
    stats = pstats.Stats(prof, *profiles).stats
    total = sum(st[2] for st in stats.values())
    stages = []
    for label, name in HOT_STAGES:
        cum = sum(st[3] for (path, _, func), st in stats.items()
                  if func == name and os.path.dirname(path) == ROOT)
        if cum:
            stages.append("%s (%s) %.0f%%" % (label, name, cum / total * 100))
    rank = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)
    return ("by stage, cumulative: %s. By own time: " % (
        "; ".join(stages) or "none of %s found" % ", ".join(
            n for _, n in HOT_STAGES)) + "; ".join(
        "%s (%s:%d) %.0f%%, %d calls" % (
            func, os.path.basename(path), line, st[2] / total * 100, st[1])
        for (path, line, func), st in rank[:top]) + ".")


# The stages of a run, by the function that does each (logoff.py, wtsapi.py).
HOT_STAGES = (("enumeration", "sessions"),
              ("reading session times", "times"),
              ("the table", "_print_table"))


# --- The run -----------------------------------------------------------------

def say(*lines):
    print("\n".join(lines + ("",)), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a fast smoke run: few repetitions, small sizes")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        kind, listing = args.child
        if kind == "logoff":
            child_logoff(listing)
        else:
            child_floor(listing, int(kind.split(":")[1]))
        return 0
    quick = args.quick
    started = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="logoff-bench-")
    try:
        lib = farmlib.build(tmp)
        say("# logoff.py benchmarks%s" % (" (--quick)" if quick else ""), "",
            machine())

        reps = 3 if quick else 30
        env = startup_env(lib, tmp)
        rows, findings = startup(env, tmp, reps, quick)
        say("## Start-up", "",
            "Wall time of a complete run against the floor `python -c "
            "\"import ctypes\"`: %d runs of each command, each right after "
            "a run of the floor; ratio = median of those pairs' ratios, +ms "
            "= median of their differences. Imported modules run from "
            "cached bytecode (written by a warm-up run). The targets are "
            "for the default run; `-S` leaves out `site` and its .pth "
            "hooks, which add the same time to both sides and may "
            "pre-import what logoff would pay for, so its rows show what "
            "logoff itself costs." % reps, "",
            table(["Command", "Median ms", "Floor ms", "+ms", "Ratio",
                   "Target"], rows),
            "", *["- " + f for f in findings])

        rows = translated(env, reps)
        if rows is None:
            say("## Translated start-up", "",
                "Not available yet: `LOGOFF_LANG=%s python logoff.py /?` "
                "prints the same help as English, so logoff.py has no "
                "translation to measure." % LANG)
        else:
            say("## Translated start-up", "",
                "`LOGOFF_LANG=%s` against English (LOGOFF_LANG unset), the "
                "same command, interleaved, %d runs each; +ms = median of "
                "the pairs' differences." % (LANG, reps), "",
                table(["Command", "Median ms", "English ms", "+ms",
                       "Ratio"], rows))

        proc = InProcess(lib, tmp)
        say("## Calls per operation", "",
            "Counted by the double on a server with N user sessions (plus "
            "session 0 and a listener); e = enumerations, q = session "
            "queries, l = logoffs, m = messages, other = any other network "
            "call (opening, closing and freeing are local); k = the sessions "
            "whose user matches u1*, a = the active ones among them (a "
            "message cannot reach a disconnected session, so none is sent "
            "there). ✓: equal to the formula. The caller's "
            "session ID is on no session of S (when one has it, one more "
            "query tells whether it is the caller's; the tests count it).",
            "", call_counts(proc, [10, 100] if quick else [10, 100, 1000]))

        n = 40 if quick else 200
        say("## Slow links", "",
            "One server, N user sessions, %d ms latency on every network "
            "call (%s; opening and closing a handle are local). A listing "
            "and an /idle selection read every user session's times, up to "
            "%d at a time (logoff.TIMES_READERS = %s): ideal = (1 + ceil(N / "
            "%d)) x latency; median of %d runs." % (
                SLOW_LATENCY_MS, ", ".join(NETWORK_CALLS), TIMES_READERS,
                getattr(proc.logoff, "TIMES_READERS", "?"), TIMES_READERS,
                1 if quick else 3),
            "", slow_links(proc, n, 1 if quick else 3))

        say("## Fan-out", "",
            "One disconnected session logged off per server (`/state:disc`), "
            "%d ms latency on every call to a server; ideal = ceil(M / "
            "parallel) x calls per server x latency." % LATENCY_MS, "",
            fan_out(proc, tmp, [1, 10] if quick else [1, 10, 50, 200]))

        sizes = [1000, 2000] if quick else [1000, 10000, 100000]
        text, notes = many_servers(lib, tmp, sizes)
        say("## Many unreachable servers", "",
            "`/query /server:@FILE /parallel:%d` on M servers not in the "
            "farm: each opens, then its first call fails with 1722. Each "
            "run in a fresh process (the double never forgets a name it "
            "was asked to open); wall and main thread CPU (parsing, the "
            "scheduler, the report) of `logoff.main` alone. Plain threads: "
            "the same calls (open, enumerate, close) as a plain ctypes loop "
            "on %d threads, the floor for the ratio; the double alone: that "
            "loop on one thread, the double's own cost, which grows with "
            "the number of names it has seen (it looks every name it is "
            "asked to open up in a list)." % (MANY_PARALLEL, MANY_PARALLEL),
            "", text, "", *notes)

        sizes = [10, 100, 1000] if quick else [10, 1000, 10000]
        text, note, findings = scale(proc, sizes, 0.2 if quick else 1.5)
        say("## Scale", "",
            "logoff.main in-process, stdout to the null device; peak memory "
            "is tracemalloc's peak (Python allocations) over a separate run.",
            "", text, "", note)
        if findings:
            say("Where the target is missed, the top functions by own CPU "
                "time (cProfile, every thread, each on its own CPU clock):",
                "",
                *["- " + f for f in findings])
        if problems:
            say("## Problems", "", *["- " + p for p in problems])
        say("Total benchmark time: %.0f s." % (time.perf_counter() - started))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
