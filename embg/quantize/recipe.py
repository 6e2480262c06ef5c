"""Quantization recipes as data.

A recipe names one rule per layer group. Groups are fixed names that each target backend maps
onto its own op/tensor names, so adding a scheme means adding one JSON file, not a code path.

Groups:
  embedding     the token embedding table (embed_tokens)
  attention     query/key/value projections (q_proj, k_proj, v_proj)
  projections   the attention output projection (o_proj)
  feed_forward  gate_proj, up_proj, down_proj
  head          the sentence-transformers Dense layers (2_Dense, 3_Dense)

Rule fields: bits (32 = keep float, 8, 4), granularity (channel | block), block_size (with
block), algorithm (min-max | qat-grid), activations (fp32 | dynamic_int8). Unknown or conflicting
fields are errors, never silently ignored. There is no fp16 anywhere: EmbeddingGemma's residual
channels reach ~1e5 > 65504, so bits 16 and fp16 activations are refused with that reason.

Optional top-level ``"smoothing": {"alpha": a}`` (0 < a <= 1): SmoothQuant-style scales folded
into the graph before export (embg/quantize/smoothing.py); the fp32 function is unchanged.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from embg.errors import EmbgError

GROUPS = ("embedding", "attention", "projections", "feed_forward", "head")
BITS = (32, 8, 4)
GRANULARITIES = ("channel", "block")
ALGORITHMS = ("min-max", "qat-grid")
ACTIVATIONS = ("fp32", "dynamic_int8")
BITS_TO_PRESET = {32: "fp32", 8: "int8", 4: "int4"}
RULE_FIELDS = {"bits", "granularity", "block_size", "algorithm", "activations"}
RECIPE_FIELDS = {"name", "description", "activations", "rules", "smoothing"}
SMOOTHING_FIELDS = {"alpha"}
FP16_REASON = "fp16 activations overflow on this model (residual channels reach ~1e5 > fp16's 65504)"


@dataclass(frozen=True)
class GroupRule:
    bits: int = 32
    granularity: str = "channel"
    block_size: int | None = None
    algorithm: str = "min-max"
    activations: str = "fp32"

    @property
    def is_float(self) -> bool:
        return self.bits == 32

    def describe(self) -> str:
        if self.is_float:
            return "float32"
        gran = f"block{self.block_size}" if self.granularity == "block" else "per-channel"
        acts = "dynamic int8 activations" if self.activations == "dynamic_int8" else "float activations"
        algo = "exact QAT grid" if self.algorithm == "qat-grid" else "min-max"
        return f"int{self.bits} {gran} {algo}, {acts}"


@dataclass(frozen=True)
class QuantRecipe:
    name: str
    description: str
    rules: dict[str, GroupRule] = field(default_factory=dict)
    smoothing: dict[str, float] | None = None  # {"alpha": a}: SmoothQuant scales folded before export

    def rule(self, group: str) -> GroupRule:
        return self.rules[group]

    @property
    def is_float(self) -> bool:
        return all(rule.is_float for rule in self.rules.values())

    @property
    def uses_qat_grid(self) -> bool:
        return any(rule.algorithm == "qat-grid" for rule in self.rules.values())

    def to_dict(self) -> dict[str, Any]:
        data = {"name": self.name, "description": self.description,
                "rules": {g: {k: v for k, v in asdict(r).items() if v is not None} for g, r in self.rules.items()}}
        if self.smoothing:
            data["smoothing"] = dict(self.smoothing)
        return data

    def summary(self) -> str:
        lines = [f"recipe {self.name}: {self.description}"]
        lines += [f"  {group:<13} {self.rules[group].describe()}" for group in GROUPS]
        if self.smoothing:
            lines.append(f"  smoothing     SmoothQuant scales folded into norms/weights, alpha {self.smoothing['alpha']}")
        return "\n".join(lines)


def _parse_rule(group: str, raw: Any, default_activations: str, where: str) -> GroupRule:
    if not isinstance(raw, dict):
        raise EmbgError(f"{where}: rule for {group!r} must be an object")
    unknown = set(raw) - RULE_FIELDS
    if unknown:
        raise EmbgError(f"{where}: unknown field(s) {sorted(unknown)} in rule {group!r}; allowed: {sorted(RULE_FIELDS)}")
    bits = raw.get("bits")
    if bits == 16:
        raise EmbgError(f"{where}: {group}.bits 16 is refused: {FP16_REASON}")
    if bits not in BITS:
        raise EmbgError(f"{where}: {group}.bits must be one of {list(BITS)}, got {bits!r}")
    if bits == 32:
        extra = set(raw) - {"bits"}
        if extra:
            raise EmbgError(f"{where}: {group} is float (bits 32); fields {sorted(extra)} conflict with that")
        return GroupRule(bits=32)
    granularity = raw.get("granularity", "channel")
    if granularity not in GRANULARITIES:
        raise EmbgError(f"{where}: {group}.granularity must be one of {list(GRANULARITIES)}")
    block_size = raw.get("block_size")
    if granularity == "block":
        if not isinstance(block_size, int) or block_size < 16 or block_size & (block_size - 1):
            raise EmbgError(f"{where}: {group}.block_size must be a power of two >= 16 with granularity block")
    elif block_size is not None:
        raise EmbgError(f"{where}: {group}.block_size conflicts with granularity {granularity!r}")
    algorithm = raw.get("algorithm", "min-max")
    if algorithm not in ALGORITHMS:
        raise EmbgError(f"{where}: {group}.algorithm must be one of {list(ALGORITHMS)}")
    if algorithm == "qat-grid" and (granularity != "block" or block_size != 32):
        raise EmbgError(f"{where}: {group}: qat-grid needs granularity block with block_size 32 (the Q4_0/Q8_0 grid)")
    activations = raw.get("activations", default_activations)
    if activations not in ACTIVATIONS:
        raise EmbgError(f"{where}: {group}.activations must be one of {list(ACTIVATIONS)}: {FP16_REASON}")
    return GroupRule(bits, granularity, block_size, algorithm, activations)


def parse_recipe(data: Any, where: str = "recipe") -> QuantRecipe:
    if not isinstance(data, dict):
        raise EmbgError(f"{where}: a recipe is a JSON object")
    unknown = set(data) - RECIPE_FIELDS
    if unknown:
        raise EmbgError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(RECIPE_FIELDS)}")
    name = data.get("name")
    if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
        raise EmbgError(f"{where}: 'name' must be a short identifier such as int4-custom")
    activations = data.get("activations", "fp32")
    if activations not in ACTIVATIONS:
        raise EmbgError(f"{where}: activations must be one of {list(ACTIVATIONS)}: {FP16_REASON}")
    rules_raw = data.get("rules")
    if not isinstance(rules_raw, dict):
        raise EmbgError(f"{where}: 'rules' must map each group to a rule")
    unknown_groups = set(rules_raw) - set(GROUPS)
    if unknown_groups:
        raise EmbgError(f"{where}: unknown group(s) {sorted(unknown_groups)}; groups are {list(GROUPS)}")
    missing = [g for g in GROUPS if g not in rules_raw]
    if missing:
        raise EmbgError(f"{where}: no rule for group(s) {missing}; give every group a rule (bits 32 keeps it float)")
    rules = {g: _parse_rule(g, rules_raw[g], activations, where) for g in GROUPS}
    smoothing = _parse_smoothing(data.get("smoothing"), rules, where)
    return QuantRecipe(name, str(data.get("description", "")), rules, smoothing)


def _parse_smoothing(raw: Any, rules: dict[str, GroupRule], where: str) -> dict[str, float] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise EmbgError(f"{where}: 'smoothing' must be an object such as {{\"alpha\": 0.5}}")
    unknown = set(raw) - SMOOTHING_FIELDS
    if unknown:
        raise EmbgError(f"{where}: unknown field(s) {sorted(unknown)} in smoothing; allowed: {sorted(SMOOTHING_FIELDS)}")
    alpha = raw.get("alpha")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
        raise EmbgError(f"{where}: smoothing.alpha must be a number in (0, 1], got {alpha!r}")
    decoder = [rules[g] for g in ("attention", "projections", "feed_forward")]
    if all(rule.is_float for rule in decoder):
        raise EmbgError(f"{where}: smoothing conflicts with float attention/projections/feed_forward "
                        "(it only matters for quantized decoder weights)")
    if any(rule.algorithm == "qat-grid" for rule in rules.values()):
        raise EmbgError(f"{where}: smoothing conflicts with algorithm qat-grid (scaling moves weights off their QAT grid)")
    return {"alpha": float(alpha)}


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("embg.quantize.presets").iterdir() if p.name.endswith(".json"))


def load_recipe(name_or_path: str) -> QuantRecipe:
    """A built-in preset by name, or a user recipe file (JSON)."""
    path = Path(name_or_path)
    if name_or_path in preset_names():
        text = resources.files("embg.quantize.presets").joinpath(f"{name_or_path}.json").read_text(encoding="utf-8")
        where = f"preset {name_or_path}"
    elif path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise EmbgError(f"recipe file {path} not found")
        try:
            text, where = path.read_text(encoding="utf-8"), str(path)
        except UnicodeDecodeError as exc:
            raise EmbgError(f"recipe file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                            "save it as UTF-8 JSON") from exc
        except OSError as exc:
            raise EmbgError(f"recipe file {path} cannot be read: {exc.strerror or exc}") from exc
    else:
        raise EmbgError(f"unknown recipe {name_or_path!r}; presets: {', '.join(preset_names())}, or pass a .json file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EmbgError(f"{where} is not valid JSON: {exc}") from exc
    return parse_recipe(data, where)


def recipe_for_bits(bits: int) -> QuantRecipe:
    if bits not in BITS_TO_PRESET:
        if bits == 16:
            raise EmbgError("--bits 16 is refused: EmbeddingGemma's activations overflow fp16 (residuals reach ~1e5)")
        raise EmbgError(f"--bits must be one of {sorted(BITS_TO_PRESET)}, got {bits}")
    return load_recipe(BITS_TO_PRESET[bits])
