"""Quantization recipes as data.

A recipe names one rule per layer group. Groups are fixed names that each target backend maps
onto its own op/tensor names, so adding a scheme means adding one JSON file, not a code path.

Groups:
  embedding     the token embedding table (embed_tokens)
  attention     query/key/value projections (q_proj, k_proj, v_proj)
  projections   the attention output projection (o_proj)
  feed_forward  gate_proj, up_proj, down_proj
  head          the sentence-transformers Dense layers (2_Dense, 3_Dense)

A group may instead be split into one rule per part (``"q_proj"``, ``"k_proj"``, ``"v_proj"``
in place of ``"attention"``; embg/quantize/groups.py): every weight gets exactly one rule, a group
and one of its parts together are an error, so no precedence is ever implied.

Rule fields: bits (32 = keep float, 16 = fp16, 8, 6, 4), granularity (channel | block), block_size
(with block), algorithm, activations (fp32 | dynamic_int8_per_row | dynamic_int8). bits 6: linear
weights in blocks (gptq or min-max), ONNX only (embg/quantize/int6_storage.py). Algorithms:
  min-max   the target's own quantizer derives scales from each block's / channel's range
  qat-grid  the checkpoint's exact Q4_0/Q8_0 integers and scales (QAT checkpoints)
  gptq      calibrated on real text: GPTQ onto the positive-scale int4 (or int6) block grid (linear layers)
  mse-clip  per-block scale with the least squared error, no calibration (any int4 block weight;
            the embedding table's choice, as a lookup table has no inputs to calibrate on)
qat-grid, gptq and mse-clip are computed by embg and carried into the file exactly (read back).
Unknown or conflicting fields are errors, never silently ignored.

Activations: ``dynamic_int8_per_row`` quantizes each token (row) with its own scale at run time,
so an embedding never depends on its batch neighbours or padding. ``dynamic_int8`` is ONNX
Runtime's ``quantize_dynamic``: ONE scale over the whole [batch, sequence, hidden] tensor, so
embeddings change with what else is in the batch; kept for recipes that ask for it. LiteRT's
dynamic-range kernels quantize per row either way. fp16 activations come only with bits 16 on
the fp16-safe graph (below); there is no ``activations`` value for them.

Optional top-level ``"layer_rules": {"0-10": {"down_proj": rule, ...}, "16,21-23": {...}}``: rules that
replace the recipe's own for the decoder layers listed (indices from 0, ranges ``a-b``, commas). Keys are
decoder parts or groups (attention, projections, feed_forward); a layer and part covered by two entries
is an error, so no precedence is ever implied. For spending a size budget where the layers need it: the
real checkpoint's late layers cost far more at int4 than its early ones (bench/weight_agreement.py
``--layers``). No bits 16 there (fp16 is every weight at once).

Optional top-level ``"rotation": {"block": 128, "table": true, "down": false}``: fixed Hadamard
rotations of the decoder's q/k/v, o and gate/up inputs (blocks of ``block``), with ``table`` of the
embedding table and with ``down`` of down_proj's input (one more product per layer; ``"auto"``: only
in the layers where it lowers the rounding error the next layers see, measured on the calibration
texts, embg/quantize/down_guard.py), folded in before calibration (embg/quantize/rotation.py); the
fp32 function is unchanged and int4 blocks fit the rotated weights better. Not with qat-grid (it moves weights off their grid).

Optional top-level ``"smoothing": {"alpha": a}`` (0 < a <= 1): SmoothQuant-style scales folded
into the graph before export (embg/quantize/smoothing.py); the fp32 function is unchanged.

Optional top-level ``"attention_products": "int8"`` (default "fp32"): the two activation x
activation products of every layer (scores, weighted values) in int8 with per-row scales
(embg/quantize/onnx_attention.py). ONNX only; LiteRT notes it and keeps them float. It conflicts
with bits 16 (an fp16 graph keeps its products in fp16).

Optional top-level ``"float_channels": n`` (default 0): the n input channels of each per-row int8
activation with the largest calibrated magnitude stay float (a small float product beside the int8 one;
embg/quantize/channel_peaks.py), so a token's few outlier channels no longer set the int8 step of all
its others. ``{"onnx": n, "tflite": m}`` gives each target its own count (a missing target: 0), as the
float weight columns cost bytes (~8 MB at 16 on the real checkpoint). ONNX splits the activation in
its quantized graph (embg/quantize/onnx_backend.py), LiteRT in the export graph before conversion
(embg/quantize/litert_split.py). Needs ``dynamic_int8_per_row`` activations.

Optional top-level ``"float_channel_rows": "float16"`` (default "float32"): how ONNX stores the float
channels' weight rows of weights that are not calibrated or QAT grids (a grid's rows are gathered at load
from its own integers x scales and cost no bytes). float16 halves them (0.8 of the real ``int4`` file's
184 MB) at a relative rounding of 2^-11 per weight; float32 keeps the numbers exactly as measured. Needs
ONNX float channels; LiteRT keeps its float columns float32.

Optional top-level ``"residual_pass": [part, ...]`` (default none): those parts' per-row int8
activations are quantized twice, the second time the rounding residual of the first, and the two int8
products on the same weight added (about 15 bits of activation precision for one more int8 GEMM, no
extra bytes). For the input of ``down_proj``, whose per-row int8 rounding was most of the int8
preset's retrieval drift on the real checkpoint (docs/onnx-int8.md). On LiteRT the graph computes
XNNPACK's own row grid for the first pass (embg/quantize/litert_split.py). Each part needs integer
weights with ``dynamic_int8_per_row`` activations, or fp32 ones: ONNX keeps those float (nothing to
pass twice), LiteRT runs them as per-row int8 and gives them the pass (``int4-qat-exact``).
``{"onnx": [...], "tflite": [...]}`` gives each target its own parts (a missing target: none): the
second pass costs LiteRT ~10% of its time, and there its buckets already make texts batch-independent.

Optional top-level ``"fp16_safe": {"residual_scale": a}`` (a power of two <= 1): the fp16-safe
rewrite of the graph (embg/model/fp16_safe.py: residual scaled by a, RMSNorm restated); the fp32
function is unchanged and the manifest marks the bundle safe for fp16 activations (a GPU's or an
NPU's). EmbeddingGemma's residual channels reach ~1e5 > fp16's 65504, so fp16 is refused without
it: ``bits 16`` (fp16 weights and activations) needs ``fp16_safe`` and every group (or part) at
bits 16.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from embg.errors import EmbgError
from embg.quantize.groups import GROUP_OF_PART, GROUP_PARTS, LAYERED_GROUPS, LAYERED_PARTS, layer_of, part_of

GROUPS = tuple(GROUP_PARTS)
BITS = (32, 16, 8, 6, 4)
GRANULARITIES = ("channel", "block")
ALGORITHMS = ("min-max", "qat-grid", "gptq", "mse-clip")
CALIBRATED_ALGORITHMS = ("gptq", "mse-clip")  # integers and scales computed by embg before export
EXACT_GRID_ALGORITHMS = ("qat-grid", *CALIBRATED_ALGORITHMS)  # carried into the file as given, read back
CALIBRATED_BITS = {"gptq": (4, 6), "mse-clip": (4,)}
SIX_BIT_ALGORITHMS = ("gptq", "min-max")
SIX_BIT_REASON = ("stored 6 bits per weight and widened to int8 at load; LiteRT (XNNPACK) has no 6-bit weights, "
                  "so --target tflite refuses it")
CALIBRATED_BLOCKS = (16, 32, 64, 128)  # GPTQ updates columns in steps of 128, so a block must divide it
PER_ROW = "dynamic_int8_per_row"
ACTIVATIONS = ("fp32", PER_ROW, "dynamic_int8")
ACTIVATION_TEXT = {"fp32": "float activations", PER_ROW: "dynamic int8 activations per row",
                   "dynamic_int8": "dynamic int8 activations per tensor"}
BITS_TO_PRESET = {32: "fp32", 16: "fp16", 8: "int8", 4: "int4"}
RULE_FIELDS = {"bits", "granularity", "block_size", "algorithm", "activations"}
RECIPE_FIELDS = {"name", "description", "activations", "rules", "layer_rules", "smoothing", "attention_products",
                 "fp16_safe", "float_channels", "float_channel_rows", "residual_pass", "rotation"}
FLOAT_ROW_DTYPES = ("float32", "float16")
MAX_FLOAT_CHANNELS = 128
ATTENTION_PRODUCTS = ("fp32", "int8")
SMOOTHING_FIELDS = {"alpha"}
ROTATION_FIELDS = {"block", "table", "down"}
ROTATION_BLOCKS = (16, 32, 64, 128, 256)
FP16_SAFE_FIELDS = {"residual_scale"}
FLOAT_CHANNEL_TARGETS = ("onnx", "tflite")  # the targets that split activations (export target names)
FP16_REASON = "fp16 activations overflow on this model (residual channels reach ~1e5 > fp16's 65504)"
FP16_HINT = 'use the fp16 preset (--bits 16), or add "fp16_safe": {"residual_scale": 0.0625} and bits 16 on every group'


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

    @property
    def is_integer(self) -> bool:
        return self.bits < 16

    @property
    def dynamic_activations(self) -> bool:
        """int8 activations quantized at run time (per row or per tensor)."""
        return self.activations != "fp32"

    @property
    def carries_grid(self) -> bool:
        """Integers and scales come from embg (QAT grid or calibration), not from the target's quantizer."""
        return self.algorithm in EXACT_GRID_ALGORITHMS

    def to_dict(self) -> dict[str, Any]:
        """As a recipe file writes it: a float rule (bits 32 or 16) is its bits alone."""
        if not self.is_integer:
            return {"bits": self.bits}
        return {k: v for k, v in asdict(self).items() if v is not None}

    def describe(self) -> str:
        if self.is_float:
            return "float32"
        if self.bits == 16:
            return "float16 weights and activations"
        gran = f"block{self.block_size}" if self.granularity == "block" else "per-channel"
        acts = ACTIVATION_TEXT[self.activations]
        return f"int{self.bits} {gran} {ALGORITHM_TEXT[self.algorithm]}, {acts}"


