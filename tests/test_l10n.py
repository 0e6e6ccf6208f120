"""Languages: English, Simplified Chinese (zh_CN) and Japanese (ja).

The catalogues (locale/<lang>/LC_MESSAGES/logoff.po, and the .mo that
locale/build.py compiles from it with Babel) against logoff.py's messages;
each translation against its message (placeholders, terms, code pages); how
the language is chosen and where a catalogue may be read from; the screen
in each language against the test double; /json and /log the same bytes in
every language; a copied folder, the installed wheel and, under Wine,
genuine Windows CPython choosing the language from the Windows display
language.

The tests that run Babel (tests/requirements.txt) need it everywhere but in
the Windows leg, which installs only pytest: there they skip, and the host's
run has checked the same files.  Every other test reads the committed .mo
files with the standard library's gettext, as logoff.py does.
"""

import ast
import gettext
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

import farm as farmlib
import logoff
import wtsapi
from farm import ACTIVE, DISCONNECTED, CLOCK, HOUR, standard_farm
from helpers import (DIST, ROOT, WHEEL_EXTRA, WINDOWS, clean_env,
                     reference_farm, run_cmd)

LOCALE = os.path.join(ROOT, "locale")
LANGS = ("zh_CN", "ja")
TAG = {"zh_CN": "zh-CN", "ja": "ja-JP"}
# The code pages those systems write redirected output in.
CODEPAGE = {"zh_CN": "gbk", "ja": "cp932"}
LANGID = {"zh_CN": 0x0804, "ja": 0x0411}

try:
    import babel  # noqa: F401
except ImportError:
    babel = None

needs_babel = pytest.mark.skipif(
    WINDOWS and babel is None,
    reason="Babel (the catalogue tooling) is not in the Windows leg; the "
    "host's run checks the same catalogues")

# A Python %-placeholder, as the % operator reads one: %(name)s, %d, %r,
# %%.  FormatMessage's inserts (%1, %2 in a system text) are not: they are
# never %-formatted, and are kept as they are.
PLACEHOLDER = re.compile(
    r"%(?:\((\w+)\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[diouxXeEfFgGcrsa%]")
INSERT = re.compile(r"%\d")


def placeholders(text):
    """(named, positional): the named placeholders sorted (a translation may
    put them in any order), the positional ones in order; %% left out."""
    named, positional = [], []
    for m in PLACEHOLDER.finditer(text):
        if m.group(0) == "%%":
            continue
        (named if m.group(1) else positional).append(m.group(0))
    return sorted(named), positional


