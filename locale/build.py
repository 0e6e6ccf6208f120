"""The translations' build: extract, merge, compile.  Standard library only.

    python locale/build.py           extract the messages of logoff.py into
                                     locale/logoff.pot, merge them into every
                                     locale/<lang>/LC_MESSAGES/logoff.po, and
                                     compile each .po into logoff.mo beside it
    python locale/build.py --check   change nothing; exit 1 if a .po lacks a
                                     message, has an untranslated or fuzzy one,
                                     or a .mo is not what its .po compiles to

A new language: copy logoff.pot to locale/<lang>/LC_MESSAGES/logoff.po, with
<lang> as gettext names it (de, pt_BR; never a bare zh, which would also
answer Traditional Chinese); fill in its header's Language and
X-Windows-LANGID (the Windows LANGID, such as 0x0407: system error texts are
asked for in it) and every msgstr; run this script; add the .mo to
setup.cfg's data_files and to WHEEL_EXTRA in tests/test_package.py.  When
logoff.py's messages change, run this script: new ones come in untranslated
(and tests/test_l10n.py fails until they are translated), gone ones are
kept as obsolete (#~) entries.

The messages are every literal ``_("...")`` and ``Text("...")`` in
logoff.py, the session state words (table and sentence forms), and the
built-in English error texts of wtsapi.py (shown where the system has none).
The .mo files are the GNU format that Python's gettext reads, written the
way CPython's Tools/i18n/msgfmt.py writes them (sorted, no hash table), so
the same .po always gives the same bytes.
"""