ALGORITHM_TEXT = {"min-max": "min-max", "qat-grid": "exact QAT grid", "gptq": "GPTQ-calibrated",
                  "mse-clip": "MSE-clipped scales"}


@dataclass(frozen=True)
class LayerRules:
    """One ``layer_rules`` entry: rules replacing the recipe's for the listed decoder layers."""
    spec: str  # the layers as written ("0,3-5")
    layers: frozenset[int]
    rules: dict[str, GroupRule]  # decoder part or group -> rule

    def key_for(self, part: str) -> str | None:
        """The key of this entry's rule for ``part``, or None when the entry leaves the part alone."""
        return next((key for key in (part, GROUP_OF_PART[part]) if key in self.rules), None)


@dataclass(frozen=True)
class QuantRecipe:
    name: str
    description: str
    rules: dict[str, GroupRule] = field(default_factory=dict)
    smoothing: dict[str, float] | None = None  # {"alpha": a}: SmoothQuant scales folded before export
    attention_products: str = "fp32"  # "int8": scores and weighted values in int8 (ONNX)
    fp16_safe: dict[str, float] | None = None  # {"residual_scale": a}: the fp16-safe graph rewrite
    float_channels: dict[str, int] = field(default_factory=dict)  # target -> input channels of each per-row
    # int8 activation kept float (largest calibrated); a target not named keeps none
    float_channel_rows: str = "float32"  # ONNX: dtype of the stored float-channel rows of non-grid weights
    residual_pass: dict[str, tuple[str, ...]] = field(default_factory=dict)  # target -> parts whose int8
    # activations get a second pass on their rounding residual; a target not named gives none
    layer_rules: tuple[LayerRules, ...] = ()  # per-layer replacements of ``rules`` (no layer in two for a part)
    rotation: dict[str, Any] | None = None  # {"block": b, "table": bool}: embg/quantize/rotation.py before calibration

    def float_channels_on(self, target: str) -> int:
        """How many input channels of each per-row int8 activation ``target`` keeps float."""
        return self.float_channels.get(target, 0)

    def residual_pass_on(self, target: str) -> tuple[str, ...]:
        """The parts whose per-row int8 activations ``target`` quantizes twice (rows, then their residual)."""
        return self.residual_pass.get(target, ())

    def rule_key(self, part: str) -> str:
        """The key of the rule that governs ``part`` (a part such as ``v_proj``, or a group name):
        the part itself when the recipe splits its group, else the group."""
        if part in self.rules:
            return part
        group = GROUP_OF_PART.get(part, part)
        if group in self.rules:
            return group
        raise KeyError(f"recipe {self.name} has no rule covering {part!r} (its group is split into parts)")

    def rule(self, part: str) -> GroupRule:
        """The recipe-wide rule for a weight's part (``q_proj``, ``embedding``, ...) or for an unsplit group;
        a weight's own rule, which ``layer_rules`` may replace, is ``rule_for(name)``."""
        return self.rules[self.rule_key(part)]

    def rule_key_for(self, name: str) -> str:
        """The key of the rule governing weight ``name``: ``layers 16-23 gate_proj`` when a ``layer_rules``
        entry covers its layer and part, else the recipe-wide key (``rule_key``)."""
        part = self._part(name)
        entry = self._layer_entry(name, part)
        return f"layers {entry.spec} {entry.key_for(part)}" if entry else self.rule_key(part)

    def rule_for(self, name: str) -> GroupRule:
        """The rule for the weight called ``name`` (a torch, ONNX or planned LiteRT parameter path)."""
        part = self._part(name)
        entry = self._layer_entry(name, part)
        return entry.rules[entry.key_for(part)] if entry else self.rule(part)

    def _part(self, name: str) -> str:
        part = part_of(name)
        if part is None:
            raise KeyError(f"weight {name!r} belongs to no recipe group")
        return part

    def _layer_entry(self, name: str, part: str) -> LayerRules | None:
        layer = layer_of(name) if self.layer_rules and part in LAYERED_PARTS else None
        if layer is None:
            return None
        return next((entry for entry in self.layer_rules if layer in entry.layers and entry.key_for(part)), None)

    def all_rules(self) -> list[GroupRule]:
        """Every rule the recipe can apply: recipe-wide and per-layer."""
        return [*self.rules.values(), *(rule for entry in self.layer_rules for rule in entry.rules.values())]

    def layers_named(self) -> set[int]:
        """The decoder layer indices ``layer_rules`` names (checked against the model at export)."""
        return set().union(*(entry.layers for entry in self.layer_rules))

    @property
    def is_float(self) -> bool:
        return all(rule.is_float for rule in self.all_rules()) and self.attention_products == "fp32"

    @property
    def is_fp16(self) -> bool:
        """fp16 weights and activations (every group at bits 16, on the fp16-safe graph)."""
        return all(rule.bits == 16 for rule in self.all_rules())

    @property
    def uses_qat_grid(self) -> bool:
        return any(rule.algorithm == "qat-grid" for rule in self.all_rules())

    @property
    def is_calibrated(self) -> bool:
        return any(rule.algorithm in CALIBRATED_ALGORITHMS for rule in self.all_rules())

    def _layer_rules_dict(self) -> dict[str, Any]:
        return {entry.spec: {key: rule.to_dict() for key, rule in entry.rules.items()} for entry in self.layer_rules}

    def weight_rules(self) -> dict[str, Any]:
        """What decides each weight's storage, as the recipe file writes it (the calibration cache's key)."""
        rules: dict[str, Any] = {g: r.to_dict() for g, r in self.rules.items()}
        if self.layer_rules:
            rules["layer_rules"] = self._layer_rules_dict()
        return rules

    def to_dict(self) -> dict[str, Any]:
        data = {"name": self.name, "description": self.description,
                "rules": {g: r.to_dict() for g, r in self.rules.items()}}
        if self.layer_rules:
            data["layer_rules"] = self._layer_rules_dict()
        if self.smoothing:
            data["smoothing"] = dict(self.smoothing)
        if self.rotation:
            data["rotation"] = dict(self.rotation)
        if self.attention_products != "fp32":
            data["attention_products"] = self.attention_products
        if self.fp16_safe:
            data["fp16_safe"] = dict(self.fp16_safe)
        counts = {t: self.float_channels_on(t) for t in FLOAT_CHANNEL_TARGETS}
        if any(counts.values()):
            same = len(set(counts.values())) == 1
            data["float_channels"] = counts[FLOAT_CHANNEL_TARGETS[0]] if same else counts
        if self.float_channel_rows != "float32":
            data["float_channel_rows"] = self.float_channel_rows
        passes = {t: list(self.residual_pass_on(t)) for t in FLOAT_CHANNEL_TARGETS}
        if any(passes.values()):
            same = all(parts == passes[FLOAT_CHANNEL_TARGETS[0]] for parts in passes.values())
            data["residual_pass"] = passes[FLOAT_CHANNEL_TARGETS[0]] if same else passes
        return data

    def summary(self) -> str:
        """The recipe as the CLI prints it: the description's first sentence (the whole is in the manifest and
        the README), then one line per rule and per graph change."""
        first = re.split(r"(?<=[.!?])\s", self.description.strip(), maxsplit=1)[0]
        lines = [f"recipe {self.name}: {first}"]
        lines += [f"  {key:<13} {rule.describe()}" for key, rule in self.rules.items()]
        for entry in self.layer_rules:
            lines += [f"  layers {entry.spec}: {key} {rule.describe()}" for key, rule in entry.rules.items()]
        if self.smoothing:
            lines.append(f"  smoothing     SmoothQuant scales folded into norms/weights, alpha {self.smoothing['alpha']}")
        if self.rotation:
            lines.append(f"  rotation      Hadamard blocks of {self.rotation['block']} on q/k/v, o and gate/up inputs"
                         + (", embedding table rotated" if self.rotation["table"] else "")
                         + {True: ", down_proj input rotated", "auto": ", down_proj input rotated where it "
                            "measures better per layer"}.get(self.rotation.get("down"), ""))
        if self.attention_products != "fp32":
            lines.append(f"  attention products (scores, values): {self.attention_products}, per-row scales (ONNX)")
        if self.fp16_safe:
            lines.append(f"  fp16_safe     residual x {self.fp16_safe['residual_scale']:g} folded into norms, RMSNorm "
                         "restated: safe for fp16 activations")
        if any(self.float_channels.values()):
            per_target = ", ".join(f"{n} on {t}" for t, n in self.float_channels.items())
            lines.append(f"  float_channels largest input channels of each int8 activation kept float: {per_target}")
            if self.float_channel_rows != "float32":
                lines.append(f"  float_channel_rows {self.float_channel_rows} (ONNX; grids gather theirs at load)")
        if self.residual_pass:
            per_target = "; ".join(f"{', '.join(parts)} on {t}" for t, parts in self.residual_pass.items())
            lines.append(f"  residual_pass {per_target}: int8 activations quantized twice, the second time their "
                         "rounding residual")
        return "\n".join(lines)


