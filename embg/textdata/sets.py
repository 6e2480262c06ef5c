"""Evaluation texts for embg-validate: named sets and user files, each text with its task prompt.

Named sets (``--texts NAME``): ``builtin`` (the default) and ``retrieval`` (the real query/document
pairs of ``embg.textdata``: every query against every document). The built-in set reuses the
hand-written texts of ``embg.textdata.builtin`` and adds long natural prose (``prose/``, package data) so that every run crosses the sliding window and the largest
bucket (> 2048 tokens with the real tokenizer), which is where masks and truncation go wrong.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from embg import textdata
from embg.errors import EmbgError
from embg.registry import Registry
from embg.textdata import builtin as base

QUERY, DOCUMENT = "query", "document"
TASK_ALIASES = {"q": QUERY, "d": DOCUMENT, "doc": DOCUMENT, "passage": DOCUMENT}


@dataclass(frozen=True)
class EvalText:
    """One evaluation text: ``task`` is a prompt name ("query", "document", "STS", ...) or "" for none."""

    text: str
    task: str
    kind: str  # what the text exercises, for the report ("query", "code", "long", "edge", ...)

    @property
    def is_query(self) -> bool:
        return self.task == QUERY

    @property
    def is_document(self) -> bool:
        return self.task == DOCUMENT


def _data(name: str) -> str:
    return resources.files("embg.textdata").joinpath("prose", name).read_text(encoding="utf-8").strip()


def builtin_texts() -> list[EvalText]:
    """Queries and documents in Latin, Cyrillic, Arabic, CJK, Devanagari and emoji; code; long prose; edge cases."""
    long_en = _data("long_prose_en.txt")
    medium_ru = _data("medium_prose_ru.txt")
    first_paragraphs = "\n\n".join(long_en.split("\n\n")[:3])
    rows = [EvalText(t, QUERY, "query") for t in base.QUERIES]
    rows += [
        EvalText("when was the lighthouse on the northern headland built", QUERY, "query"),
        EvalText("история деревни у реки и половодье", QUERY, "query"),
        EvalText("function that returns the n-th Fibonacci number", QUERY, "query"),
        EvalText("SQL count orders per customer", QUERY, "query"),
    ]
    rows += [EvalText(t, DOCUMENT, "document") for t in base.DOCUMENTS]
    rows += [EvalText(t, DOCUMENT, "code") for t in base.CODE]
    rows += [
        EvalText(base.LONG_DOCUMENT, DOCUMENT, "medium"),
        EvalText(medium_ru, DOCUMENT, "medium"),          # crosses the 257-token window in Cyrillic
        EvalText(first_paragraphs, DOCUMENT, "medium"),   # ~700 tokens: window crossed, below big buckets
        EvalText(long_en, DOCUMENT, "long"),              # > 2048 tokens: truncated at the largest bucket
        EvalText(long_en, QUERY, "long"),
    ]
    rows += [EvalText(t, task, "edge") for t in base.EDGE for task in (QUERY, DOCUMENT)]
    return rows


def retrieval_texts() -> list[EvalText]:
    """The shipped retrieval pairs: all queries (task "query"), then all documents (task "document")."""
    pairs = textdata.retrieval_pairs()
    return [EvalText(p.query, QUERY, "retrieval") for p in pairs] + \
        [EvalText(p.document, DOCUMENT, "retrieval") for p in pairs]


TEXT_SETS: Registry[Callable[[], list[EvalText]]] = Registry("text set")
TEXT_SETS.register("builtin")(builtin_texts)
TEXT_SETS.register("retrieval")(retrieval_texts)


QUICK_QUERIES = 4
QUICK_DOCUMENTS = 6


def quick_texts() -> list[EvalText]:
    """A few short queries and documents from the built-in set: for emulated or slow devices
    (100-400x slower under qemu), where the full set with its 2048-token texts takes too long."""
    rows = builtin_texts()
    queries = [t for t in rows if t.kind == "query"][:QUICK_QUERIES]
    documents = [t for t in rows if t.kind == "document"][:QUICK_DOCUMENTS]
    return queries + documents


def _normalise_task(task: object, where: str) -> str:
    if not isinstance(task, str):
        raise EmbgError(f"{where}: 'task' must be a string (query, document or a prompt name)")
    return TASK_ALIASES.get(task.strip(), task.strip())


def load_texts_file(path: Path) -> list[EvalText]:
    """One text per line (run as both query and document), or JSONL objects {"task": ..., "text": ...}.

    A name of TEXT_SETS ("builtin", "retrieval") gives that set unless a file of that name exists."""
    path = Path(path)
    if not path.is_file() and str(path) in TEXT_SETS:
        return TEXT_SETS.get(str(path))()
    if not path.is_file():
        raise EmbgError(f"texts file not found: {path} (named sets: {', '.join(TEXT_SETS.names())})")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise EmbgError(f"texts file {path} is not UTF-8: {exc}") from exc
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise EmbgError(f"texts file {path} is empty: give one text per line or JSONL with task and text")
    if all(line.lstrip().startswith("{") for line in lines):
        return _parse_jsonl(lines, path)
    # plain lines: each becomes a query and a document so retrieval agreement has both sides
    return [EvalText(line, task, "user") for line in lines for task in (QUERY, DOCUMENT)]


def _parse_jsonl(lines: list[str], path: Path) -> list[EvalText]:
    rows = []
    for number, line in enumerate(lines, 1):
        where = f"{path}:{number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EmbgError(f"{where}: not valid JSON: {exc}") from exc
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise EmbgError(f'{where}: expected {{"task": "query"|"document"|<prompt name>, "text": "..."}}')
        rows.append(EvalText(item["text"], _normalise_task(item.get("task", DOCUMENT), where), "user"))
    return rows


def check_tasks(rows: list[EvalText], prompts: dict[str, str]) -> None:
    """Every task must be a prompt of the model (or "" for none): a typo would silently change embeddings."""
    unknown = sorted({r.task for r in rows if r.task and r.task not in prompts})
    if unknown:
        raise EmbgError(f"unknown task(s) {', '.join(unknown)} in the texts; this model's prompts are "
                        f"{', '.join(sorted(prompts))}")
