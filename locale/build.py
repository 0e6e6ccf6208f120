"""The translations' build, done by Babel: extract, update, compile.

    python3 locale/build.py           extract logoff.py's messages into
                                      locale/logoff.pot, update every
                                      locale/<lang>/LC_MESSAGES/logoff.po from
                                      it and compile each into logoff.mo
    python3 locale/build.py --check   change nothing; exit 1 if one of those
                                      files is not what the build writes (the
                                      references aside), or a message is
                                      untranslated or fuzzy

Babel (tests/requirements.txt) is a developer's tool: logoff.py reads the
.mo files with the standard library's gettext.  This script is Babel's
extract, update and compile with the project's options, plus what plain
``pybabel`` cannot do here:

* keywords: ``_()``, ``Text()``, ``Failure.about()`` and ``_sort_gone()``'s
  fourth argument (the last two put a message around a failure);
* English-only messages left out: those of the functions in ENGLISH_ONLY
  (the event log's sentences, rendered with ``.en()`` like /json and /log);
* messages that are not literals at the call: a module-level string passed
  by name (USAGE_BASIC, USAGE_MORE), the state words (table and sentence
  forms) and wtsapi.py's built-in English error texts (shown where the
  system has no text);
* the catalogue headers kept: Babel drops unknown ones, and logoff.py reads
  X-Windows-LANGID (the LANGID that system error texts are asked for in);
* stable output: references name the function, not the line, and the .pot
  keeps its date while its msgids stay the same, so the .mo files change
  only when a translation does (and --check ignores the references).

Update keeps translations, marks a changed message fuzzy with the old
translation of the message most like it (for the translator to adapt), adds
new ones untranslated and removes those no longer used.  ``pybabel update``
or ``pybabel compile`` run by hand would drop X-Windows-LANGID: use this.
"""

import ast
import datetime
import io
import os
import sys

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_file
from babel.messages.mofile import write_mo
from babel.messages.pofile import PoFileParser, write_po

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DOMAIN = "logoff"
SOURCE = os.path.join(ROOT, "logoff.py")
POT = os.path.join(HERE, DOMAIN + ".pot")
PROJECT = "logoff.py"
WIDTH = 76

# Babel's keywords: function name -> the (1-based) argument that is the
# message; None is the first.
KEYWORDS = {"_": None, "Text": None, "about": None, "_sort_gone": (4,)}
# Functions that render a message handed to them (so their call is not a
# literal), and those whose messages are only ever English (left out).
FORWARDERS = {"__str__", "state_text", "state_word", "about", "_sort_gone"}
ENGLISH_ONLY = {"_event_sentence"}
COMMENT_TAGS = ("Translators:",)
TEMPLATE_COMMENT = """\
# The messages of logoff.py: the template of every translation.
# Made by locale/build.py (Babel); never edited by hand."""


class LogoffCatalog(Catalog):
    """Babel's Catalog, keeping the X- headers that Babel would drop and
    writing Project-Id-Version as the project's name alone."""

    x_headers = ()

    def _get_headers(self):
        out = []
        for name, value in Catalog._get_mime_headers(self):
            if name == "Report-Msgid-Bugs-To":
                continue
            if name == "Project-Id-Version":
                value = PROJECT
            if name == "Generated-By":
                out.extend(self.x_headers)
            out.append((name, value))
        return out

    def _set_headers(self, headers):
        headers = list(headers)
        Catalog._set_mime_headers(self, headers)
        self.x_headers = [(n, v) for n, v in headers
                          if n.lower().startswith("x-")]

    mime_headers = property(_get_headers, _set_headers)


# --- Extract --------------------------------------------------------------

def _functions(tree):
    """[(first line, last line, name)] of every function, a method as
    Class.method, outermost first."""
    out = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((child.lineno, child.end_lineno,
                            prefix + child.name))
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)
    visit(tree, "")
    return sorted(out, key=lambda f: (f[0], -f[1]))


def _function_at(functions, lineno):
    """The innermost function around ``lineno`` (None: module level)."""
    name = None
    for first, last, function in functions:
        if first <= lineno <= last:
            name = function
    return name