def _parse_rule(group: str, raw: Any, default_activations: str, where: str) -> GroupRule:
    if not isinstance(raw, dict):
        raise EmbgError(f"{where}: rule for {group!r} must be an object")
    unknown = set(raw) - RULE_FIELDS
    if unknown:
        raise EmbgError(f"{where}: unknown field(s) {sorted(unknown)} in rule {group!r}; allowed: {sorted(RULE_FIELDS)}")
    bits = raw.get("bits")
    if bits not in BITS:
        raise EmbgError(f"{where}: {group}.bits must be one of {list(BITS)}, got {bits!r}")
    if bits in (32, 16):
        extra = set(raw) - {"bits"}
        if extra:
            raise EmbgError(f"{where}: {group} is float (bits {bits}); fields {sorted(extra)} conflict with that")
        return GroupRule(bits=bits)
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
    if bits == 6 and (granularity != "block" or algorithm not in SIX_BIT_ALGORITHMS or group == "embedding"):
        raise EmbgError(f"{where}: {group}: bits 6 is for linear weights in blocks (granularity block, algorithm "
                        f"{' or '.join(SIX_BIT_ALGORITHMS)}), not the embedding table; ONNX only: {SIX_BIT_REASON}")
    if algorithm == "qat-grid" and (granularity != "block" or block_size != 32):
        raise EmbgError(f"{where}: {group}: qat-grid needs granularity block with block_size 32 (the Q4_0/Q8_0 grid)")
    if algorithm in CALIBRATED_ALGORITHMS:
        if bits not in CALIBRATED_BITS[algorithm] or granularity != "block" or block_size not in CALIBRATED_BLOCKS:
            raise EmbgError(f"{where}: {group}: {algorithm} needs bits {' or '.join(map(str, CALIBRATED_BITS[algorithm]))}"
                            f", granularity block and a block_size in {list(CALIBRATED_BLOCKS)}")
        if algorithm == "gptq" and group == "embedding":
            raise EmbgError(f"{where}: embedding: gptq needs a layer's inputs and a lookup table has none; "
                            "use algorithm mse-clip")
    activations = raw.get("activations", default_activations)
    if activations not in ACTIVATIONS:
        raise EmbgError(f"{where}: {group}.activations must be one of {list(ACTIVATIONS)}: {FP16_REASON}; {FP16_HINT}")
    if bits == 6 and activations != PER_ROW and group != "head":
        raise EmbgError(f"{where}: {group}: bits 6 runs on per-row int8 activations (activations {PER_ROW}; only "
                        "the head, one pooled row per text, may keep fp32): onnxruntime has no 6-bit MatMulNBits")
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
        raise EmbgError(f"{where}: activations must be one of {list(ACTIVATIONS)}: {FP16_REASON}; {FP16_HINT}")
    rules_raw = data.get("rules")
    if not isinstance(rules_raw, dict):
        raise EmbgError(f"{where}: 'rules' must map each group to a rule")
    keys = _rule_keys(rules_raw, where)
    rules = {key: _parse_rule(key, rules_raw[key], activations, where) for key in keys}
    layer_rules = _parse_layer_rules(data.get("layer_rules", {}), activations, where)
    every_rule = {**rules, **{f"layers {e.spec} {k}": r for e in layer_rules for k, r in e.rules.items()}}
    smoothing = _parse_smoothing(data.get("smoothing"), every_rule, where)
    products = data.get("attention_products", "fp32")
    if products not in ATTENTION_PRODUCTS:
        raise EmbgError(f"{where}: attention_products must be one of {list(ATTENTION_PRODUCTS)}, got {products!r}")
    fp16_safe = _parse_fp16_safe(data.get("fp16_safe"), rules, where)
    if products != "fp32" and any(rule.bits == 16 for rule in rules.values()):
        raise EmbgError(f"{where}: attention_products {products} conflicts with bits 16 "
                        "(an fp16 graph keeps its attention products in fp16)")
    float_channels = _parse_float_channels(data.get("float_channels", 0), rules, where)
    residual_pass = _parse_residual_pass(data.get("residual_pass", []), rules, where)
    _check_layer_residual_pass(layer_rules, residual_pass, where)
    row_dtype = data.get("float_channel_rows", "float32")
    if row_dtype not in FLOAT_ROW_DTYPES:
        raise EmbgError(f"{where}: float_channel_rows must be one of {list(FLOAT_ROW_DTYPES)}, got {row_dtype!r}")
    if row_dtype != "float32" and not float_channels.get("onnx"):
        raise EmbgError(f"{where}: float_channel_rows {row_dtype} stores ONNX float channels' rows, and the recipe "
                        "keeps no float channels on onnx")
    rotation = _parse_rotation(data.get("rotation"), every_rule, where)
    return QuantRecipe(name, str(data.get("description", "")), rules, smoothing,
                       attention_products=products, fp16_safe=fp16_safe, float_channels=float_channels,
                       float_channel_rows=row_dtype, residual_pass=residual_pass, layer_rules=layer_rules,
                       rotation=rotation)