def _build():
    """locale/build.py, imported (it imports Babel)."""
    name = "logoff_locale_build"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, os.path.join(LOCALE, "build.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name]


def messages():
    """The msgids that Babel extracts from logoff.py now (with build.py's
    options), as a set."""
    return {m.id for m in _build().extract() if m.id}


def po_path(lang):
    return os.path.join(LOCALE, lang, "LC_MESSAGES", "logoff.po")


def mo_path(lang):
    return os.path.join(LOCALE, lang, "LC_MESSAGES", "logoff.mo")


def catalogue(lang):
    with open(mo_path(lang), "rb") as f:
        return gettext.GNUTranslations(f)


def live(lang):
    """{msgid: translation} of the committed .mo (the .po compiled: the
    tests below check that it is)."""
    return {k: v for k, v in catalogue(lang)._catalog.items() if k}


def tr(lang, msgid):
    return catalogue(lang).gettext(msgid)


def prog():
    """The command's name in the help, as the in-process runs show it."""
    return logoff._prog()


# ... and as a script run from its folder shows it.
SCRIPT_PROG = ("py" if WINDOWS else "python3") + " logoff.py"


def help_text(lang, name):
    """The whole help (/?) in ``lang`` (None: English), the command shown
    as ``name``."""
    basic, more = logoff.USAGE_BASIC, logoff.USAGE_MORE
    if lang is not None:
        basic, more = tr(lang, basic), tr(lang, more)
    return basic % {"prog": name} + more % {}


@pytest.fixture(autouse=True)
def english_afterwards(monkeypatch):
    """Every test starts with no language asked for, and leaves logoff in
    English for the tests after it."""
    for name in ("LOGOFF_LANG", "LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(name, raising=False)
    yield
    logoff._translations = None
    logoff._langid = logoff.LANG_ENGLISH
    logoff._fitting.clear()


@pytest.fixture
def lang(monkeypatch):
    """``lang("ja")`` makes the next runs speak Japanese."""
    def _set(name):
        monkeypatch.setenv("LOGOFF_LANG", TAG.get(name, name))
    return _set


# --- The catalogues against the source (Babel) -------------------------------

@needs_babel
def test_build_check_passes():
    """`python3 locale/build.py --check`: the .pot, every .po and .mo are what
    the build writes from logoff.py now, and every message is translated
    (after a change of messages: run `python3 locale/build.py`, translate)."""
    assert _build().build(check=True) == []
    p = subprocess.run([sys.executable, os.path.join(LOCALE, "build.py"),
                        "--check"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                       timeout=120)
    assert (p.returncode, p.stderr) == (0, b"")


@needs_babel
@pytest.mark.parametrize("name", LANGS)
def test_po_holds_exactly_the_source_messages(name, tmp_path):
    """Extract to a fresh .pot with Babel and compare: a message added to
    logoff.py and not to the .po, or one gone from logoff.py and still in
    it, fails here.  Nothing untranslated, fuzzy or obsolete is left."""
    from babel.messages.pofile import read_po, write_po
    pot = tmp_path / "logoff.pot"
    with open(str(pot), "wb") as f:
        write_po(f, _build().extract())
    with open(str(pot), "rb") as f:
        source = {m.id for m in read_po(f) if m.id}
    with open(po_path(name), "rb") as f:
        po = read_po(f)
    assert {m.id for m in po if m.id} == source
    assert not po.obsolete, list(po.obsolete)
    assert [m.id for m in po if m.id and (m.fuzzy or not m.string)] == []
    assert source == set(live(name))


@needs_babel
@pytest.mark.parametrize("name", LANGS)
def test_mo_is_its_po_compiled(name, tmp_path):
    """The committed .mo is the .po compiled by Babel, byte for byte, and
    gettext reads from it exactly the .po's translations and headers."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po
    build = _build()
    out = tmp_path / "logoff.mo"
    with open(str(out), "wb") as f:
        write_mo(f, build.read_po(po_path(name)))
    with open(mo_path(name), "rb") as f:
        assert f.read() == out.read_bytes()
    with open(po_path(name), "rb") as f:
        po = read_po(f)
    assert live(name) == {m.id: m.string for m in po
                          if m.id and m.string and not m.fuzzy}
    with open(po_path(name), encoding="utf-8") as f:
        text = f.read()
    assert '"X-Windows-LANGID: 0x%04X\\n"' % LANGID[name] in text


@needs_babel
def test_the_build_keeps_the_headers_logoff_reads(tmp_path):
    """Babel drops headers it does not know; the build keeps them: update
    and compile a catalogue with X-Windows-LANGID, and gettext reads it."""
    build = _build()
    po = tmp_path / "logoff.po"
    with open(po_path("ja"), "rb") as f:
        po.write_bytes(f.read())
    catalog = build.updated(str(po), build.extract())
    data = build.mo_bytes(catalog)
    info = gettext.GNUTranslations(io.BytesIO(data)).info()
    assert int(info["x-windows-langid"], 16) == 0x0411
    assert b"X-Windows-LANGID: 0x0411" in build.po_bytes(catalog)


@needs_babel
def test_extraction_matches_the_syntax_tree():
    """An independent count: the string literals that are the message of
    a keyword's call (a conditional's both strings), the module-level
    texts passed by name (the help), the state words and the built-in error
    texts, less the English-only functions' messages: exactly what Babel
    extracts."""
    build = _build()
    with open(logoff.__file__, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and \
                node.name in build.ENGLISH_ONLY:
            skipped.update(id(n) for n in ast.walk(node))
    names = build.module_strings(tree)
    found, english = set(), set()
    for node, _name, arg in build.calls(tree):
        texts = build.literals(arg)
        if isinstance(arg, ast.Name) and arg.id in names:
            texts = [names[arg.id]]
        (english if id(node) in skipped else found).update(texts)
    extras = {text for text, _file, _comment in build.extra_messages()}
    assert messages() == found | extras
    assert logoff.USAGE_BASIC in found and logoff.USAGE_MORE in found
    assert "Type %(prog)s /? for every switch." in found
    # The event log's sentences are English only, as /log is.
    assert english - found and not (english - found) & messages()


@needs_babel
def test_no_message_escapes_extraction():
    """A keyword's call whose message is computed is one of the few that
    render a message handed to them (FORWARDERS); any other must be a
    literal (or a conditional between literals, or a module-level text),
    or the catalogues would miss it."""
    build = _build()
    with open(logoff.__file__, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    functions = build._functions(tree)
    names = build.module_strings(tree)
    computed = []
    for node, name, arg in build.calls(tree):
        if build.literals(arg) or isinstance(arg, ast.Name) and \
                arg.id in names:
            continue
        where = build._function_at(functions, node.lineno) or ""
        function = where.rsplit(".", 1)[-1]
        if function not in build.FORWARDERS | build.ENGLISH_ONLY:
            computed.append((where, node.lineno, name))
    assert computed == []
    # Each forwarder's own callers pass literals: they are keywords.
    assert {"about", "_sort_gone"} <= set(build.KEYWORDS)


@needs_babel
def test_built_in_error_texts_and_state_words_are_messages():
    found = messages()
    for text in wtsapi._ERROR_TEXT.values():
        assert text in found
    assert wtsapi.error_text(0) in found
    assert "Unknown error %d." in found
    for member in wtsapi.WTS_CONNECTSTATE_CLASS:
        assert logoff.state_label(member) in found
        assert logoff.state_label(member).lower() in found


@pytest.mark.skipif(not shutil.which("msgfmt"), reason="no GNU msgfmt here")
@pytest.mark.parametrize("name", LANGS)
def test_gnu_msgfmt_agrees(name, tmp_path):
    """GNU msgfmt --check (which also checks python-format placeholders)
    accepts each .po, and compiles the same translations as Babel did."""
    out = tmp_path / "gnu.mo"
    p = subprocess.run(["msgfmt", "--check", "-o", str(out), po_path(name)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.returncode == 0, p.stderr.decode("utf-8", "replace")
    with open(str(out), "rb") as f:
        gnu = gettext.GNUTranslations(f)
    ours = catalogue(name)
    assert {k: v for k, v in gnu._catalog.items() if k} == live(name)
    # GNU leaves POT-Creation-Date out of a .mo; the rest is the same.
    assert gnu.info() == {k: v for k, v in ours.info().items()
                          if k != "pot-creation-date"}


# --- Each translation against its message ------------------------------------

def _dummy(placeholder):
    kind = placeholder[-1]
    return 7 if kind in "diouxXc" else 1.5 if kind in "eEfFgG" else "x"


@pytest.mark.parametrize("name", LANGS)
def test_placeholders_match_and_format(name):
    """The same placeholders as the English (named ones in any order,
    positional ones in order), so that no translation can make a run fail;
    FormatMessage inserts (%1) are kept as they are."""
    for msgid, msgstr in live(name).items():
        assert placeholders(msgstr) == placeholders(msgid), msgid
        assert sorted(INSERT.findall(msgstr)) == sorted(
            INSERT.findall(msgid)), msgid
        if msgid in wtsapi._ERROR_TEXT.values():
            continue                  # shown as they are, never %-formatted
        named, positional = placeholders(msgid)
        if named:
            args = {PLACEHOLDER.match(p).group(1): _dummy(p) for p in named}
            assert msgstr % args and msgid % args
        elif positional:
            args = tuple(_dummy(p) for p in positional)
            assert msgstr % args and msgid % args


def test_the_placeholder_check_catches_a_mismatch():
    """What the test above compares, on made-up pairs."""
    assert placeholders("%(b)s then %(a)d") == placeholders("%(a)d; %(b)s")
    for good, bad in (("%(who)s.", "%(whom)s。"), ("%(n)d left", "%(n)s"),
                      ("%d of %s", "%s of %d"), ("%(why)s", "why"),
                      ("Unknown error %d.", "エラー")):
        assert placeholders(good) != placeholders(bad), (good, bad)
    assert placeholders("100%% done") == ([], [])


@pytest.mark.parametrize("name", LANGS)
def test_the_runtime_uses_every_translation(lang, name):
    """logoff._() shows each translation (it falls back to English only
    where placeholders do not fit, and none of ours misfits)."""
    lang(name)
    logoff.set_language()
    unused = {msgid for msgid, msgstr in live(name).items()
              if logoff._(msgid) != msgstr}
    assert unused == set(), unused


class _Table(gettext.NullTranslations):
    """A catalogue made of a dict (a translation with a wrong placeholder
    cannot be compiled by the build: GNU msgfmt and the tests refuse it)."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def gettext(self, message):
        return self.table.get(message, message)


def _with_table(monkeypatch, table):
    monkeypatch.setattr(logoff, "_translations", _Table(table))
    logoff._fitting.clear()


def test_a_wrong_placeholder_falls_back_to_english(monkeypatch):
    """A translation whose placeholders do not fit its message is never
    used: that message is English, with no error; the others are still
    translated."""
    _with_table(monkeypatch, {
        "Logging off %(who)s.": "%(whom)s をログオフしています。",
        "Unknown error %d.": "不明なエラー。",
        "session %(id)d (%(what)s) on %(server)s": "%(id)s %(server)s",
        "the session has ended": "セッションは終了しました",
        "Warning %(who)s.": "%(who)s に警告しています。"})
    assert str(logoff.Text("Logging off %(who)s.", who="x")) == \
        "Logging off x."
    assert logoff._("Unknown error %d.") % 5 == "Unknown error 5."
    assert str(logoff.Text("session %(id)d (%(what)s) on %(server)s", id=3,
                           what="w", server="s")) == "session 3 (w) on s"
    assert str(logoff.Text("the session has ended")) == "セッションは終了しました"
    assert str(logoff.Text("Warning %(who)s.", who="x")) == "x に警告しています。"


def test_named_placeholders_may_change_places(monkeypatch):
    _with_table(monkeypatch, {
        "could not log off %(who)s: %(why)s":
            "%(why)s のため %(who)s をログオフできませんでした"})
    assert str(logoff.Text("could not log off %(who)s: %(why)s", who="A",
                           why="B")) == "B のため A をログオフできませんでした"


@pytest.mark.parametrize("name", LANGS)
def test_a_wrong_placeholder_in_a_real_catalogue_runs_in_english(
        cli, load, lang, name, tmp_path, monkeypatch):
    """End to end: a catalogue beside logoff.py whose "Invalid
    parameter(s)" line has a wrong placeholder: that line is English, the
    rest of the run in the language, exit 1 as always, no traceback."""
    data = bytearray(open(mo_path(name), "rb").read())
    want = tr(name, "Invalid parameter(s): %(why)s").encode("utf-8")
    i = data.find(want)
    assert i > 0
    bad = want.replace(b"%(why)s", b"%(who)s")
    data[i:i + len(want)] = bad                    # same length
    folder = tmp_path / "locale" / name / "LC_MESSAGES"
    folder.mkdir(parents=True)
    (folder / "logoff.mo").write_bytes(bytes(data))
    monkeypatch.setattr(logoff, "_locale_dirs",
                        lambda: [str(tmp_path / "locale")])
    load(reference_farm())
    lang(name)
    r = cli("3", "4")
    assert r.code == 1 and r.out == ""
    assert r.err.startswith("Invalid parameter(s): %s\n" % tr(
        name, "more than one session given")), r.err
    assert "Traceback" not in r.err


@pytest.mark.parametrize("name", LANGS)
def test_every_translation_encodes_in_its_code_page(name):
    """gbk (936) for Chinese, cp932 for Japanese: redirected output there
    is in that code page; cp932 has no Simplified-only hanzi (销, 话)."""
    for msgid, msgstr in live(name).items():
        msgstr.encode(CODEPAGE[name])
    catalogue(name)._catalog[""].encode("ascii")


@pytest.mark.parametrize("name", LANGS)
def test_names_are_never_translated(name):
    """Switches, the command name and (error N) stay as they are."""
    for msgid, msgstr in live(name).items():
        for switch in re.findall(r"(?<![\w\\])/[A-Za-z?]+", msgid):
            assert switch in msgstr, (msgid, switch)
        for word in ("%(prog)s", "logoff:", "logoff.exe", "(error",
                     "DOMAIN\\name", "PyLogoff", "TermService",
                     "AllowRemoteRPC", "RDP-Tcp", "stdout", "JSON", "NUL",
                     "Windows"):
            if word in msgid:
                assert word in msgstr, (msgid, word)


def _plain(msgid):
    """The words of a message: switches and placeholders taken out."""
    text = PLACEHOLDER.sub(" ", msgid)
    text = re.sub(r"^logoff: ", " ", text)            # the command
    text = re.sub(r"HKLM\\[^)]*", " ", text)          # a registry path
    return re.sub(r"(?<![\w\\])/[A-Za-z?]+(:\S*)?", " ", text).lower()

TERMS = [  # English word, zh-CN term, ja term (Microsoft's)
    (r"\blog(?:ging|ged)? (?:it |them |users |a user )?off\b|\blogoff\b",
     "注销", "ログオフ"),
    (r"\bsessions?\b|sessionname|session\(s\)", "会话", "セッション"),
    (r"\bservers?\b(?! name)", "服务器", "サーバー"),
    (r"\bfull control\b", "完全控制", "フル コントロール"),
    (r"\bremote desktop services\b", "远程桌面服务",
     "リモート デスクトップ サービス"),
    (r"\busername\b|\buser name\b", "用户名", "ユーザー名"),
]


@pytest.mark.parametrize("name", LANGS)
def test_microsoft_terminology(name):
    column = 1 if name == "zh_CN" else 2
    for msgid, msgstr in live(name).items():
        plain = _plain(msgid)
        for term in TERMS:
            if re.search(term[0], plain) and "logoff.exe" not in plain:
                assert term[column] in msgstr, (msgid, term[column])
    text = "".join(live(name).values())
    if name == "zh_CN":
        text = text.replace("退出代码", "")      # exit code: Microsoft's term
        for slip in ("登出", "退出", "隐藏", "工作階段", "使用者", "伺服器",
                     "帳戶"):
            assert slip not in text, slip
        assert "远程桌面会话主机服务器" in live(name)[logoff.USAGE_BASIC]
    else:
        # Microsoft's Japanese spaces katakana compounds.
        for unspaced in ("リモートデスクトップ", "セッションホスト",
                         "フルコントロール", "イベントログ", "ログファイル",
                         "リスナーセッション", "コンソールセッション",
                         "サインアウト"):
            assert unspaced not in text, unspaced
        assert "リモート デスクトップ セッション ホスト サーバー" in \
            live(name)[logoff.USAGE_BASIC]


def test_query_words_are_those_of_quser():
    """zh-CN quser: 运行中 / 断开 / 已连接 / 侦听, and its headers; ja-JP
    `query session` keeps the English state words."""
    zh, ja = live("zh_CN"), live("ja")
    assert [zh[w] for w in ("Active", "Disconnected", "Connected", "Listen",
                            "Shadow")] == ["运行中", "断开", "已连接", "侦听",
                                           "影子"]
    assert [zh[h] for h in ("USERNAME", "SESSIONNAME", "ID", "STATE",
                            "IDLE TIME", "LOGON TIME")] == [
        "用户名", "会话名", "ID", "状态", "空闲时间", "登录时间"]
    for member in wtsapi.WTS_CONNECTSTATE_CLASS:
        label = logoff.state_label(member)
        assert ja[label] == label
    assert [ja[h] for h in ("SESSIONNAME", "USERNAME", "ID", "STATE")] == [
        "セッション名", "ユーザー名", "ID", "状態"]


@pytest.mark.parametrize("name", LANGS)
def test_help_fits_the_console(name):
    from unicodedata import east_asian_width
    for msgid in (logoff.USAGE_BASIC, logoff.USAGE_MORE):
        text = live(name)[msgid]
        if msgid == logoff.USAGE_BASIC:     # as the longest name shows it
            text = text % {"prog": "python3 -m logoff"}
            msgid = msgid % {"prog": "python3 -m logoff"}
        assert text.endswith("\n") and text.count("\n") >= 4
        for line in text.splitlines():
            width = sum(2 if east_asian_width(c) in "WF" else 1 for c in line)
            assert width <= 79, line
        # The switch column is where the English has it.
        for line in msgid.splitlines():
            if line.startswith("  /") and len(line) > 22 and line[20] == " ":
                assert line[:22] in text, line


@pytest.mark.parametrize("name", LANGS)
def test_headers(name):
    info = catalogue(name).info()
    assert int(info["x-windows-langid"], 16) == LANGID[name]
    assert info["language"] == name
    assert "charset=utf-8" in info["content-type"].lower()
    assert info["plural-forms"].startswith("nplurals=1;")




# --- Choosing the language ---------------------------------------------------

@pytest.mark.parametrize("tag, names", [
    ("ja-JP", ["ja_JP", "ja"]), ("ja", ["ja"]), ("ja_JP.UTF-8", ["ja_JP", "ja"]),
    ("zh-CN", ["zh_CN", "zh"]), ("zh_CN.GB2312", ["zh_CN", "zh"]),
    ("zh-SG", ["zh_SG", "zh_CN", "zh"]),
    ("zh-Hans-CN", ["zh_CN", "zh_Hans", "zh_CN", "zh"]),
    ("zh-TW", ["zh_TW", "zh"]), ("zh-Hant-HK", ["zh_HK", "zh_Hant", "zh"]),
    ("en", None), ("en-US", None), ("en_GB.UTF-8", None), ("C", None),
    ("C.UTF-8", None), ("POSIX", None), ("", []), ("../../etc", []),
    ("fr_FR@euro", ["fr_FR", "fr"]),
])
def test_catalogue_names(tag, names):
    assert logoff._catalogue_names(tag) == names


def _chosen(tags):
    cat = logoff.find_catalogue(tags)
    if cat is None:
        return "en"
    return cat.info()["language"]


@pytest.mark.parametrize("tags, chosen", [
    (["ja-JP"], "ja"), (["ja"], "ja"), (["zh-CN"], "zh_CN"),
    (["zh-SG"], "zh_CN"), (["zh-Hans"], "zh_CN"),
    # Traditional Chinese is another language: English, never zh-CN.
    (["zh-TW"], "en"), (["zh-HK"], "en"), (["zh-MO"], "en"),
    (["zh-Hant-TW"], "en"), (["zh"], "en"),
    # The first language that is English or ours wins (MUI and gettext).
    (["en-US", "ja-JP"], "en"), (["fr-FR", "ja-JP"], "ja"),
    (["zh-TW", "zh-CN"], "zh_CN"), (["de-DE"], "en"), ([], "en"),
    (["C", "ja"], "en"),
])
def test_which_catalogue(tags, chosen):
    assert _chosen(tags) == chosen


def test_windows_langids():
    """The LANGIDs GetUserDefaultUILanguage reports, by wtsapi's names:
    0x0804 and 0x1004 read Simplified Chinese, 0x0411 Japanese, the
    Traditional ones (0x0404, 0x0C04, 0x1404) English."""
    names = wtsapi._LANGUAGE_NAMES
    want = {0x0409: "en", 0x0411: "ja", 0x0804: "zh_CN", 0x1004: "zh_CN",
            0x0404: "en", 0x0C04: "en", 0x1404: "en"}
    assert {i: _chosen([names[i]]) for i in want} == want


def test_logoff_lang_comes_first(monkeypatch):
    monkeypatch.setenv("LANGUAGE", "zh_CN")
    monkeypatch.setenv("LOGOFF_LANG", "ja-JP")
    assert logoff._requested_languages() == ["ja-JP"]
    monkeypatch.setenv("LOGOFF_LANG", "en")
    logoff.set_language()
    assert logoff._translations is None
    assert logoff._langid == logoff.LANG_ENGLISH
    monkeypatch.setenv("LOGOFF_LANG", "xx-YY")       # none of ours: English
    logoff.set_language()
    assert logoff._translations is None


@pytest.mark.skipif(WINDOWS, reason="the POSIX variables, off Windows")
@pytest.mark.parametrize("env, want", [
    ({"LANG": "ja_JP.UTF-8"}, ["ja_JP.UTF-8"]),
    ({"LANG": "ja_JP.UTF-8", "LC_MESSAGES": "zh_CN.UTF-8"}, ["zh_CN.UTF-8"]),
    ({"LC_MESSAGES": "zh_CN.UTF-8", "LC_ALL": "C"}, ["C"]),
    ({"LC_ALL": "C", "LANGUAGE": "ja:zh_CN"}, ["ja", "zh_CN"]),
    ({"LANG": ""}, []),
])
def test_gettext_order_off_windows(monkeypatch, env, want):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert logoff._requested_languages() == want


def test_on_windows_the_display_language_not_posix_variables(monkeypatch):
    """On Windows the POSIX variables are never read: the display language
    is what wtsapi.ui_languages() reports."""
    monkeypatch.setenv("LANGUAGE", "ja")
    monkeypatch.setenv("LANG", "ja_JP.UTF-8")
    if WINDOWS:
        assert logoff._requested_languages() == wtsapi.ui_languages()
    monkeypatch.setattr(wtsapi, "ui_languages", lambda: ["zh-CN", "en-US"])
    monkeypatch.setattr(sys, "platform", "win32")
    try:
        got = logoff._requested_languages()
    finally:
        monkeypatch.undo()
    assert got == ["zh-CN", "en-US"]


@pytest.mark.parametrize("name", LANGS)
def test_system_texts_are_asked_for_in_the_same_language(lang, name):
    lang(name)
    logoff.set_language()
    assert logoff._langid == LANGID[name]
    assert logoff._translations.info()["language"] == name


# --- Where a catalogue may be read from, and what is read --------------------

def _plant(folder, name="ja", data=None):
    """A catalogue (the real ja one unless ``data``) at
    folder/<name>/LC_MESSAGES/logoff.mo; returns its path."""
    if data is None:
        with open(mo_path("ja"), "rb") as f:
            data = f.read()
    target = Path(str(folder)) / name / "LC_MESSAGES"
    target.mkdir(parents=True, exist_ok=True)
    (target / "logoff.mo").write_bytes(data)
    return target / "logoff.mo"


def _broken(tmp_path, monkeypatch, cases):
    with open(mo_path("ja"), "rb") as f:
        real = f.read()
    monkeypatch.setattr(logoff, "_locale_dirs",
                        lambda: [str(tmp_path / "locale")])
    for data in cases(real):
        _plant(tmp_path / "locale", data=data)
        assert logoff.find_catalogue(["ja-JP"]) is None, data[:8]
    _plant(tmp_path / "locale", data=real)
    assert logoff.find_catalogue(["ja-JP"]).info()["language"] == "ja"


def test_a_broken_catalogue_means_english(tmp_path, monkeypatch):
    _broken(tmp_path, monkeypatch, lambda real: (
        b"not a catalogue", real[:len(real) // 2],
        real[:28] + b"\xff" * 16 + real[44:]))


def test_an_empty_or_truncated_catalogue_means_english(tmp_path, monkeypatch):
    """gettext raises struct.error (neither OSError nor ValueError) for a
    catalogue shorter than its header: English all the same."""
    _broken(tmp_path, monkeypatch, lambda real: (
        b"", real[:3], real[:4], real[:40]))


def test_catalogues_are_read_only_beside_logoff_and_in_the_data_folder():
    """_locale_dirs(): locale/ beside logoff.py, then share/logoff-py/locale
    under install schemes' data folders; never a parent folder, the
    current folder or a variable's path."""
    dirs = logoff._locale_dirs()
    assert dirs[0] == os.path.join(os.path.dirname(os.path.abspath(
        logoff.__file__)), "locale")
    tail = os.path.join("share", "logoff-py", "locale")
    assert all(d.endswith(tail) for d in dirs[1:]), dirs
    here = os.path.dirname(os.path.abspath(logoff.__file__))
    for d in dirs:
        assert not here.startswith(os.path.dirname(d) + os.sep), d


def _run_copy(tools, tmp_path, *args, env=None):
    env = dict(os.environ, PYTHONIOENCODING="utf-8", **(env or {}))
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        env.pop(name, None)
    return farmlib.run_child([sys.executable, str(tools / "logoff.py")] +
                             list(args), cwd=str(tmp_path / "cwd"), env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, timeout=60)


def test_a_catalogue_in_a_parent_folder_is_never_read(tmp_path):
    """A copy of logoff.py with no locale/ of its own: catalogues planted in
    every parent folder, in the current folder and beside the script (not
    under locale/) are all ignored: the run is English."""
    tools = tmp_path / "a" / "b" / "tools"
    tools.mkdir(parents=True)
    (tmp_path / "cwd").mkdir()
    for name in ("logoff.py", "wtsapi.py"):
        _copy(os.path.join(ROOT, name), str(tools / name))
    for folder in (tmp_path / "locale", tmp_path / "a" / "locale",
                   tmp_path / "a" / "b" / "locale", tmp_path / "cwd" /
                   "locale", tmp_path / "cwd", tools, tmp_path):
        _plant(folder)
    r = _run_copy(tools, tmp_path, "/?", env={"LOGOFF_LANG": "ja-JP"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode("utf-8").startswith("Logs off a user")
    # The same copy with its own locale/ speaks Japanese.
    _plant(tools / "locale")
    r = _run_copy(tools, tmp_path, "/?", env={"LOGOFF_LANG": "ja-JP"})
    assert "ログオフ" in r.stdout.decode("utf-8")


def _within(seconds, fn, *args):
    """fn(*args) on a thread; its result, or a failure if it hangs."""
    box = []
    t = threading.Thread(target=lambda: box.append(fn(*args)), daemon=True)
    t.start()
    t.join(seconds)
    assert box, "%s hung" % fn.__name__
    return box[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_never_read(tmp_path, monkeypatch):
    """A FIFO where a catalogue would be (no writer: open() or read() on
    it would wait for ever) is passed over at once: English."""
    folder = tmp_path / "locale" / "ja" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    fifo = folder / "logoff.mo"
    os.mkfifo(str(fifo))
    assert _within(10, logoff._read_catalogue, str(fifo)) is None
    monkeypatch.setattr(logoff, "_locale_dirs",
                        lambda: [str(tmp_path / "locale")])
    assert _within(10, logoff.find_catalogue, ["ja-JP"]) is None


def test_a_catalogue_over_1_mib_is_never_read(tmp_path, monkeypatch):
    """The real catalogue padded past MAX_CATALOGUE (1 MiB) is not ours and
    is not read; padded to exactly 1 MiB it is."""
    with open(mo_path("ja"), "rb") as f:
        real = f.read()
    assert logoff.MAX_CATALOGUE == 1 << 20
    monkeypatch.setattr(logoff, "_locale_dirs",
                        lambda: [str(tmp_path / "locale")])
    path = _plant(tmp_path / "locale",
                  data=real + b"\0" * (logoff.MAX_CATALOGUE + 1 - len(real)))
    assert logoff._read_catalogue(str(path)) is None
    assert logoff.find_catalogue(["ja-JP"]) is None
    path.write_bytes(real + b"\0" * (logoff.MAX_CATALOGUE - len(real)))
    assert len(logoff._read_catalogue(str(path))) == logoff.MAX_CATALOGUE
    assert logoff.find_catalogue(["ja-JP"]).info()["language"] == "ja"


def test_a_folder_is_never_read(tmp_path, monkeypatch):
    monkeypatch.setattr(logoff, "_locale_dirs",
                        lambda: [str(tmp_path / "locale")])
    (tmp_path / "locale" / "ja" / "LC_MESSAGES" / "logoff.mo").mkdir(
        parents=True)
    assert logoff._read_catalogue(str(
        tmp_path / "locale" / "ja" / "LC_MESSAGES" / "logoff.mo")) is None
    assert logoff.find_catalogue(["ja-JP"]) is None


@pytest.mark.parametrize("tag, reads", [
    ("../../x", False), ("..", False), ("../ja", False),
    ("ja/../../x", False), ("/etc/ja", False), ("C:\\ja", False),
    ("\\\\server\\share\\ja", False), ("~", False), ("%2e%2e/ja", False),
    ("ja\\..\\..\\x", False),
    # Junk after a language is dropped: only our own folders are read.
    ("ja-JP/../..", True), ("ja_JP/LC_MESSAGES", True),
    ("ja_JP.UTF-8/../../../x", True)])
def test_logoff_lang_is_a_language_never_a_path(tag, reads, monkeypatch,
                                                tmp_path):
    """LOGOFF_LANG=../../x and the like read no path at all (and mean
    English); whatever is read is <folder>/<language>/LC_MESSAGES/logoff.mo
    in logoff's own folders, the language a plain name."""
    read = []
    monkeypatch.setattr(logoff, "_read_catalogue",
                        lambda path: read.append(path))
    folder = str(tmp_path / "locale")
    monkeypatch.setattr(logoff, "_locale_dirs", lambda: [folder])
    monkeypatch.setenv("LOGOFF_LANG", tag)
    logoff.set_language()
    assert logoff._translations is None
    assert logoff._langid == logoff.LANG_ENGLISH
    assert bool(read) == reads, read
    for path in read:
        rel = os.path.relpath(path, folder).split(os.sep)
        assert rel[1:] == ["LC_MESSAGES", "logoff.mo"], path
        assert re.match(r"^[a-z]{2,3}(_([A-Z]{2}|\d{3}|[A-Z][a-z]{3}))?$",
                        rel[0]), path


def test_an_english_run_imports_nothing_for_localization():
    """English (the default, C or LOGOFF_LANG=en): importing logoff and a
    run import neither gettext nor sysconfig nor re; a translated run
    imports gettext to read its catalogue."""
    code = ("import sys; before = set(sys.modules); import logoff; "
            "logoff.main(['/?']); logoff.main(['/x']); "
            "print(sorted(set(sys.modules) - before "
            "& {'gettext', 'sysconfig', 're', 'locale'}))")
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    env.pop("LOGOFF_LANG", None)
    if not WINDOWS:
        env.update(LANG="C.UTF-8", LC_ALL="", LANGUAGE="", LC_MESSAGES="")
    else:
        env["LOGOFF_LANG"] = "en"
    cases = [("default", env), ("en", dict(env, LOGOFF_LANG="en")),
             ("ja", dict(env, LOGOFF_LANG="ja-JP"))]
    for case, case_env in cases:
        p = farmlib.run_child([sys.executable, "-c", code], cwd=ROOT,
                              env=case_env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, timeout=60)
        assert p.returncode == 0, p.stderr
        last = p.stdout.decode("utf-8", "replace").splitlines()[-1]
        if case == "ja":
            assert "gettext" in last
            assert "ログオフ".encode("utf-8") in p.stdout
        else:
            assert last == "[]", (case, last)


# --- The screen in each language ---------------------------------------------

@pytest.mark.parametrize("name", LANGS)
def test_help(cli, load, lang, name):
    load(reference_farm())
    lang(name)
    r = cli("/?")
    assert (r.code, r.err) == (0, "")
    assert r.out == help_text(name, prog())
    assert ("注销" if name == "zh_CN" else "ログオフ") in r.out
    assert "Logs off" not in r.out
    assert "\n%s [sessionname" % prog() in r.out
    r.out.encode(CODEPAGE[name])


@pytest.mark.parametrize("name", LANGS)
@pytest.mark.parametrize("args, why", [
    (["3", "4"], "more than one session given"),
    (["/bogus"], None), (["/server:"], None), (["/idle:soon", "/query"],
                                               None),
])
def test_usage_errors(cli, load, double, lang, name, args, why):
    load(reference_farm())
    lang(name)
    r = cli(*args)
    assert r.code == 1 and r.out == ""
    lines = r.err.splitlines()
    prefix = tr(name, "Invalid parameter(s): %(why)s").split("%")[0]
    assert lines[0].startswith(prefix) and "Invalid" not in lines[0]
    if why:
        assert lines[0] == prefix + tr(name, why)
    assert r.err.endswith(
        tr(name, logoff.USAGE_BASIC) % {"prog": prog()} +
        tr(name, "Type %(prog)s /? for every switch.") % {"prog": prog()}
        + "\n")
    assert double.calls() == 0


EXPECTED = {
    "zh_CN": {
        "console": "logoff: 会话 1 是控制台会话；不能从控制台会话中注销用户。",
        "services": "logoff: 会话 0 是服务会话；其中没有可注销的用户。",
        "not active": "logoff: 会话 TERM05 (ID 3) 的状态为“断开”；按名称指定的"
                      "会话必须处于“运行中”状态。若要注销它，请指定其 ID。",
        "not found": "logoff: 找不到会话 TERM99 (服务器 Server1)。",
        "verbose": ["正在注销会话 2 (TERM04, CORP\\lee, 运行中, 服务器 "
                    "Server1)。", "会话 ID 2 (服务器 Server1) 已注销。"],
        "own": "正在注销会话 ID 2，即当前会话。",
        "whatif own": "What if: 将注销会话 2，即当前会话。",
        "full control": "完全控制",
        "header": ["服务器", "ID", "会话名", "用户名", "状态", "空闲时间",
                   "登录时间"],
        "active": "运行中", "disc": "断开", "local": "(本地)",
    },
    "ja": {
        "console": "logoff: セッション 1 はコンソール セッションです。コンソール "
                   "セッションからユーザーをログオフすることはできません。",
        "services": "logoff: セッション 0 はサービス セッションです。ログオフする"
                    "ユーザーはいません。",
        "not active": "logoff: セッション TERM05 (ID 3) は「切断」状態です。名前で"
                      "指定するセッションはアクティブである必要があります。この"
                      "セッションをログオフするには ID を指定してください。",
        "not found": "logoff: セッション TERM99 が見つかりません (サーバー "
                     "Server1)。",
        "verbose": ["セッション 2 (TERM04, CORP\\lee, Active, サーバー Server1) "
                    "をログオフしています。", "セッション ID 2 (サーバー Server1) "
                    "はログオフされました。"],
        "own": "現在のセッション (セッション ID 2) をログオフしています。",
        "whatif own": "What if: 現在のセッション (セッション 2) をログオフします。",
        "full control": "フル コントロール",
        "header": ["サーバー", "ID", "セッション名", "ユーザー名", "状態",
                   "アイドル時間", "ログオン時刻"],
        "active": "Active", "disc": "Disconnected", "local": "(ローカル)",
    },
}


@pytest.mark.parametrize("name", LANGS)
def test_refusals(cli, load, double, lang, name):
    load(reference_farm())
    lang(name)
    want = EXPECTED[name]
    for args, key in ((["1"], "console"), (["0"], "services"),
                      (["TERM05", "/server:Server1"], "not active"),
                      (["TERM99", "/server:Server1"], "not found")):
        r = cli(*args)
        assert (r.code, r.out, r.err) == (1, "", want[key] + "\n"), args
    r = cli("65536")
    assert r.code == 1 and tr(name, "Session %(id)d (%(name)s) is a "
                              "listener, not a user session; logging it off "
                              "would reset the listener.") % dict(
        id=65536, name="RDP-Tcp") in r.err
    assert double.exists(".", 1) and double.exists("Server1", 3)


@pytest.mark.parametrize("name", LANGS)
def test_verbose(cli, load, lang, name):
    load(reference_farm())
    lang(name)
    r = cli("TERM04", "/server:Server1", "/v")
    assert (r.code, r.err) == (0, "")
    assert r.out.splitlines() == EXPECTED[name]["verbose"]
    r = cli("/v")
    assert r.out == EXPECTED[name]["own"] + "\n"


@pytest.mark.parametrize("name", LANGS)
def test_whatif(cli, load, double, lang, name):
    load(reference_farm())
    lang(name)
    r = cli("/whatif")
    assert r.out == EXPECTED[name]["whatif own"] + "\n"
    r = cli("/whatif", "/state:disc", "/server:Server1", "/warn:bye")
    assert r.code == 0, r.err
    who = tr(name, "session %(id)d (%(what)s) on %(server)s") % dict(
        id=3, what="TERM05, CORP\\max, " + EXPECTED[name]["disc"],
        server=tr(name, "server %(server)s") % dict(server="Server1"))
    state = tr(name, "disconnected")
    assert r.out == tr(name, "What if: wait %(grace)s, then log off %(who)s "
                       "if it is still %(state)s (a warning cannot reach "
                       "it).") % dict(grace="5m", who=who, state=state) + \
        "\n" + tr(name, "What if: %(n)d session(s) would be logged off on "
                  "%(servers)d server(s).") % dict(n=1, servers=1) + "\n"
    assert double.calls("Server1", "WTSLogoffSession") == 0


@pytest.mark.parametrize("name", LANGS)
def test_query_table(cli, load, lang, name):
    load(reference_farm())
    lang(name)
    r = cli("/query")
    assert (r.code, r.err) == (0, "")
    lines = r.out.splitlines()
    want = EXPECTED[name]
    header = lines[0].split()
    assert header == want["header"]
    rows = [line.split() for line in lines[1:]]
    by_id = {row[2] if row[0] == ">" else row[1]: row for row in rows}
    assert want["local"] in by_id["3"] and want["active"] in by_id["3"]
    assert want["disc"] in by_id["4"]
    # Columns line up as the console shows them (CJK: two cells).
    from unicodedata import east_asian_width

    def col(line, text):
        i = line.index(text)
        return sum(2 if east_asian_width(c) in "WF" else 1 for c in line[:i])
    first = lines[0]
    row3 = [line for line in lines if " 3 " in line and "alice" in line][0]
    assert col(first, want["header"][2]) == col(row3, "RDP-Tcp#8")
    assert col(first, want["header"][3]) == col(row3, "CORP\\alice")
    assert col(first, want["header"][4]) == col(row3, want["active"])
    r.out.encode(CODEPAGE[name])


@pytest.mark.parametrize("name", LANGS)
def test_access_denied_has_the_hint_in_the_language(cli, load, lang, name):
    farm = reference_farm()
    farm.caller_fullcontrol = False
    load(farm)
    lang(name)
    r = cli("12")
    assert r.code == 1 and len(r.err.splitlines()) == 1
    assert EXPECTED[name]["full control"] in r.err and "(error 5)" in r.err
    assert "Access is denied" not in r.err and "Full Control" not in r.err
    if not WINDOWS:
        assert tr(name, "Access is denied.") in r.err


@pytest.mark.parametrize("name", LANGS)
def test_system_errors_in_the_language(cli, load, lang, name):
    """1722 and a 7000-range code (Wine has no text for those; off Windows
    there is none at all): every line in the one language."""
    farm = reference_farm()
    farm.fail(".", "WTSLogoffSession", 7024)
    load(farm)
    lang(name)
    r = cli("3", "/server:DOWN")
    assert r.code == 1 and "(error 1722)" in r.err
    assert "RPC server is unavailable" not in r.err
    assert tr(name, "The server cannot be reached: it is down or the name is "
              "wrong, a firewall blocks RPC, or the Remote Desktop Services "
              "service (TermService) is not running on it.") in r.err
    r = cli("12")
    assert r.code == 1 and "(error 7024)" in r.err
    assert "Remote Desktop Services is currently busy" not in r.err
    if not WINDOWS:
        assert tr(name, wtsapi._ERROR_TEXT[7024]) in r.err


@pytest.mark.parametrize("name", LANGS)
def test_built_in_error_texts_translated(lang, name):
    lang(name)
    logoff.set_language()
    for code, english in wtsapi._ERROR_TEXT.items():
        shown = str(logoff.SystemText(code))
        assert logoff.SystemText(code).en() == wtsapi.error_text(
            code, logoff.LANG_ENGLISH)
        if not WINDOWS:
            assert shown == tr(name, english) != english
        else:
            assert shown != english or code not in (5, 7022, 7024)
    if not WINDOWS:
        assert str(logoff.SystemText(12345)) == \
            tr(name, "Unknown error %d.") % 12345
    assert str(logoff.SystemText(0)) == tr(name, wtsapi.error_text(0))


@pytest.mark.parametrize("name", LANGS)
def test_warning_title(cli, load, double, lang, name):
    farm = standard_farm()
    load(farm)
    lang(name)
    r = cli("/server:RDS1", "/state:active", "/warn:Bye", "/grace:0.1")
    assert r.code == 0, r.err
    sent = [e for e in r.log if e.func == "WTSSendMessageW"]
    assert sent
    operator = wtsapi.process_account() or tr(name, "your administrator")
    assert sent[0].fields()["title"] == tr(
        name, "Message from %(operator)s") % dict(operator=operator)
    assert sent[0].fields()["text"] == "Bye"       # the operator's own words


@pytest.mark.parametrize("name", LANGS)
def test_progress_line(lang, name, capsys):
    """The progress line (shown on a console, with several servers)."""
    lang(name)
    logoff.set_language()
    make = getattr(logoff, "context", None) or logoff.Context
    ctx = make(logoff.parse_args(["/query", "/server:RDS1,RDS2"]))
    screen = logoff.Screen()
    screen.progress_on = True
    run = logoff.Run(ctx, screen)
    capsys.readouterr()
    screen.progress("plan", run)
    screen.next_progress = 0.0
    screen.progress("act", run)
    err = capsys.readouterr().err
    assert tr(name, "reading servers %(done)d/%(all)d") % dict(
        done=0, all=2) in err
    assert tr(name, "servers %(done)d/%(all)d, %(off)d logged off, "
              "%(failed)d failed") % dict(done=0, all=2, off=0,
                                          failed=0) in err


# --- /json and /log: the same bytes in every language ------------------------

def _json_farm():
    farm = reference_farm()
    w = farm.server("W")
    w.session(1, "Console", ACTIVE, "admin", "CORP")
    for sid, user in ((11, "gone"), (12, "swapped"), (13, "left"),
                      (14, "stays"), (15, "denied")):
        w.session(sid, "RDP-Tcp#%d" % sid, ACTIVE, user, "CORP",
                  input=CLOCK - 3 * HOUR)
    w.session(16, "", DISCONNECTED, "away", "CORP", input=CLOCK - 3 * HOUR)
    after = "WTSSendMessageW:5"
    farm.mutate(after, "W", 11, remove=1)
    farm.mutate(after, "W", 12, user="intruder")
    farm.mutate(after, "W", 13, state=DISCONNECTED)
    farm.mutate(after, "W", 16, state=ACTIVE)
    farm.fail("W", "WTSLogoffSession", 5, session=15)
    farm.fail("Server1", "WTSLogoffSession", 7024)
    return farm


def _records(text):
    out = []
    for line in text.splitlines():
        record = json.loads(line)
        record.pop("time"), record.pop("run")
        out.append(record)
    return out


def test_json_and_log_are_the_same_in_every_language(cli, load, lang,
                                                     tmp_path):
    docs, logs, screens = {}, {}, {}
    for name in ("en",) + LANGS:
        load(_json_farm())
        lang(name)
        log = tmp_path / ("%s.jsonl" % name)
        r = cli("/server:W,Server1,DOWN", "/user:*", "/warn:Bye",
                "/grace:0.1", "/parallel:1", "/json", "/log:%s" % log)
        assert r.code == 2, r.err
        assert r.err == ""
        docs[name] = r.out
        raw = log.read_bytes()
        raw.decode("utf-8")
        logs[name] = _records(raw.decode("utf-8"))
        load(_json_farm())
        r = cli("/server:W,Server1,DOWN", "/user:*", "/warn:Bye",
                "/grace:0.1", "/parallel:1", "/v")
        screens[name] = r.out + r.err
    assert docs["zh_CN"] == docs["en"] and docs["ja"] == docs["en"]
    assert logs["zh_CN"] == logs["en"] and logs["ja"] == logs["en"]
    # And they are English: the same words as the English run's screen.
    doc = json.loads(docs["en"])
    messages = {s["id"]: s["message"] for s in doc["sessions"]
                if s["server"] == "W"}
    assert messages[11] == "the session has ended"
    assert messages[12] == "the session now belongs to CORP\\intruder"
    assert messages[15] == wtsapi.error_text(5, logoff.LANG_ENGLISH)
    assert messages[16] == ("it was disconnected when the warnings went out "
                            "and is active now: it never saw the warning")
    assert [e["server"] for e in doc["server_errors"]] == ["DOWN"]
    assert doc["server_errors"][0]["message"] == wtsapi.error_text(
        1722, logoff.LANG_ENGLISH)
    assert all(ord(c) < 128 for c in docs["ja"])
    # The screens, by contrast, are in three languages.
    assert "the session has ended" in screens["en"]
    assert tr("zh_CN", "the session has ended") in screens["zh_CN"]
    assert tr("ja", "the session has ended") in screens["ja"]
    for name in LANGS:
        assert "the session has ended" not in screens[name]
        screens[name].encode(CODEPAGE[name])


# --- Where the catalogues are found: a copied folder, the wheel --------------

def _copy(src, dest):
    """Byte for byte (shutil.copy calls CopyFile2 on Windows CPython 3.12+,
    which Wine 8 lacks)."""
    with open(src, "rb") as f, open(dest, "wb") as out:
        out.write(f.read())


def test_a_copied_folder_speaks_japanese(tmp_path):
    dest = tmp_path / "tools"
    dest.mkdir()
    for name in ("logoff.py", "wtsapi.py"):
        _copy(os.path.join(ROOT, name), str(dest / name))
    for folder, _dirs, files in os.walk(LOCALE):
        rel = os.path.relpath(folder, LOCALE)
        os.makedirs(str(dest / "locale" / rel), exist_ok=True)
        for name in files:
            if not name.endswith(".pyc"):
                _copy(os.path.join(folder, name),
                      str(dest / "locale" / rel / name))
    env = dict(os.environ, LOGOFF_LANG="ja-JP", PYTHONIOENCODING="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    p = farmlib.run_child([sys.executable, str(dest / "logoff.py"), "/?"],
                          cwd=str(elsewhere), env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode("utf-8").replace("\r\n", "\n") == help_text(
        "ja", SCRIPT_PROG)
    # Without locale/ beside it: English, and still working.
    shutil.rmtree(str(dest / "locale"))
    p = farmlib.run_child([sys.executable, str(dest / "logoff.py"), "/?"],
                          cwd=str(elsewhere), env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=60)
    assert p.returncode == 0 and p.stdout.decode("utf-8").startswith(
        "Logs off a user")


# The installed wheel: conftest.py's wheel and venv fixtures build and
# install it (pip and venv are not in the Windows leg's embeddable Python).

@pytest.mark.skipif(WINDOWS, reason="the wheel is built and installed on "
                    "the host (no pip in the embeddable build)")
def test_wheel_carries_every_catalogue(wheel):
    with zipfile.ZipFile(str(wheel)) as z:
        for name in LANGS:
            member = "%s.data/data/share/logoff-py/locale/%s/LC_MESSAGES/" \
                     "logoff.mo" % (DIST, name)
            assert member in WHEEL_EXTRA
            with open(os.path.join(LOCALE, name, "LC_MESSAGES",
                                   "logoff.mo"), "rb") as f:
                assert z.read(member) == f.read()


@pytest.mark.skipif(WINDOWS, reason="the wheel is built and installed on "
                    "the host (no pip in the embeddable build)")
@pytest.mark.parametrize("how", ["module", "script"])
def test_installed_wheel_speaks_japanese(venv, elsewhere, how):
    proc = run_cmd(venv.command(how) + ["/?"], cwd=str(elsewhere),
                env=clean_env(LOGOFF_LANG="ja-JP", PYTHONIOENCODING="utf-8"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode("utf-8") == help_text(
        "ja", "python3 -m logoff" if how == "module" else "pylogoff")
    proc = run_cmd(venv.command(how) + ["/x"], cwd=str(elsewhere),
                env=clean_env(LANG="zh_CN.UTF-8", LC_ALL="", LANGUAGE="",
                               LOGOFF_LANG="", PYTHONIOENCODING="utf-8"))
    assert proc.returncode == 1
    assert proc.stderr.decode("utf-8").startswith("参数无效: ")


# --- Under Wine: genuine Windows CPython, the language from the Windows API ---

def _winleg():
    path = Path(__file__).resolve().with_name("winleg.py")
    if "winleg" not in sys.modules:
        spec = importlib.util.spec_from_file_location("winleg", str(path))
        module = importlib.util.module_from_spec(spec)
        sys.modules["winleg"] = module
        spec.loader.exec_module(module)
    return sys.modules["winleg"]


@pytest.fixture(scope="module")
def wine():
    if WINDOWS:
        pytest.skip("drives Wine from Linux")
    leg = _winleg()
    missing = leg.missing_tools()
    if missing:
        if leg.in_ci():
            pytest.fail("Windows leg: missing %s" % missing, pytrace=False)
        pytest.skip("Windows leg: missing %s" % missing)
    if not leg.in_ci() and not leg.CACHE.exists():
        pytest.skip("Windows leg not enabled (python tests/winleg.py prepare)")
    try:
        leg.prepare()
    except leg.WinlegError as e:
        pytest.fail("Windows leg: prepare failed: %s" % e, pytrace=False)
    return leg


# The UI language under Wine follows LC_MESSAGES.  LANGUAGE (which gettext
# would read first) names the other language: were logoff.py reading POSIX
# variables on Windows it would pick that one.
_WINE_CASES = [("ja", {"LC_MESSAGES": "ja_JP.UTF-8", "LANGUAGE": "zh_CN"}),
               ("zh_CN", {"LC_MESSAGES": "zh_CN.UTF-8", "LANGUAGE": "ja"})]


@pytest.mark.parametrize("version", ["3.8", "3.13"])
@pytest.mark.parametrize("name, env", _WINE_CASES)
def test_windows_display_language_under_wine(wine, version, name, env,
                                             tmp_path):
    win = wine.winpath
    script = win(wine.ROOT / "logoff.py")
    # LOGOFF_LANG empty: whatever the outer run has, the display language
    # decides.
    env = dict(env, PYTHONIOENCODING="utf-8", LOGOFF_LANG="")
    probe = wine.run_python(version, ["-c", "import sys; sys.path.insert(0, "
                                      "%r); import wtsapi; print("
                                      "wtsapi.ui_languages())"
                                      % win(wine.ROOT)],
                            cwd=tmp_path, env=env, bare=True, timeout=600)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip().startswith("['%s'" % TAG[name]), probe.stdout
    r = wine.run_python(version, [script, "/?"], cwd=tmp_path, env=env,
                        bare=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.replace("\r\n", "\n") == help_text(name, "py logoff.py")
    # System texts in the same language: 1722 from FormatMessageW.
    farm_file = standard_farm().write(str(tmp_path / "farm.txt"))
    r = wine.run_python(version, [script, "3", "/server:DOWN"], cwd=tmp_path,
                        env=dict(env, WTSDOUBLE_FARM=win(farm_file)),
                        bare=True, timeout=600)
    assert r.returncode == 1 and "(error 1722)" in r.stderr, r.stderr
    assert "RPC server is unavailable" not in r.stderr
    assert tr(name, "The server cannot be reached: it is down or the name is "
              "wrong, a firewall blocks RPC, or the Remote Desktop Services "
              "service (TermService) is not running on it.") in r.stderr
    # LOGOFF_LANG=en forces English whatever the display language.
    r = wine.run_python(version, [script, "/?"], cwd=tmp_path,
                        env=dict(env, LOGOFF_LANG="en"), bare=True,
                        timeout=600)
    assert r.stdout.replace("\r\n", "\n") == help_text(None, "py logoff.py")


@pytest.mark.parametrize("name, locale_name", [("ja", "ja_JP.UTF-8"),
                                               ("zh_CN", "zh_CN.UTF-8")])
def test_redirected_output_in_the_windows_code_page(wine, name, locale_name,
                                                    tmp_path):
    """With the whole locale Japanese (Chinese), Windows writes a pipe in
    cp932 (936): the help and an error come through whole.  A Windows parent
    reads the child's pipes and hands the bytes on as hex."""
    code = ("import subprocess, sys; p = subprocess.run([sys.executable] + "
            "sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, "
            "stderr=subprocess.PIPE); print(p.returncode, sys.stdout.encoding,"
            " p.stdout.hex() or '-', p.stderr.hex() or '-')")
    script = wine.winpath(wine.ROOT / "logoff.py")
    for args, want_out, want_err in (
            (["/?"], help_text(name, "py logoff.py"),
             ""),
            (["3", "4"], "", tr(name, "Invalid parameter(s): %(why)s") % dict(
                why=tr(name, "more than one session given")) + "\n" +
             tr(name, logoff.USAGE_BASIC) % {"prog": "py logoff.py"} +
             tr(name, "Type %(prog)s /? for every switch.") % {
                 "prog": "py logoff.py"} + "\n")):
        r = wine.run_python("3.13", ["-c", code, script] + args, cwd=tmp_path,
                            env={"LC_ALL": locale_name, "LOGOFF_LANG": ""},
                            bare=True,
                            timeout=600)
        assert r.returncode == 0, r.stderr
        rc, encoding, out, err = r.stdout.split()
        assert encoding.lower() in ("cp932", "cp936", "gbk"), encoding
        decode = lambda h: "" if h == "-" else bytes.fromhex(h).decode(
            CODEPAGE[name]).replace("\r\n", "\n")
        assert (decode(out), decode(err)) == (want_out, want_err)
