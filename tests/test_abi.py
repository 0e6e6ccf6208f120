"""wtsapi.py against the real SDK header, for every Windows target.

The reference is mingw-w64's wtsapi32.h as bundled with zig (PyPI
``ziglang``; the address families from its winsock2.h), and for the other
Windows calls (``_SYSTEM_PROTOTYPES``, the event log's included) its
winbase.h, winnls.h, sysinfoapi.h, secext.h, fileapi.h, minwinbase.h,
processthreadsapi.h, securitybaseapi.h and handleapi.h (structures such as
SID and TOKEN_USER: winnt.h).  A C probe is generated from
introspecting wtsapi.py (every ctypes structure and field, every IntEnum
member, every public all-caps constant and the enumerators in
``SDK_ENUMERATORS``, every prototype in both tables), compiled to assembly with
``zig cc -S`` for x86_64, x86 and aarch64 Windows (nothing is linked or run),
and the numbers are read back from the ``.s`` file.

What ctypes makes of a structure on a target is computed by a small model of
ctypes' layout rules (``layout``), itself checked against the real ctypes on
the host.  On Windows (where zig is not available) the real ctypes layouts
are compared against a JSON file named by ``WTS_ABI_EXPECTED``, written on
Linux beforehand by ``write_expected(path, target)``.

mingw-w64 (as bundled with zig 0.17) lacks a few declarations the SDK has:
those are in ``NOT_IN_MINGW``, copied from their Microsoft Learn pages, and
the probe declares them itself; a later mingw-w64 that declares them too
must agree, or the probe does not compile.

In CI (``CI`` set) a missing ziglang is a failure, elsewhere a skip.
"""

import ctypes
import enum
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import wtsapi  # noqa: E402


# --- Targets -------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    name: str
    triple: str          # zig's -target; None for the host
    pointer_size: int
    wchar_size: int

    @property
    def is_host(self):
        return self.triple is None


TARGETS = {t.name: t for t in (
    Target("x86_64", "x86_64-windows-gnu", 8, 2),
    Target("x86", "x86-windows-gnu", 4, 2),
    Target("aarch64", "aarch64-windows-gnu", 8, 2),
)}
HOST = Target("host", None, ctypes.sizeof(ctypes.c_void_p),
              ctypes.sizeof(ctypes.c_wchar))

# Public all-caps int constants of wtsapi.py that are deliberately not SDK
# names.  They are checked only if the headers happen to define them; every
# other public all-caps int constant must be a macro or enumerator there.
NOT_SDK_CONSTANTS = frozenset({"LANGID_EN_US"})

# Public int constants of wtsapi.py that are SDK enumerators without an
# all-caps name (so the rule above would not find them).
SDK_ENUMERATORS = ("NameSamCompatible", "TokenUser",
                   "ComputerNamePhysicalDnsHostname")

# ctypes class name -> C type, where they differ (none so far).
C_TYPE_NAMES = {}

# Prototypes the SDK's wtsapi32.h has and mingw-w64's lacks: name -> the
# declaration, as on its Microsoft Learn page (types as mingw-w64 spells
# them: WINBOOL for BOOL).  The probe declares these itself, so they are
# checked against the documented signature rather than a second header.
NOT_IN_MINGW = {
    # https://learn.microsoft.com/windows/win32/api/wtsapi32/nf-wtsapi32-wtsenumerateprocessesexw
    "WTSEnumerateProcessesExW":
        "WINBOOL WINAPI WTSEnumerateProcessesExW(HANDLE hServer, "
        "DWORD *pLevel, DWORD SessionId, LPWSTR *ppProcessInfo, "
        "DWORD *pCount);",
}


# --- What wtsapi.py declares ---------------------------------------------------

def _defined_here(obj):
    return isinstance(obj, type) and obj.__module__ == wtsapi.__name__


def structures():
    """Every ctypes Structure/Union class defined in wtsapi.py, by name."""
    return {name: obj for name, obj in sorted(vars(wtsapi).items())
            if _defined_here(obj)
            and issubclass(obj, (ctypes.Structure, ctypes.Union))}


def int_enums():
    return {name: obj for name, obj in sorted(vars(wtsapi).items())
            if _defined_here(obj) and issubclass(obj, enum.IntEnum)}


def _is_constant_name(name):
    return re.fullmatch(r"[A-Z][A-Z0-9_]*", name) is not None