def _parse_layer_rules(raw: Any, default_activations: str, where: str) -> tuple[LayerRules, ...]:
    if not isinstance(raw, dict):
        raise EmbgError(f"{where}: layer_rules must map decoder layers such as \"16-23\" to rules "
                        "(e.g. {\"16-23\": {\"down_proj\": {\"bits\": 8, \"granularity\": \"channel\"}}})")
    allowed = (*LAYERED_GROUPS, *LAYERED_PARTS)
    entries, covered = [], {}
    for spec, rules_raw in raw.items():
        at = f"{where}: layer_rules {spec!r}"
        layers = _parse_layers(spec, at)
        if not isinstance(rules_raw, dict) or not rules_raw:
            raise EmbgError(f"{at} must map decoder parts or groups to rules")
        unknown = set(rules_raw) - set(allowed)
        if unknown:
            raise EmbgError(f"{at}: {sorted(unknown)} are not decoder parts or groups; use {', '.join(allowed)}")
        rules = {key: _parse_rule(key, value, default_activations, at) for key, value in rules_raw.items()}
        for key, rule in rules.items():
            if rule.bits == 16:
                raise EmbgError(f"{at}: {key}.bits 16 is for every weight at once (the fp16 preset), not per layer")
            for part in GROUP_PARTS.get(key, (key,)):
                for layer in layers:
                    if (layer, part) in covered:
                        raise EmbgError(f"{at}: layer {layer}'s {part} already has a rule from "
                                        f"{covered[layer, part]!r}; give each layer and part one rule")
                    covered[layer, part] = spec
        entries.append(LayerRules(spec, frozenset(layers), rules))
    return tuple(entries)


