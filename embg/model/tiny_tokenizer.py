"""A small but real Gemma-3-style tokenizer, trained offline and deterministically.

SentencePiece BPE (4096 pieces by default) on the docstrings of the Python standard library,
with Gemma's special ids (pad 0, eos 1, bos 2, unk 3), byte fallback, split digits, identity
normalisation and no dummy prefix; wrapped as a transformers GemmaTokenizer that adds BOS and
EOS and pads on the right. The same Python build gives byte-identical files.
"""
from __future__ import annotations

import ast
import functools
import io
import json
import sysconfig
import tempfile
from pathlib import Path


_EXCLUDE_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "lib2to3"}

# ids 0..4 as in Gemma: <pad>=0 <eos>=1 <bos>=2 <unk>=3 <mask>=4 ; then "\n"=5 "\t"=6 ; then 256 byte pieces.
_USER_DEFINED = ["<mask>", "\n", "\t"]


def stdlib_docstring_lines(max_files: int | None = None) -> list[str]:
    return list(_stdlib_docstring_lines(max_files))


@functools.lru_cache(maxsize=2)  # parsing the stdlib takes seconds; fixtures of one run share it
def _stdlib_docstring_lines(max_files: int | None) -> tuple[str, ...]:
    std = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p for p in std.rglob("*.py")
        if not (_EXCLUDE_DIRS & set(p.relative_to(std).parts))
    )
    if max_files is not None:
        files = files[:max_files]
    lines: list[str] = []
    for p in files:
        try:
            tree = ast.parse(p.read_bytes())
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=True)
                if doc:
                    lines.extend(line for line in doc.split("\n") if line.strip())
    return tuple(lines)


def train_spm_bytes(lines: list[str], vocab_size: int = 4096, seed: int = 0) -> bytes:
    """Train a Gemma-like SentencePiece BPE model; returns serialized ModelProto bytes."""
    import sentencepiece as spm

    spm.set_random_generator_seed(seed)  # BPE training is deterministic anyway; belt and braces
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),  # no file paths end up in trainer_spec -> byte-identical output
        model_writer=buf,
        model_type="bpe",
        vocab_size=vocab_size,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        user_defined_symbols=_USER_DEFINED,
        byte_fallback=True,
        split_digits=True,
        split_by_unicode_script=True,
        split_by_number=True,
        split_by_whitespace=True,
        treat_whitespace_as_suffix=False,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",  # Gemma: no NFKC
        add_dummy_prefix=False,              # Gemma: no dummy prefix
        remove_extra_whitespaces=False,      # Gemma: keep all whitespace
        character_coverage=1.0,
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    return buf.getvalue()


def _sanitize_config(path: Path, model_max_length: int) -> None:
    """Make tokenizer_config.json deterministic and explicit.

    Raw save_pretrained output contains the temp-dir `vocab_file` path (non-deterministic),
    `is_local`/`local_files_only` load-time flags, lacks add_bos_token/add_eos_token (so a reload reports
    add_bos_token=False although tokenizer.json's TemplateProcessing still adds them), and lists the
    SentencePiece user-defined pieces "\\n"/"\\t" plus pad/eos/bos/mask as `extra_special_tokens`.
    """
    cfg = json.loads(path.read_text(encoding="utf-8"))
    for k in ("vocab_file", "is_local", "local_files_only", "extra_special_tokens", "name_or_path"):
        cfg.pop(k, None)
    cfg["add_bos_token"] = True
    cfg["add_eos_token"] = True
    cfg["padding_side"] = "right"
    cfg["model_max_length"] = model_max_length
    path.write_text(json.dumps(dict(sorted(cfg.items())), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_tiny_tokenizer(out_dir: Path, vocab_size: int = 4096, seed: int = 0, lines: list[str] | None = None,
                         model_max_length: int = 2048):
    """Train + wrap + save.  Returns the loaded transformers GemmaTokenizer."""
    from transformers import GemmaTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if lines is None:
        lines = stdlib_docstring_lines()
    model_bytes = train_spm_bytes(lines, vocab_size=vocab_size, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.model").write_bytes(model_bytes)
        # from_pretrained on a folder holding only tokenizer.model converts it (SentencePieceExtractor ->
        # BPE vocab+merges) into a tokenizers-backed GemmaTokenizer.  GemmaTokenizer(vocab_file=...) does
        # NOT convert (gives a 5-token vocab) -- do not use it.
        tok = GemmaTokenizer.from_pretrained(
            tmp,
            add_bos_token=True,   # -> TemplateProcessing "<bos> $A <eos>" in tokenizer.json
            add_eos_token=True,
            padding_side="right",
        )
        tok.save_pretrained(str(out_dir))
    # save_pretrained writes tokenizer.model only when tok.vocab_file still exists; write it ourselves.
    (out_dir / "tokenizer.model").write_bytes(model_bytes)
    _sanitize_config(out_dir / "tokenizer_config.json", model_max_length)
    return GemmaTokenizer.from_pretrained(str(out_dir))