def int_constants():
    return {name: value for name, value in sorted(vars(wtsapi).items())
            if (_is_constant_name(name) or name in SDK_ENUMERATORS)
            and isinstance(value, int)
            and not isinstance(value, (bool, enum.Enum))}


def prototypes():
    """Every prototype wtsapi.py declares, wtsapi32's and the system DLLs':
    {name: (restype, argtypes)}."""
    found = {name: (restype, argtypes) for name, (restype, argtypes, _doc)
             in wtsapi._PROTOTYPES.items()}
    for name, (_dll, restype, argtypes, _doc) in \
            wtsapi._SYSTEM_PROTOTYPES.items():
        assert name not in found, name
        found[name] = (restype, argtypes)
    return found


def null_constants():
    """All-caps names bound to None: the SDK's ((HANDLE)NULL) and the like."""
    return sorted(name for name, value in vars(wtsapi).items()
                  if _is_constant_name(name) and value is None)


# --- A model of ctypes' layout rules ---------------------------------------------

_POINTER_CODES = {"P", "z", "Z", "O"}     # c_void_p, c_char_p, c_wchar_p, py_object


def is_pointer(ctype):
    if issubclass(ctype, (ctypes._Pointer, ctypes._CFuncPtr)):
        return True
    return (issubclass(ctype, ctypes._SimpleCData)
            and ctype._type_ in _POINTER_CODES)


def size_align(ctype, target):
    """(size, alignment) ctypes gives ``ctype`` on ``target``."""
    if is_pointer(ctype):
        return target.pointer_size, target.pointer_size
    if issubclass(ctype, ctypes.Array):
        size, align = size_align(ctype._type_, target)
        return size * ctype._length_, align
    if issubclass(ctype, (ctypes.Structure, ctypes.Union)):
        lay = layout(ctype, target)
        return lay.size, lay.align
    if getattr(ctype, "_pointer_sized_", False):      # ULONG_PTR
        return target.pointer_size, target.pointer_size
    if issubclass(ctype, ctypes._SimpleCData):
        if ctype._type_ == "u":                       # c_wchar
            return target.wchar_size, target.wchar_size
        if target.is_host:
            return ctypes.sizeof(ctype), ctypes.alignment(ctype)
        if ctype._type_ == "g":
            raise TypeError("c_longdouble differs between host and Windows")
        # The module uses fixed-width aliases, so the host size is the
        # target size; every Windows target aligns these (1..8 bytes)
        # naturally, c_int64 and c_double included.
        return ctypes.sizeof(ctype), ctypes.sizeof(ctype)
    raise TypeError("no layout rule for %r" % (ctype,))


@dataclass(frozen=True)
class FieldLayout:
    offset: int
    size: int
    pointer: bool
    length: int = None       # arrays: element count and element size
    elem_size: int = None


@dataclass(frozen=True)
class Layout:
    size: int
    align: int
    fields: dict             # name -> FieldLayout, in declaration order


def _round_up(n, align):
    return (n + align - 1) // align * align


def layout(cls, target):
    """The layout ctypes gives Structure/Union ``cls`` on ``target``."""
    is_union = issubclass(cls, ctypes.Union)
    pack = getattr(cls, "_pack_", 0)
    offset, align, fields = 0, 1, {}
    base = cls.__bases__[0]
    if base not in (ctypes.Structure, ctypes.Union) and hasattr(base, "_fields_"):
        inherited = layout(base, target)          # subclass fields follow
        offset, align = inherited.size, inherited.align
        fields.update(inherited.fields)
    for name, ctype, *bits in cls._fields_:
        if bits:
            raise NotImplementedError("%s.%s: bit fields are not modelled"
                                      % (cls.__name__, name))
        size, field_align = size_align(ctype, target)
        if pack:
            field_align = min(field_align, pack)
        field_offset = 0 if is_union else _round_up(offset, field_align)
        offset = max(offset, field_offset + size)
        align = max(align, field_align)
        if issubclass(ctype, ctypes.Array):
            fields[name] = FieldLayout(
                field_offset, size, False, ctype._length_,
                size_align(ctype._type_, target)[0])
        else:
            fields[name] = FieldLayout(field_offset, size, is_pointer(ctype))
    align = max(align, getattr(cls, "_align_", 1))
    return Layout(_round_up(offset, align), align, fields)