def _parse_layers(spec: str, at: str) -> list[int]:
    """\"0,3-5\" -> [0, 3, 4, 5]."""
    layers: list[int] = []
    for piece in spec.split(","):
        low, _, high = piece.strip().partition("-")
        if not low.isdigit() or (high and not high.isdigit()) or (high and int(high) < int(low)):
            raise EmbgError(f"{at}: layers must be indices from 0 and ranges such as \"0,3-5,16-23\"")
        layers.extend(range(int(low), int(high or low) + 1))
    if len(set(layers)) != len(layers):
        raise EmbgError(f"{at}: a layer is listed twice")
    return layers


def _check_layer_residual_pass(layer_rules: tuple[LayerRules, ...], residual_pass: dict[str, tuple[str, ...]],
                               where: str) -> None:
    """A part given a residual pass keeps what that needs in every layer that has its own rule for it."""
    parts = {part for target_parts in residual_pass.values() for part in target_parts}
    for entry in layer_rules:
        for part in sorted(parts):
            key = entry.key_for(part)
            if key:
                _check_residual_rule(part, key, entry.rules[key], f"{where}: layer_rules {entry.spec!r}")


def _parse_float_channels(raw: Any, rules: dict[str, GroupRule], where: str) -> dict[str, int]:
    """target -> channel count, from an integer (every target) or an object naming targets."""
    counts = raw if isinstance(raw, dict) else dict.fromkeys(FLOAT_CHANNEL_TARGETS, raw)
    unknown = set(counts) - set(FLOAT_CHANNEL_TARGETS)
    if unknown:
        raise EmbgError(f"{where}: float_channels names unknown target(s) {sorted(unknown)}; "
                        f"targets: {list(FLOAT_CHANNEL_TARGETS)}")
    for count in counts.values():
        if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= MAX_FLOAT_CHANNELS:
            raise EmbgError(f"{where}: float_channels must be an integer from 0 to {MAX_FLOAT_CHANNELS} "
                            f"(or an object of them per target), got {raw!r}")
    if any(counts.values()) and not any(rule.activations == PER_ROW for rule in rules.values()):
        raise EmbgError(f"{where}: float_channels splits {PER_ROW} activations, and no rule has them")
    return {target: count for target, count in counts.items() if count}