def _english_only(function):
    return function is not None and \
        function.rsplit(".", 1)[-1] in ENGLISH_ONLY


def _keyword_index(name):
    spec = KEYWORDS.get(name, ())
    return (spec or (1,))[0] - 1


def calls(tree):
    """Every call of a keyword in ``tree``: [(node, function called, the
    message argument's node or None)]."""
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.id if isinstance(f, ast.Name) else \
            f.attr if isinstance(f, ast.Attribute) else None
        if name in KEYWORDS:
            i = _keyword_index(name)
            out.append((node, name, node.args[i] if len(node.args) > i
                        else None))
    return out


def literals(node):
    """The messages a call's argument can be, if it is made of literals: a
    string, a sum of strings, or a conditional between such; else []."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return literals(node.body) + literals(node.orelse)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = literals(node.left), literals(node.right)
        if len(left) == 1 and len(right) == 1:
            return [left[0] + right[0]]
    return []


def module_strings(tree):
    """{name: text} of the module-level names bound to a string literal."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Name) and \
                isinstance(node.value, ast.Constant) and \
                isinstance(node.value.value, str):
            out[node.targets[0].id] = node.value.value
    return out


def extra_messages():
    """[(msgid, file, comment)] for the messages that are not in logoff.py's
    source: the state words and wtsapi.py's built-in error texts."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import wtsapi
    out = []
    for member in wtsapi.WTS_CONNECTSTATE_CLASS:
        label = member.name[3:]
        out.append((label, "wtsapi.py", "state %s: the table's word (quser's)"
                    % member.name))
        out.append((label.lower(), "wtsapi.py",
                    "state %s: the word in a sentence" % member.name))
    for code, text in sorted(wtsapi._ERROR_TEXT.items()):
        out.append((text, "wtsapi.py", "built-in text of error %d" % code))
    out.append((wtsapi.error_text(0), "wtsapi.py", "built-in text of error 0"))
    return out


def extract(source=SOURCE):
    """The template: every message of ``source`` that the screen can show,
    as a catalogue without a locale.  Babel reads the calls; the syntax
    tree adds what Babel cannot read (a message chosen by a conditional
    expression, which Babel would read as the two strings joined, and a
    module-level string passed by name) and checks that Babel read nothing
    else."""
    with open(source, encoding="utf-8") as f:
        tree = ast.parse(f.read(), source)
    functions = _functions(tree)
    base = os.path.basename(source)
    names = module_strings(tree)
    known, by_tree = set(), []      # every literal message; the tree's own
    conditionals = []               # (first, last line) of such calls
    for node, _name, arg in calls(tree):
        texts = literals(arg)
        known.update(texts)
        where = _function_at(functions, node.lineno)
        if isinstance(arg, ast.IfExp):
            by_tree += [(text, where, None) for text in texts]
            conditionals.append((node.lineno, node.end_lineno))
        elif isinstance(arg, ast.Name) and arg.id in names:
            by_tree.append((names[arg.id], where, arg.id))
    found = {}                      # msgid -> ({where}, [comments])

    def add(msgid, where, comments=()):
        entry = found.setdefault(msgid, (set(), []))
        entry[0].add(where)
        entry[1].extend(c for c in comments if c not in entry[1])

    for lineno, msgid, comments, _context in extract_from_file(
            "python", source, KEYWORDS, COMMENT_TAGS,
            strip_comment_tags=True):
        function = _function_at(functions, lineno)
        if msgid not in known:
            if any(first <= lineno <= last for first, last in conditionals):
                continue            # a conditional's strings joined
            raise ValueError("%s:%d: Babel read %r, which is no message"
                             % (base, lineno, msgid[:60]))
        if not _english_only(function):
            add(msgid, (base, function), comments)
    for msgid, function, name in by_tree:
        if not _english_only(function):
            add(msgid, (base, function), [name] if name else [])
    for msgid, where, comment in extra_messages():
        add(msgid, (where, None), [comment])

    pot = LogoffCatalog(project=PROJECT, charset="utf-8",
                        header_comment=TEMPLATE_COMMENT)
    for msgid in sorted(found):
        where, comments = found[msgid]
        functions_in = sorted({"%s()" % f for _path, f in where if f} |
                              {"module level" for path, f in where
                               if f is None and path == base})
        pot.add(msgid, locations=[(f, None) for f in
                                  sorted({w[0] for w in where})],
                auto_comments=comments + (
                    ["in " + ", ".join(functions_in)] if functions_in
                    else []))
    return pot


# --- .po and .mo files ----------------------------------------------------

def po_files():
    """{language folder name: path of its logoff.po}."""
    out = {}
    for name in sorted(os.listdir(HERE)):
        path = os.path.join(HERE, name, "LC_MESSAGES", DOMAIN + ".po")
        if os.path.isfile(path):
            out[name] = path
    return out


def read_po(path, data=None):
    """A .po (or .pot) file as a catalogue, its X- headers kept."""
    if data is None:
        with open(path, "rb") as f:
            data = f.read()
    catalog = LogoffCatalog(charset="utf-8")
    PoFileParser(catalog, ignore_obsolete=True,
                 abort_invalid=True).parse(io.BytesIO(data))
    return catalog


def po_bytes(catalog):
    buf = io.BytesIO()
    write_po(buf, catalog, width=WIDTH, sort_output=True,
             ignore_obsolete=True, include_previous=False,
             include_lineno=False)
    return buf.getvalue()


def mo_bytes(catalog):
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    return buf.getvalue()


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _messages(catalog):
    return [m.id for m in catalog if m.id]


def _without_references(data):
    """A .po's bytes less its extracted comments and references (#. #:):
    code moving from one function to another is no reason to rebuild."""
    return b"".join(line for line in io.BytesIO(data)
                    if not line.startswith((b"#.", b"#:")))


def template():
    """The template, dated as the committed .pot while its msgids are the
    same (so that the .mo files change only when a translation does)."""
    pot = extract()
    old = _read(POT)
    if old is not None:
        before = read_po(POT, old)
        if _messages(before) == _messages(pot):
            pot.creation_date = before.creation_date
            return pot
    pot.creation_date = datetime.datetime.now(datetime.timezone.utc).replace(
        second=0, microsecond=0)
    return pot


def updated(path, pot):
    """``path``'s catalogue brought up to ``pot``."""
    catalog = read_po(path)
    catalog.update(pot, update_header_comment=False)
    return catalog