def c_type_name(cls):
    return C_TYPE_NAMES.get(cls.__name__, cls.__name__)


# --- Prototypes in the header ------------------------------------------------------

_C_TYPE_WORDS = {"void", "char", "short", "int", "long", "signed", "unsigned",
                 "float", "double", "const", "volatile", "struct", "union",
                 "enum"}
_DECL_NOISE = {"WINAPI", "SEC_ENTRY", "extern", "DECLSPEC_IMPORT",
               "WINBASEAPI", "WINUSERAPI", "WINADVAPI"}
# Calling-convention macros that mean __stdcall, as WINAPI does.
_STDCALL = {"WINAPI", "SEC_ENTRY"}


@dataclass(frozen=True)
class CPrototype:
    restype: str
    params: tuple            # C type of each parameter, names stripped
    winapi: bool


def _header_text(path):
    text = Path(path).read_text(encoding="latin-1")
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = re.sub(r"\\\n", " ", text)
    text = re.sub(r"(?m)^\s*#[^\n]*", " ", text)      # preprocessor lines
    return re.sub(r"\s+", " ", text)


def _split_params(text):
    params, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            params.append(text[start:i])
            start = i + 1
    params.append(text[start:])
    return [p.strip() for p in params]


def _param_type(param):
    """C type of one parameter declaration, its name (if any) removed."""
    if "(" in param:
        raise ValueError("function-pointer parameter not supported: %r" % param)
    array = re.search(r"\[[^\]]*\]\s*$", param)
    if array:
        param = param[:array.start()]
    tokens = re.findall(r"\w+|\*", param)
    if (len(tokens) > 1 and re.fullmatch(r"\w+", tokens[-1])
            and tokens[-1] not in _C_TYPE_WORDS):
        param = param[:param.rindex(tokens[-1])]
    param = param.strip()
    return param + " *" if array else param


def parse_prototype(header_text, name):
    """The prototype of ``name`` in the header text, or None."""
    m = re.search(r"(?:^|[;{}])\s*([^;{}]*?)\b%s\s*\(([^;{}]*)\)\s*;"
                  % re.escape(name), header_text)
    if not m:
        return None
    words = m.group(1).split()
    restype = " ".join(w for w in words if w not in _DECL_NOISE)
    params = _split_params(m.group(2))
    if params in ([""], ["void"], ["VOID"]):
        params = []
    return CPrototype(restype, tuple(_param_type(p) for p in params),
                      bool(_STDCALL & set(words)))


# --- The probe ------------------------------------------------------------------

def ziglang_dir():
    spec = importlib.util.find_spec("ziglang")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def header_path(name="wtsapi32.h"):
    return ziglang_dir() / "lib/libc/include/any-windows-any" / name


# Where the prototypes are declared: wtsapi32's, then the system calls'.
HEADERS = ("wtsapi32.h", "winbase.h", "winnls.h", "sysinfoapi.h", "secext.h",
           "fileapi.h", "minwinbase.h", "processthreadsapi.h",
           "securitybaseapi.h", "handleapi.h")


_PREAMBLE = """\
/* Generated by tests/test_abi.py; numbers are read back from the assembly. */
#undef _WIN32_WINNT
#define _WIN32_WINNT 0x0A00
#include <stddef.h>
#include <winsock2.h>   /* before windows.h: AF_INET6 (winsock.h lacks it) */
#include <windows.h>
#include <winerror.h>
#include <winuser.h>
#include <wtsapi32.h>
#define SECURITY_WIN32
#include <secext.h>

#define FIELD(T, f) (((T *)0)->f)
#define IS_POINTER(x) (__builtin_classify_type(x) == 5)
#define IS_POINTER_TYPE(T) IS_POINTER(*(T *)0)
"""


class Probe:
    """The C probe: named entries, one value each, plus compile-time
    assertions (that the prototypes were parsed right)."""

    def __init__(self, undeclared=frozenset()):
        self.keys = []
        self.lines = []
        self.asserts = []
        self.prototypes = {}          # name -> CPrototype or error string
        self.identifiers = set()      # constants and enumerators used
        self.undeclared = undeclared  # those the compiler did not know

    def add(self, key, expr, ifdef=None):
        """One value; with ``ifdef``, 0 where that macro is not defined."""
        self.keys.append(key)
        line = "  /* %s */ (long long)(%s)," % (" ".join(map(str, key)), expr)
        if ifdef:
            line = "#ifdef %s\n%s\n#else\n  0,\n#endif" % (ifdef, line)
        self.lines.append(line)

    def ident(self, name):
        """``name`` as a C expression: 0 once known to be undeclared."""
        self.identifiers.add(name)
        return "0" if name in self.undeclared else name

    def source(self):
        return "%s\n%s\n%s\nconst long long probe_values[] = {\n%s\n};\n" % (
            _PREAMBLE, "\n".join(NOT_IN_MINGW.values()),
            "\n".join(self.asserts), "\n".join(self.lines))