def _parse_residual_pass(raw: Any, rules: dict[str, GroupRule], where: str) -> dict[str, tuple[str, ...]]:
    """target -> the parts named by ``residual_pass`` (a list for every target, or an object of lists per
    target): linear parts with integer weights and per-row int8 activations, or float ones (ONNX keeps
    those float and needs no pass; LiteRT, which has no float-activation integer product, runs them with
    per-row int8 rows and gives those the pass)."""
    lists = raw if isinstance(raw, dict) else dict.fromkeys(FLOAT_CHANNEL_TARGETS, raw)
    unknown = set(lists) - set(FLOAT_CHANNEL_TARGETS)
    if unknown:
        raise EmbgError(f"{where}: residual_pass names unknown target(s) {sorted(unknown)}; "
                        f"targets: {list(FLOAT_CHANNEL_TARGETS)}")
    passes = {target: _residual_parts(parts, rules, where) for target, parts in lists.items()}
    return {target: parts for target, parts in passes.items() if parts}


def _residual_parts(raw: Any, rules: dict[str, GroupRule], where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(part, str) for part in raw):
        raise EmbgError(f"{where}: residual_pass must be a list of parts, e.g. [\"down_proj\"] (or an object of "
                        "them per target)")
    linear = sorted(set(GROUP_OF_PART) - set(GROUPS))  # q_proj ... down_proj
    for part in raw:
        if part not in linear:
            raise EmbgError(f"{where}: residual_pass names {part!r}; it takes linear parts: {', '.join(linear)}")
        key = part if part in rules else GROUP_OF_PART[part]
        _check_residual_rule(part, key, rules[key], where)
    return tuple(dict.fromkeys(raw))