import ast
import os
import re
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DOMAIN = "logoff"
# A Python %-placeholder: %(name)s, %d, %r, %%.  (%1 and %2 in a system
# text are FormatMessage's inserts, left as they are.)
PLACEHOLDER = re.compile(
    r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[diouxXeEfFgGcrsa%]")


def placeholders(text):
    """The Python placeholders of a message, sorted (%% left out)."""
    return sorted(p for p in PLACEHOLDER.findall(text) if p != "%%")
SOURCE = os.path.join(ROOT, "logoff.py")

# Calls of _() and Text() whose message is not a literal: the functions
# that render a message handed to them, and the state words (listed apart).
DYNAMIC_OK = {"__str__", "state_text", "state_word", "_event_sentence"}
# Functions whose messages are only ever rendered in English (.en()): the
# event log's sentences, which are records like the /log lines.
ENGLISH_ONLY = {"_event_sentence"}


# --- Extract -----------------------------------------------------------------

def extract(path=SOURCE):
    """(messages, dynamic): {msgid: [reference, ...]} for every literal
    ``_()``/``Text()`` message in ``path`` (a module-level name bound to a
    string counts as a literal), and [(function, line)] for calls whose
    message is computed."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    names = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Name):
            value = _string(node.value, {})
            if value is not None:
                names[node.targets[0].id] = value
    messages, dynamic = {}, []
    base = os.path.basename(path)

    def visit(node, function):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            function = node.name
            if function in ENGLISH_ONLY:
                return
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in ("_", "Text") and node.args:
            msgid = _string(node.args[0], names)
            if msgid is None:
                dynamic.append((function, node.lineno))
            else:
                # By function, not line: the .po files do not change
                # with every edit of logoff.py.
                ref = "%s:%s" % (base, function) if function else base
                refs = messages.setdefault(msgid, [])
                if ref not in refs:
                    refs.append(ref)
        for child in ast.iter_child_nodes(node):
            visit(child, function)
    visit(tree, None)
    return messages, dynamic


def _string(node, names):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _string(node.left, names), _string(node.right, names)
        if left is not None and right is not None:
            return left + right
    return None


def extra_messages():
    """Messages that are not literals in logoff.py: {msgid: [reference]}."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import wtsapi
    out = {}
    for member in wtsapi.WTS_CONNECTSTATE_CLASS:
        label = member.name[3:]
        out.setdefault(label, []).append("state: " + member.name)
        out.setdefault(label.lower(), []).append("state word: " + member.name)
    for code, text in sorted(wtsapi._ERROR_TEXT.items()):
        out.setdefault(text, []).append("wtsapi.py: error %d" % code)
    out.setdefault(wtsapi.error_text(0), []).append("wtsapi.py: error 0")
    return out


def all_messages():
    messages, _dynamic = extract()
    for msgid, refs in extra_messages().items():
        messages.setdefault(msgid, []).extend(refs)
    return messages


# --- .po files -----------------------------------------------------------------

class Entry:
    """One message of a .po file."""

    def __init__(self):
        self.comments = []        # translator comments, "# ..."
        self.auto = []            # "#. ..." and "#: ..." lines, as written
        self.flags = set()
        self.msgctxt = None
        self.msgid = None
        self.msgid_plural = None
        self.msgstr = None        # str, or {index: str} with a plural
        self.obsolete = False

    @property
    def fuzzy(self):
        return "fuzzy" in self.flags


def _unquote(text, where):
    text = text.strip()
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise ValueError("%s: expected a quoted string: %r" % (where, text))
    out, i, body = [], 0, text[1:-1]
    escapes = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\",
               "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
    while i < len(body):
        c = body[i]
        if c == '"':
            raise ValueError("%s: unescaped quote in %r" % (where, text))
        if c != "\\":
            out.append(c)
            i += 1
            continue
        nxt = body[i + 1:i + 2]
        if nxt in escapes:
            out.append(escapes[nxt])
            i += 2
        elif nxt in "01234567" and nxt:
            j = i + 1
            while j < len(body) and j < i + 4 and body[j] in "01234567":
                j += 1
            out.append(chr(int(body[i + 1:j], 8)))
            i = j
        else:
            raise ValueError("%s: unknown escape in %r" % (where, text))
    return "".join(out)


def parse_po(text, name="<po>"):
    """The entries of a .po file (UTF-8 text), in order."""
    entries, entry, field = [], Entry(), None

    def finish():
        nonlocal entry, field
        if entry.msgid is not None:
            if entry.msgstr is None:
                raise ValueError("%s: msgid %r has no msgstr" % (
                    name, entry.msgid))
            entries.append(entry)
        elif entry.msgctxt is not None or entry.msgstr is not None:
            raise ValueError("%s: an entry without msgid" % name)
        entry, field = Entry(), None

    for number, raw in enumerate(text.splitlines(), 1):
        where = "%s:%d" % (name, number)
        line = raw.strip()
        obsolete = line.startswith("#~")
        if obsolete:
            line = line[2:].strip()
            if entry.msgid is not None and not entry.obsolete and \
                    field != "prev":
                finish()
            entry.obsolete = True
        if not line:
            if not obsolete:
                finish()
            continue
        if line.startswith("#"):
            if field is not None and field.startswith("msgstr"):
                finish()
            if line.startswith("#,"):
                entry.flags.update(f.strip() for f in line[2:].split(",")
                                   if f.strip())
            elif line.startswith(("#.", "#:", "#|")):
                entry.auto.append(line)
            else:
                entry.comments.append(line[1:].strip())
            continue
        keyword, _sep, rest = line.partition(" ")
        if line.startswith('"'):
            if field is None:
                raise ValueError("%s: a string outside an entry" % where)
            value = _unquote(line, where)
            if field.startswith("msgstr["):
                index = int(field[7:-1])
                entry.msgstr[index] += value
            else:
                setattr(entry, field, getattr(entry, field) + value)
            continue
        if keyword in ("msgctxt", "msgid") and field is not None and \
                field.startswith("msgstr"):
            finish()
            entry.obsolete = obsolete
        if keyword in ("msgctxt", "msgid", "msgid_plural", "msgstr"):
            if getattr(entry, keyword) is not None:
                raise ValueError("%s: %s given twice" % (where, keyword))
            setattr(entry, keyword, _unquote(rest, where))
            field = keyword
        elif keyword.startswith("msgstr[") and keyword.endswith("]"):
            index = int(keyword[7:-1])
            if entry.msgstr is None:
                entry.msgstr = {}
            if not isinstance(entry.msgstr, dict) or index in entry.msgstr:
                raise ValueError("%s: bad %s" % (where, keyword))
            entry.msgstr[index] = _unquote(rest, where)
            field = keyword
        else:
            raise ValueError("%s: cannot read %r" % (where, raw))
    finish()
    return entries


def _quote(text):
    return '"%s"' % (text.replace("\\", "\\\\").replace('"', '\\"')
                     .replace("\t", "\\t").replace("\r", "\\r")
                     .replace("\n", "\\n"))


def _field(keyword, text, prefix=""):
    lines = text.splitlines(True)
    if len(lines) <= 1 and len(keyword) + len(text) < 70:
        return ["%s%s %s" % (prefix, keyword, _quote(text))]
    return ["%s%s \"\"" % (prefix, keyword)] + [
        prefix + _quote(line) for line in lines]


def format_po(entries):
    """.po text for ``entries`` (the inverse of parse_po)."""
    out = []
    for e in entries:
        prefix = "#~ " if e.obsolete else ""
        block = ["# " + c if c else "#" for c in e.comments]
        block += list(e.auto)
        if e.flags:
            block.append("#, " + ", ".join(sorted(e.flags)))
        if e.msgctxt is not None:
            block += _field("msgctxt", e.msgctxt, prefix)
        block += _field("msgid", e.msgid, prefix)
        if e.msgid_plural is not None:
            block += _field("msgid_plural", e.msgid_plural, prefix)
        if isinstance(e.msgstr, dict):
            for index in sorted(e.msgstr):
                block += _field("msgstr[%d]" % index, e.msgstr[index], prefix)
        else:
            block += _field("msgstr", e.msgstr, prefix)
        out.append("\n".join(block))
    return "\n\n".join(out) + "\n"


def headers(entries):
    """The header entry's fields, keys lower-cased."""
    for e in entries:
        if e.msgid == "" and e.msgctxt is None and not e.obsolete:
            text = e.msgstr if isinstance(e.msgstr, str) else ""
            fields = {}
            for line in text.splitlines():
                key, sep, value = line.partition(":")
                if sep:
                    fields[key.strip().lower()] = value.strip()
            return fields
    return {}


# --- .mo files -----------------------------------------------------------------

def compile_mo(entries):
    """The .mo bytes for ``entries``: what GNU msgfmt keeps (no fuzzy, no
    obsolete, no untranslated entries; the header always), encoded UTF-8."""
    pairs = {}
    for e in entries:
        if e.obsolete or (e.fuzzy and e.msgid != ""):
            continue
        if isinstance(e.msgstr, dict):
            strs = [e.msgstr[i] for i in sorted(e.msgstr)]
            if not any(strs):
                continue
            key = e.msgid + "\0" + (e.msgid_plural or "")
            value = "\0".join(strs)
        else:
            if not e.msgstr:
                continue
            key, value = e.msgid, e.msgstr
        if e.msgctxt is not None:
            key = e.msgctxt + "\x04" + key
        pairs[key.encode("utf-8")] = value.encode("utf-8")
    keys = sorted(pairs)
    ids = strs = b""
    offsets = []
    for k in keys:
        offsets.append((len(ids), len(k), len(strs), len(pairs[k])))
        ids += k + b"\0"
        strs += pairs[k] + b"\0"
    start = 7 * 4 + 16 * len(keys)          # the header, then both tables
    koffsets, voffsets = [], []
    for o1, l1, o2, l2 in offsets:
        koffsets += [l1, o1 + start]
        voffsets += [l2, o2 + start + len(ids)]
    output = struct.pack("<Iiiiiii", 0x950412de, 0, len(keys), 7 * 4,
                         7 * 4 + len(keys) * 8, 0, 0)
    output += struct.pack("<%di" % len(koffsets), *koffsets)
    output += struct.pack("<%di" % len(voffsets), *voffsets)
    return output + ids + strs


# --- The locale/ folder ----------------------------------------------------------

def po_files():
    """{language folder name: path of its logoff.po}."""
    out = {}
    for name in sorted(os.listdir(HERE)):
        path = os.path.join(HERE, name, "LC_MESSAGES", DOMAIN + ".po")
        if os.path.isfile(path):
            out[name] = path
    return out


def read_po(path):
    with open(path, encoding="utf-8") as f:
        return parse_po(f.read(), os.path.relpath(path, ROOT))


def _template(messages):
    header = Entry()
    header.msgid = ""
    header.msgstr = ("Project-Id-Version: logoff.py\n"
                     "Content-Type: text/plain; charset=UTF-8\n"
                     "Content-Transfer-Encoding: 8bit\n")
    out = [header]
    for msgid in sorted(messages):
        e = Entry()
        e.auto = ["#: " + r for r in messages[msgid]]
        if placeholders(msgid):
            e.flags.add("python-format")
        e.msgid, e.msgstr = msgid, ""
        out.append(e)
    return out


def merge(entries, messages):
    """``entries`` brought up to ``messages``: new ones added untranslated,
    references renewed, those no longer used made obsolete (#~)."""
    known = {e.msgid: e for e in entries if e.msgctxt is None}
    out = [e for e in entries if e.msgid == ""]
    for msgid in sorted(messages):
        e = known.get(msgid)
        if e is None:
            e = Entry()
            e.msgid, e.msgstr = msgid, ""
        e.obsolete = False
        e.auto = ["#: " + r for r in messages[msgid]]
        e.flags.discard("python-format")
        if placeholders(msgid):
            e.flags.add("python-format")
        out.append(e)
    for e in entries:
        if e.msgid != "" and e.msgid not in messages:
            e.obsolete = True
            e.auto = []
            out.append(e)
    return out


def problems(messages=None):
    """What --check reports: a list of lines (empty: all is well)."""
    messages = all_messages() if messages is None else messages
    out = []
    try:
        with open(os.path.join(HERE, DOMAIN + ".pot"), encoding="utf-8",
                  newline="") as f:
            if f.read() != format_po(_template(messages)):
                out.append("%s.pot is stale" % DOMAIN)
    except OSError:
        out.append("%s.pot is missing" % DOMAIN)
    for lang, path in po_files().items():
        entries = read_po(path)
        live = {e.msgid: e for e in entries if not e.obsolete}
        for msgid in sorted(messages):
            e = live.get(msgid)
            if e is None:
                out.append("%s: lacks %r" % (lang, msgid[:60]))
            elif not e.msgstr or e.fuzzy:
                out.append("%s: untranslated or fuzzy: %r" % (
                    lang, msgid[:60]))
        mo = os.path.join(os.path.dirname(path), DOMAIN + ".mo")
        try:
            with open(mo, "rb") as f:
                if f.read() != compile_mo(entries):
                    out.append("%s: %s is stale" % (lang, mo))
        except OSError:
            out.append("%s: %s is missing" % (lang, mo))
    return out


def build():
    messages = all_messages()
    with open(os.path.join(HERE, DOMAIN + ".pot"), "w", encoding="utf-8",
              newline="\n") as f:
        f.write(format_po(_template(messages)))
    for lang, path in po_files().items():
        entries = merge(read_po(path), messages)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(format_po(entries))
        mo = os.path.join(os.path.dirname(path), DOMAIN + ".mo")
        with open(mo, "wb") as f:
            f.write(compile_mo(entries))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv not in ([], ["--check"]):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    if not argv:
        build()
    found = problems()
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