def build_probe(undeclared=frozenset()):
    probe = Probe(undeclared)
    for cls in structures().values():
        t = c_type_name(cls)
        probe.add(("struct", cls.__name__, "size"), "sizeof(%s)" % t)
        probe.add(("struct", cls.__name__, "align"), "_Alignof(%s)" % t)
        for name, fl in layout(cls, HOST).fields.items():
            f = "FIELD(%s, %s)" % (t, name)
            probe.add(("field", cls.__name__, name, "offset"),
                      "offsetof(%s, %s)" % (t, name))
            probe.add(("field", cls.__name__, name, "size"), "sizeof(%s)" % f)
            if fl.length is None:
                probe.add(("field", cls.__name__, name, "pointer"),
                          "IS_POINTER(%s)" % f)
            else:
                probe.add(("field", cls.__name__, name, "elem_size"),
                          "sizeof(%s[0])" % f)

    for enum_name, enum_cls in int_enums().items():
        probe.add(("enum", enum_name, "size"), "sizeof(%s)" % enum_name)
        for member in enum_cls:
            probe.add(("enumerator", enum_name, member.name),
                      probe.ident(member.name))

    for name in int_constants():
        probe.add(("macro", name), "1", ifdef=name)
        # A macro or an enumerator; only NOT_SDK_CONSTANTS may be neither.
        ifdef = name if name in NOT_SDK_CONSTANTS else None
        c = probe.ident(name)
        probe.add(("const", name, "value"), c, ifdef)
        probe.add(("const", name, "size"), "sizeof(%s)" % c, ifdef)
        probe.add(("const", name, "pointer"), "IS_POINTER(%s)" % c, ifdef)
    for name in null_constants():       # must be macros
        probe.add(("macro", name), "1", ifdef=name)
        probe.add(("null", name, "is_null"), "(%s) == 0" % name, name)
        probe.add(("null", name, "size"), "sizeof(%s)" % name, name)

    header = " ".join(_header_text(header_path(h)) for h in HEADERS)
    header += " " + " ".join(NOT_IN_MINGW.values())
    for fname in prototypes():
        try:
            proto = parse_prototype(header, fname)
        except ValueError as e:
            probe.prototypes[fname] = str(e)
            continue
        if proto is None:
            probe.prototypes[fname] = "%s is not declared in %s" % (
                fname, ", ".join(HEADERS))
            continue
        probe.prototypes[fname] = proto
        # The parse must describe exactly the header's function type.
        probe.asserts.append(
            "_Static_assert(__builtin_types_compatible_p(__typeof__(&%s), "
            "%s (%s*)(%s)), \"test_abi.py misparsed the prototype of %s\");"
            % (fname, proto.restype, "WINAPI " if proto.winapi else "",
               ", ".join(proto.params) or "void", fname))
        probe.add(("proto", fname, "void"),
                  "__builtin_types_compatible_p(%s, void)" % proto.restype)
        probe.add(("proto", fname, "size"), "sizeof(%s)" % proto.restype)
        probe.add(("proto", fname, "pointer"),
                  "IS_POINTER_TYPE(%s)" % proto.restype)
        for i, ptype in enumerate(proto.params):
            probe.add(("param", fname, i, "size"), "sizeof(%s)" % ptype)
            probe.add(("param", fname, i, "pointer"),
                      "IS_POINTER_TYPE(%s)" % ptype)
    return probe


_DATA_DIRECTIVE = re.compile(r"\s*\.(quad|xword|8byte|zero|space)\s+(-?\w+)")