def _check_residual_rule(part: str, key: str, rule: GroupRule, where: str) -> None:
    """A part given a residual pass needs integer weights with per-row (or fp32) activations."""
    if not rule.is_integer or rule.activations not in (PER_ROW, "fp32"):
        raise EmbgError(f"{where}: residual_pass {part!r} needs integer weights with {PER_ROW} (or fp32) "
                        f"activations in its rule ({key})")


def _rule_keys(rules_raw: dict[str, Any], where: str) -> list[str]:
    """The rule keys in model order: each group, or all of its parts; never both, never a gap."""
    unknown = set(rules_raw) - set(GROUPS) - set(GROUP_OF_PART)
    if unknown:
        raise EmbgError(f"{where}: unknown group(s) {sorted(unknown)}; groups are {list(GROUPS)} "
                        f"(or their parts: {sorted(set(GROUP_OF_PART) - set(GROUPS))})")
    keys: list[str] = []
    for group, parts in GROUP_PARTS.items():
        given = [p for p in parts if p in rules_raw and p != group]
        if group in rules_raw and given:
            raise EmbgError(f"{where}: rules for both {group!r} and its part(s) {given}; give one or the other")
        if group in rules_raw:
            keys.append(group)
        elif given and len(given) == len(parts):
            keys.extend(parts)
        elif given:
            missing = [p for p in parts if p not in given]
            raise EmbgError(f"{where}: {group} is split into parts but {missing} have no rule")
        else:
            raise EmbgError(f"{where}: no rule for group {group!r}; give every group a rule (bits 32 keeps it float)")
    return keys


