"""Generate embg/textdata/retrieval_pairs.jsonl and calibration.jsonl.

Deterministic: the English rows come from the docstrings and source of the Python standard library
(PSF licence) of the interpreter that runs this script, selected in sorted order; the multilingual
rows are hand-written (scripts/textdata_handwritten.py). The committed files were generated with
CPython 3.11.7; another version changes some docstrings, so run it with that version to reproduce
them byte for byte:

    python scripts/make_textdata.py          # writes both files, prints counts
    python scripts/make_textdata.py --check  # exit 1 when the committed files differ

Selection rules (retrieval): query = the docstring's summary (first paragraph, or its first sentence
when longer than MAX_SUMMARY_WORDS), document =
"<qualified name>: <rest of the docstring>"; the rest has 15..250 words; summaries and rests that
repeat (normalised) are dropped, and at most PER_MODULE pairs per module, spread evenly over the
module's sorted names, so each topic (strings, paths, dates, sockets, JSON...) has neighbours.
Calibration texts come from other modules only and share no 60-character run with the retrieval
set or the validator's built-in texts.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import platform
import re
import sys
import textwrap
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import textdata_handwritten as handwritten  # noqa: E402

from embg.atomic import atomic_write_bytes  # noqa: E402

warnings.simplefilter("ignore", DeprecationWarning)  # typing.io / typing.re while walking modules
OUT = ROOT / "embg" / "textdata"
PYTHON = f"{platform.python_implementation()} {platform.python_version()}"

# Modules for the retrieval pairs, grouped by topic so queries have near neighbours.
RETRIEVAL_MODULES = [
    "string", "textwrap", "difflib", "unicodedata", "codecs", "re", "shlex", "html",
    "os", "os.path", "pathlib", "shutil", "glob", "fnmatch", "tempfile", "filecmp", "io",
    "datetime", "time", "calendar", "zoneinfo",
    "socket", "ssl", "selectors", "http.client", "http.cookiejar", "urllib.parse", "urllib.request",
    "smtplib", "ftplib", "imaplib", "ipaddress", "email.message", "email.utils", "mimetypes",
    "json", "csv", "configparser", "xml.etree.ElementTree", "pickle", "struct", "base64", "plistlib",
    "zipfile", "tarfile", "gzip", "bz2", "lzma", "zlib",
    "hashlib", "hmac", "secrets", "uuid", "random",
    "math", "statistics", "fractions", "decimal", "heapq", "bisect",
    "collections", "itertools", "functools", "copy", "enum", "dataclasses", "contextlib", "typing",
    "subprocess", "threading", "queue", "asyncio", "concurrent.futures", "multiprocessing", "sched",
    "logging", "argparse", "warnings", "traceback", "inspect", "sqlite3", "locale", "platform",
]
PER_MODULE = 6
MIN_WORDS, MAX_WORDS = 15, 250
MAX_SUMMARY_WORDS = 30  # longer summaries are skipped: a query is a line, not a paragraph
OVERLAP = 60  # characters: calibration texts share no run this long with other sets

# Modules for calibration prose and source (disjoint from RETRIEVAL_MODULES).
CALIBRATION_PROSE_MODULES = [
    "ast", "dis", "doctest", "unittest", "pdb", "pydoc", "tokenize", "optparse", "getopt", "gettext",
    "graphlib", "netrc", "quopri", "operator", "numbers", "pstats", "cProfile", "runpy", "zipapp",
    "fileinput", "linecache", "tabnanny", "pickletools", "modulefinder", "trace", "timeit", "cmd",
    "pprint", "reprlib", "weakref", "abc", "colorsys", "wave", "mailbox", "poplib", "socketserver",
    "http.server", "xmlrpc.client", "wsgiref.util", "email.header", "ctypes", "string.templatelib",
    "keyword", "token", "compileall", "py_compile", "site", "sysconfig", "symtable", "code", "codeop",
]
CALIBRATION_SOURCE_MODULES = ["pprint", "graphlib", "colorsys", "fileinput", "linecache", "netrc",
                              "optparse", "tabnanny", "quopri", "getopt", "reprlib", "cmd", "timeit"]
PROSE_TEXTS, SOURCE_TEXTS, SHORT_QUERIES = 60, 28, 24


def words(text: str) -> int:
    return len(text.split())


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def split_docstring(doc: str) -> tuple[str, str]:
    """(summary paragraph joined to one line, rest of the docstring); a leading C signature is skipped."""
    doc = inspect.cleandoc(doc)
    head, _, rest = doc.partition("\n\n")
    if looks_like_signature(" ".join(head.split())):
        head, _, rest = rest.partition("\n\n")
    head = " ".join(head.split())
    if words(head) > MAX_SUMMARY_WORDS:  # a long first paragraph: its first sentence is the summary
        first, sep, more = head.partition(". ")
        head, rest = first + sep.strip(), f"{more}\n\n{rest}".strip()
    return head, rest.strip()


# C modules whose functions a Python module re-exports as its own.
C_HOMES = {"os": {"posix", "nt"}, "io": {"_io"}, "socket": {"_socket"}, "json": {"json.decoder"}}


def defined_in(obj: object, module) -> bool:
    home = getattr(obj, "__module__", None)
    name = module.__name__
    return home is None or home == name or home.lstrip("_") == name.rsplit(".", 1)[-1] or \
        home in C_HOMES.get(name, ())


def public_objects(module_name: str):
    """(qualified name, object) for public functions, classes and their own methods, sorted."""
    module = importlib.import_module(module_name)
    found = {}
    for name, obj in vars(module).items():
        if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
            continue
        if not defined_in(obj, module):
            continue  # re-exported from elsewhere: belongs to its own module
        found[f"{module_name}.{name}"] = obj
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") and attr != "__init__":
                    continue
                member = getattr(member, "__func__", member)
                if isinstance(member, property):
                    member = member.fget
                if callable(member) or inspect.isroutine(member):
                    found[f"{module_name}.{name}.{attr}"] = member
    return sorted(found.items())


def looks_like_signature(summary: str) -> bool:
    return bool(re.match(r"^[\w.]+\(.*\)\s*(-+>.*)?$", summary)) or "-->" in summary or \
        summary.startswith(("S.", "B.", "D.", "L."))


def candidate_pairs(module_name: str, seen_queries: set[str], seen_rests: set[str]) -> list[dict]:
    rows = []
    for qualname, obj in public_objects(module_name):
        doc = getattr(obj, "__doc__", None)
        if not isinstance(doc, str) or not doc.strip():
            continue
        summary, rest = split_docstring(doc)
        if looks_like_signature(summary) or "=" in summary or not 3 <= words(summary) <= MAX_SUMMARY_WORDS or not MIN_WORDS <= words(rest) <= MAX_WORDS:
            continue
        if normalise(summary) in seen_queries or normalise(rest) in seen_rests:
            continue
        seen_queries.add(normalise(summary))
        seen_rests.add(normalise(rest))
        rows.append({"qualname": qualname, "query": summary, "document": f"{qualname}: {rest}"})
    return rows


def spread(rows: list, count: int) -> list:
    """``count`` rows evenly spaced over the sorted list (all of them when there are fewer)."""
    if len(rows) <= count:
        return rows
    step = len(rows) / count
    return [rows[int(i * step)] for i in range(count)]


def stdlib_pairs() -> list[dict]:
    seen_queries: set[str] = set()
    seen_rests: set[str] = set()
    pairs = []
    for module_name in RETRIEVAL_MODULES:
        for row in spread(candidate_pairs(module_name, seen_queries, seen_rests), PER_MODULE):
            pairs.append({"id": f"stdlib:{row['qualname']}", "lang": "en", "query": row["query"],
                          "document": row["document"], "source": f"python-stdlib-docstring ({PYTHON})"})
    return pairs


def handwritten_pairs() -> list[dict]:
    pairs = []
    for lang, items in handwritten.PAIRS.items():
        for number, (query, document) in enumerate(items, 1):
            pairs.append({"id": f"handwritten:{lang}:{number:02d}", "lang": lang, "query": query,
                          "document": document, "source": "handwritten"})
    for number, (lang, query, document) in enumerate(handwritten.MIXED, 1):
        pairs.append({"id": f"handwritten:mixed:{number:02d}", "lang": lang, "query": query,
                      "document": document, "source": "handwritten"})
    return pairs


def shingles(text: str) -> set[str]:
    text = " ".join(text.split())
    return {text[i:i + OVERLAP] for i in range(max(1, len(text) - OVERLAP + 1))}


class Disjoint:
    """Accepts a text only when it shares no OVERLAP-character run with anything accepted before."""

    def __init__(self, texts: list[str]) -> None:
        self.seen: set[str] = set()
        for text in texts:
            self.seen |= shingles(text)

    def accept(self, text: str) -> bool:
        mine = shingles(text)
        if mine & self.seen:
            return False
        self.seen |= mine
        return True


def validator_texts() -> list[str]:
    from embg.textdata import builtin as base
    from embg.textdata.sets import builtin_texts

    data = ROOT / "embg" / "textdata" / "prose"
    return [t.text for t in builtin_texts()] + base.parity_texts() + \
        [p.read_text(encoding="utf-8") for p in sorted(data.glob("*"))]


def trim_paragraphs(text: str, max_chars: int) -> str:
    """Whole paragraphs up to about ``max_chars`` (the first one always)."""
    out: list[str] = []
    for paragraph in text.split("\n\n"):
        if out and sum(len(p) for p in out) + len(paragraph) > max_chars:
            break
        out.append(paragraph)
    return "\n\n".join(out).strip()


def prose_candidates() -> list[str]:
    """Module docs (trimmed to different lengths) and long function docstrings of other modules."""
    texts = []
    for index, module_name in enumerate(CALIBRATION_PROSE_MODULES):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if module.__doc__ and words(module.__doc__) >= 8:
            limit = (400, 1200, 2600)[index % 3]  # spread the lengths from a paragraph to ~600 tokens
            texts.append(trim_paragraphs(inspect.cleandoc(module.__doc__), limit))
        for _, obj in public_objects(module_name):
            doc = getattr(obj, "__doc__", None)
            if isinstance(doc, str) and 25 <= words(doc) <= 300 and not looks_like_signature(doc.split("\n")[0]):
                texts.append(inspect.cleandoc(doc))
    return texts


def source_candidates() -> list[str]:
    texts = []
    for module_name in CALIBRATION_SOURCE_MODULES:
        for _, obj in public_objects(module_name):
            if not inspect.isfunction(obj):
                continue
            try:
                source = textwrap.dedent(inspect.getsource(obj))
            except (OSError, TypeError):
                continue
            if 5 <= source.count("\n") <= 80:
                texts.append(source.rstrip() + "\n")
    return texts


def calibration_rows(retrieval: list[dict]) -> list[dict]:
    guard = Disjoint([t for p in retrieval for t in (p["query"], p["document"])] + validator_texts())
    rows = []

    def take(texts: list[str], lang: str, task: str, count: int) -> None:
        taken = 0
        for text in spread(texts, count * 3):  # spread first, then skip overlaps, so modules stay mixed
            if taken < count and text.strip() and guard.accept(text):
                rows.append({"task": task, "lang": lang, "text": text})
                taken += 1

    take(prose_candidates(), "en", "document", PROSE_TEXTS)
    take(source_candidates(), "code", "document", SOURCE_TEXTS)
    take(handwritten.CALIBRATION_CODE, "code", "document", len(handwritten.CALIBRATION_CODE))
    take(handwritten.CALIBRATION_QUERIES, "en", "query", len(handwritten.CALIBRATION_QUERIES))
    for lang, task, text in handwritten.CALIBRATION_MULTILINGUAL:
        if not guard.accept(text):
            raise SystemExit(f"hand-written calibration text overlaps another set: {text[:60]!r}")
        rows.append({"task": task, "lang": lang, "text": text})
    return rows


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n" for row in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files, write nothing")
    args = parser.parse_args()
    retrieval = stdlib_pairs() + handwritten_pairs()
    outputs = {"retrieval_pairs.jsonl": jsonl(retrieval), "calibration.jsonl": jsonl(calibration_rows(retrieval))}
    stale = []
    for name, text in outputs.items():
        path = OUT / name
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            atomic_write_bytes(path, text.encode("utf-8"))
        print(f"{name}: {text.count(chr(10))} rows ({PYTHON})")
    if stale:
        print(f"differs from the committed files: {', '.join(stale)}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