def parse_assembly(asm, count):
    """The ``count`` 64-bit values of ``probe_values`` in an .s file."""
    lines = asm.splitlines()
    start = next(i for i, line in enumerate(lines)
                 if re.match(r"_?probe_values:", line))
    values = []
    for line in lines[start + 1:]:
        m = _DATA_DIRECTIVE.match(line)
        if not m:
            break
        if m.group(1) in ("zero", "space"):
            values.extend([0] * (int(m.group(2), 0) // 8))
        else:
            values.append(int(m.group(2), 0))
    assert len(values) == count, "read %d values, expected %d" % (
        len(values), count)
    return values


def compile_probe(probe, target, workdir):
    """Compile ``workdir``/probe.c for ``target``: {key: value}."""
    src = Path(workdir) / "probe.c"
    out = Path(workdir) / ("probe-%s.s" % target.name)
    cmd = [sys.executable, "-m", "ziglang", "cc", "-target", target.triple,
           "-std=gnu11", "-w", "-S", "-o", str(out), str(src)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        raise RuntimeError("zig cc for %s failed:\n%s" % (target.triple,
                                                         run.stderr))
    return dict(zip(probe.keys, parse_assembly(out.read_text(),
                                               len(probe.keys))))


def _compile_all(probe, targets):
    with tempfile.TemporaryDirectory(prefix="wts-abi-") as tmp:
        Path(tmp, "probe.c").write_text(probe.source())

        def one(target):
            try:
                return compile_probe(probe, target, tmp)
            except Exception as e:         # reported by the target's tests
                return e
        with ThreadPoolExecutor(len(targets)) as pool:
            return dict(zip([t.name for t in targets], pool.map(one, targets)))


_UNDECLARED = re.compile(r"use of undeclared identifier '(\w+)'")


def run_probes(targets):
    """(probe, {target name: {key: value} or the exception}), compiled in
    parallel.  Constants or enumerators the headers lack are recompiled
    away (``probe.undeclared``), so that only their own tests fail."""
    probe = build_probe()
    while True:
        results = _compile_all(probe, targets)
        errors = " ".join(str(r) for r in results.values()
                          if isinstance(r, Exception))
        undeclared = set(_UNDECLARED.findall(errors)) & probe.identifiers
        if not undeclared - probe.undeclared:
            return probe, results
        probe = build_probe(probe.undeclared | undeclared)


# --- Expected values for the Windows leg ---------------------------------------------

def _expected_from_probe(values, target):
    return {
        "target": target.name,
        "pointer_size": target.pointer_size,
        "source": "mingw-w64 wtsapi32.h (zig %s)" % _zig_version(),
        "structures": {
            name: {
                "size": values[("struct", name, "size")],
                "align": values[("struct", name, "align")],
                "fields": {f: [values[("field", name, f, "offset")],
                               values[("field", name, f, "size")]]
                           for f in layout(cls, target).fields},
            } for name, cls in structures().items()},
        "prototypes": {
            fname: {
                "restype": (None if values[("proto", fname, "void")]
                            else values[("proto", fname, "size")]),
                "argtypes": [values[("param", fname, i, "size")]
                             for i in range(len(argtypes))],
            } for fname, (_, argtypes) in prototypes().items()},
    }


def _zig_version():
    try:
        from importlib.metadata import version
        return version("ziglang")
    except Exception:
        return "?"


def write_expected(path, target="x86_64"):
    """Write what the header says ctypes must produce on ``target`` (sizes,
    alignments, field offsets/sizes, prototype argument sizes) as JSON, for
    the Windows leg (``WTS_ABI_EXPECTED``).  Needs ziglang, when called."""
    if ziglang_dir() is None:
        raise RuntimeError("write_expected needs the ziglang package "
                           "(pip install ziglang)")
    tgt = TARGETS[target]
    probe, results = run_probes([tgt])
    values = results[target]
    if isinstance(values, Exception):
        raise values
    for fname, proto in probe.prototypes.items():
        if isinstance(proto, str):
            raise RuntimeError(proto)
    data = _expected_from_probe(values, tgt)
    Path(path).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return data


# --- Fixtures ------------------------------------------------------------------------

_ON_WINDOWS = sys.platform == "win32"
_windows_only = pytest.mark.skipif(not _ON_WINDOWS, reason="Windows leg only")
_not_on_windows = pytest.mark.skipif(
    _ON_WINDOWS, reason="zig probes run on the Linux leg; here real ctypes "
    "is checked against WTS_ABI_EXPECTED instead")


def _require_zig():
    if ziglang_dir() is None:
        msg = ("the ziglang package is not importable, so the wtsapi32.h "
               "probe cannot be compiled (pip install ziglang)")
        if os.environ.get("CI"):
            pytest.fail("CI must run the ABI test: " + msg, pytrace=False)
        pytest.skip(msg)
    for name in HEADERS:
        if not header_path(name).is_file():
            pytest.fail("ziglang has no %s" % header_path(name),
                        pytrace=False)


@pytest.fixture
def double():
    """Overrides conftest's autouse test double: nothing here loads a DLL."""
    yield None


@pytest.fixture(scope="module")
def probed():
    _require_zig()
    return run_probes(list(TARGETS.values()))


@pytest.fixture(params=sorted(TARGETS))
def target(request):
    return TARGETS[request.param]


@pytest.fixture
def values(probed, target):
    result = probed[1][target.name]
    if isinstance(result, Exception):
        pytest.fail("probe for %s: %s" % (target.name, result), pytrace=False)
    return result


# --- Tests -----------------------------------------------------------------------------

STRUCTS = sorted(structures())


def test_module_declares_something():
    assert STRUCTS and int_enums() and int_constants() and wtsapi._PROTOTYPES
    assert wtsapi._SYSTEM_PROTOTYPES
    assert set(SDK_ENUMERATORS) <= set(int_constants())


@pytest.mark.parametrize("name", STRUCTS)
def test_model_reproduces_host_ctypes(name):
    """The layout model, with host sizes, is what ctypes really does here."""
    cls = structures()[name]
    lay = layout(cls, HOST)
    assert (lay.size, lay.align) == (ctypes.sizeof(cls), ctypes.alignment(cls))
    for fname, fl in lay.fields.items():
        real = getattr(cls, fname)
        assert (fname, fl.offset, fl.size) == (fname, real.offset, real.size)


@_not_on_windows
@pytest.mark.parametrize("name", STRUCTS)
def test_structure_layout(name, target, values):
    cls = structures()[name]
    lay = layout(cls, target)
    where = "%s on %s" % (name, target.name)
    assert lay.size == values[("struct", name, "size")], "sizeof " + where
    assert lay.align == values[("struct", name, "align")], "alignment " + where
    for fname, fl in lay.fields.items():
        key = ("field", name, fname)
        got = {"offset": fl.offset, "size": fl.size}
        want = {"offset": values[key + ("offset",)],
                "size": values[key + ("size",)]}
        if fl.length is None:
            got["pointer"] = int(fl.pointer)
            want["pointer"] = values[key + ("pointer",)]
        else:
            got["elem_size"] = fl.elem_size
            want["elem_size"] = values[key + ("elem_size",)]
        assert got == want, "field %s of %s (ctypes model vs header)" % (
            fname, where)


@_not_on_windows
@pytest.mark.parametrize("enum_name", sorted(int_enums()))
def test_enum(enum_name, target, probed, values):
    assert values[("enum", enum_name, "size")] == 4, enum_name
    members = [m.name for m in int_enums()[enum_name]]
    unknown = [m for m in members if m in probed[0].undeclared]
    assert not unknown, "%s: not declared in the headers: %s" % (
        enum_name, ", ".join(unknown))
    got = {m.name: m.value for m in int_enums()[enum_name]}
    want = {m: values[("enumerator", enum_name, m)] for m in got}
    assert got == want


def _same_constant(py, c, size):
    """Equal, or the same bit pattern in the macro's width."""
    return py == c or (c < 0 and py == c + (1 << (8 * size)))


@_not_on_windows
def test_constants(target, probed, values):
    wrong = []
    for name, value in int_constants().items():
        if name in probed[0].undeclared:
            wrong.append("%s is not declared in the headers (if it is not "
                         "an SDK name, add it to NOT_SDK_CONSTANTS)" % name)
            continue
        if name in NOT_SDK_CONSTANTS and not values[("macro", name)]:
            continue
        c, size = values[("const", name, "value")], values[("const", name, "size")]
        if values[("const", name, "pointer")]:
            wrong.append("%s = %r, but the header's is a pointer (None for "
                         "NULL)" % (name, value))
        elif not _same_constant(value, c, size):
            wrong.append("%s = %r, header says %r" % (name, value, c))
    for name in null_constants():
        if not values[("macro", name)]:
            wrong.append("%s is None but not a macro in the headers" % name)
        elif not values[("null", name, "is_null")] or \
                values[("null", name, "size")] != target.pointer_size:
            wrong.append("%s is None but the header's is not a NULL pointer"
                         % name)
    assert not wrong, "\n".join(wrong)


def _ctype_size_pointer(ctype, target):
    return size_align(ctype, target)[0], int(is_pointer(ctype))


@_not_on_windows
@pytest.mark.parametrize("fname", list(prototypes()))
def test_prototype(fname, target, probed, values):
    proto = probed[0].prototypes[fname]
    assert not isinstance(proto, str), proto
    restype, argtypes = prototypes()[fname]
    assert len(argtypes) == len(proto.params), (
        "%s: %d argtypes, header has %d parameters: %s"
        % (fname, len(argtypes), len(proto.params), ", ".join(proto.params)))
    if restype is None:
        assert values[("proto", fname, "void")], (
            "%s: restype None, header returns %s" % (fname, proto.restype))
    else:
        assert not values[("proto", fname, "void")], (
            "%s: header returns void, restype is %r" % (fname, restype))
        assert _ctype_size_pointer(restype, target) == (
            values[("proto", fname, "size")],
            values[("proto", fname, "pointer")]), (
            "%s on %s: restype %r vs %s (size, is pointer)"
            % (fname, target.name, restype, proto.restype))
    for i, (ctype, ctext) in enumerate(zip(argtypes, proto.params)):
        assert _ctype_size_pointer(ctype, target) == (
            values[("param", fname, i, "size")],
            values[("param", fname, i, "pointer")]), (
            "%s on %s, parameter %d: %r vs %s (size, is pointer)"
            % (fname, target.name, i + 1, ctype, ctext))


@_not_on_windows
def test_not_in_mingw_is_still_needed():
    """Each NOT_IN_MINGW entry is one wtsapi.py declares and mingw-w64
    still lacks (once it has one, drop the copy and check the header's)."""
    _require_zig()
    header = " ".join(_header_text(header_path(h)) for h in HEADERS)
    for name, declaration in NOT_IN_MINGW.items():
        assert name in prototypes(), name
        assert parse_prototype(header, name) is None, name
        assert parse_prototype(declaration, name) is not None, name


@_not_on_windows
def test_write_expected(tmp_path):
    _require_zig()
    path = tmp_path / "expected.json"
    data = write_expected(path, "x86_64")
    assert json.loads(path.read_text()) == data
    assert set(data["structures"]) == set(STRUCTS)
    for name in STRUCTS:
        lay = layout(structures()[name], TARGETS["x86_64"])
        assert data["structures"][name]["size"] == lay.size


@_windows_only
def test_real_ctypes_matches_expected():
    """On Windows: the real ctypes layouts against write_expected()'s JSON."""
    path = os.environ.get("WTS_ABI_EXPECTED")
    if not path:
        msg = ("WTS_ABI_EXPECTED is not set (write it on Linux with "
               "tests.test_abi.write_expected(path, target))")
        if os.environ.get("CI"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    data = json.loads(Path(path).read_text())
    assert data["pointer_size"] == ctypes.sizeof(ctypes.c_void_p), (
        "%s was written for %s; this Python has %d-byte pointers"
        % (path, data["target"], ctypes.sizeof(ctypes.c_void_p)))
    wrong = []
    for name, cls in structures().items():
        want = data["structures"].get(name)
        if want is None:
            wrong.append("%s missing from %s: regenerate it" % (name, path))
            continue
        got = {"size": ctypes.sizeof(cls), "align": ctypes.alignment(cls)}
        got.update(("field %s [offset, size]" % f,
                    [getattr(cls, f).offset, getattr(cls, f).size])
                   for f in layout(cls, HOST).fields)
        want = dict(size=want["size"], align=want["align"], **{
            "field %s [offset, size]" % f: v
            for f, v in want["fields"].items()})
        for key in sorted(set(got) | set(want)):
            if got.get(key) != want.get(key):
                wrong.append("%s %s: ctypes %s, header %s" % (
                    name, key, got.get(key, "-"), want.get(key, "-")))
    for fname, (restype, argtypes) in prototypes().items():
        want = data["prototypes"].get(fname)
        got = {"restype": None if restype is None else ctypes.sizeof(restype),
               "argtypes": [ctypes.sizeof(a) for a in argtypes]}
        if got != want:
            wrong.append("%s: ctypes %s, header %s" % (fname, got, want))
    assert not wrong, "\n".join(wrong)