def _parse_fp16_safe(raw: Any, rules: dict[str, GroupRule], where: str) -> dict[str, float] | None:
    fp16_groups = [g for g, rule in rules.items() if rule.bits == 16]
    if raw is None:
        if fp16_groups:
            raise EmbgError(f"{where}: {fp16_groups[0]}.bits 16 is refused without \"fp16_safe\": {FP16_REASON}; "
                            f"{FP16_HINT}")
        return None
    scale = _numeric_object(raw, "fp16_safe", "residual_scale", FP16_SAFE_FIELDS, 0.0625, where)
    if scale is None or not 0 < scale <= 1 or math.frexp(scale)[0] != 0.5:
        raise EmbgError(f"{where}: fp16_safe.residual_scale must be a power of two in (0, 1] such as 0.0625, "
                        f"got {scale!r}")
    if fp16_groups and len(fp16_groups) != len(rules):
        raise EmbgError(f"{where}: bits 16 applies to every group at once (fp16 weights and activations); "
                        f"groups {sorted(set(rules) - set(fp16_groups))} are not bits 16")
    return {"residual_scale": float(scale)}


def _numeric_object(raw: Any, name: str, key: str, allowed: set[str], example: float, where: str) -> float | None:
    """``raw[key]`` of a top-level object field such as {"alpha": 0.5}: None when it is not a number."""
    if not isinstance(raw, dict):
        raise EmbgError(f"{where}: '{name}' must be an object such as {{\"{key}\": {example}}}")
    unknown = set(raw) - allowed
    if unknown:
        raise EmbgError(f"{where}: unknown field(s) {sorted(unknown)} in {name}; allowed: {sorted(allowed)}")
    value = raw.get(key)
    return None if isinstance(value, bool) or not isinstance(value, (int, float)) else float(value)


def _parse_rotation(raw: Any, rules: dict[str, GroupRule], where: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    example = '{"block": 128, "table": true}'
    if not isinstance(raw, dict) or set(raw) - ROTATION_FIELDS:
        raise EmbgError(f"{where}: 'rotation' must be an object such as {example} (fields {sorted(ROTATION_FIELDS)})")
    block, table, down = raw.get("block", 128), raw.get("table", True), raw.get("down", False)
    if isinstance(block, bool) or block not in ROTATION_BLOCKS:
        raise EmbgError(f"{where}: rotation.block must be one of {list(ROTATION_BLOCKS)}, got {block!r}")
    if not isinstance(table, bool):
        raise EmbgError(f"{where}: rotation.table must be true or false, got {table!r}")
    if not isinstance(down, bool) and down != "auto":
        raise EmbgError(f'{where}: rotation.down must be true, false or "auto" (chosen per layer on the '
                        f"calibration texts), got {down!r}")
    if any(rule.algorithm == "qat-grid" for rule in rules.values()):
        raise EmbgError(f"{where}: rotation conflicts with algorithm qat-grid (rotating moves weights off their QAT grid)")
    return {"block": int(block), "table": table, "down": down}


def _parse_smoothing(raw: Any, rules: dict[str, GroupRule], where: str) -> dict[str, float] | None:
    if raw is None:
        return None
    alpha = _numeric_object(raw, "smoothing", "alpha", SMOOTHING_FIELDS, 0.5, where)
    if alpha is None or not 0 < alpha <= 1:
        raise EmbgError(f"{where}: smoothing.alpha must be a number in (0, 1], got {alpha!r}")
    decoder = [rule for key, rule in rules.items() if GROUP_OF_PART.get(key, key) in ("attention", "projections",
                                                                                      "feed_forward")]
    if not any(rule.is_integer for rule in decoder):
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
        hint = "; 6-bit weights come in --recipe int4-rotated-int6 (ONNX only)" if bits == 6 else ""
        raise EmbgError(f"--bits must be one of {sorted(BITS_TO_PRESET)}, got {bits}{hint}")
    return load_recipe(BITS_TO_PRESET[bits])


def bits_of_preset(name: str) -> int | None:
    """The --bits value that names preset ``name``, or None for presets only --recipe names."""
    return {preset: bits for bits, preset in BITS_TO_PRESET.items()}.get(name)