def problems(catalog):
    """What a translator still has to do in ``catalog``: [line]."""
    out = ["the header is fuzzy"] if catalog.fuzzy else []
    for m in catalog:
        if not m.id:
            continue
        short = m.id[:60].replace("\n", " ")
        if not m.string:
            out.append("untranslated: %r" % short)
        elif m.fuzzy:
            out.append("fuzzy: %r" % short)
    for m, errors in catalog.check():
        for e in errors if m.string else ():
            out.append("%r: %s" % (m.id[:60], e))
    return out


def build(check=False):
    """Write (or, with ``check``, compare) the .pot, every .po and .mo;
    returns the problems found, one line each."""
    pot = template()
    found = []
    outputs = [(POT, po_bytes(pot))]
    for lang, path in po_files().items():
        catalog = updated(path, pot)
        found += ["%s: %s" % (lang, p) for p in problems(catalog)]
        outputs.append((path, po_bytes(catalog)))
        outputs.append((os.path.join(os.path.dirname(path), DOMAIN + ".mo"),
                        mo_bytes(catalog)))
    for path, data in outputs:
        old = _read(path)
        if old == data or check and old is not None and \
                path.endswith((".po", ".pot")) and \
                _without_references(old) == _without_references(data):
            continue
        rel = os.path.relpath(path, ROOT)
        if check:
            found.append("%s is not what locale/build.py writes" % rel)
        else:
            with open(path, "wb") as f:
                f.write(data)
            print("wrote %s" % rel)
    return found


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv not in ([], ["--check"]):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    found = build(check=bool(argv))
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
