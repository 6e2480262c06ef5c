"""Quantize a float .tflite per a recipe with ai-edge-quantizer, and prove it did.

The quantizer matches recipe entries by regex on op output names and silently skips anything
it does not support (weight-only blockwise int4, GATHER, ...). So: every weight is identified by
value (its float data equals a known graph parameter), each op gets an exact-name rule built
from its group's rule, and afterwards every planned weight tensor is checked for the planned
type, or the export fails.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from embg.errors import ExportError
from embg.quantize import tflite_flatbuffer as fb
from embg.quantize.groups import part_of
from embg.quantize.recipe import ALGORITHMS, PER_ROW, GroupRule, QuantRecipe

# Exact-grid algorithms let the quantizer write min-max INT4 tensors, whose buffers are then overwritten.
ALGORITHM_KEYS = {name: "min_max_uniform_quantize" for name in ALGORITHMS}
FP16_ALGORITHM = "float_casting"  # ai-edge-quantizer's fp16 weights (DEQUANTIZE to float32 before the op)


@dataclass
class TflitePlan:
    entries: list[dict[str, Any]] = field(default_factory=list)
    expected: dict[tuple[int, int], tuple[str, str, GroupRule]] = field(default_factory=dict)  # (sg, op) -> (param, group, rule)
    param_of_tensor: dict[tuple[int, int], str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # group -> how LiteRT differs from the recipe


def litert_rule(op: str, rule: GroupRule) -> tuple[GroupRule, str | None]:
    """The closest rule LiteRT can execute, and a note when it differs from the recipe's.

    LiteRT has no sound weight-only mode (blockwise int4 is skipped silently; int8 and fp16 rebuild
    float weights at run time, RSS above fp32) and no blockwise int8, so those become dynamic-range
    int8 activations / per-channel int8, and the manifest says so.
    """
    notes = []
    if rule.bits == 16:  # fp16 weights, float compute: the GPU delegate reads them as they are
        return rule, None
    if not rule.dynamic_activations:  # XNNPACK's dynamic-range kernels quantize per row
        rule = GroupRule(rule.bits, rule.granularity, rule.block_size, rule.algorithm, PER_ROW)
        notes.append("float activations requested; LiteRT runs dynamic int8 activations (no sound weight-only mode)")
    if rule.bits == 8 and rule.granularity == "block":
        rule = GroupRule(8, "channel", None, "min-max", rule.activations)
        notes.append("int8 block 32 requested; LiteRT has no blockwise int8, so per-channel int8 min-max is used "
                     "(a Q8_0 grid is not carried exactly)")
    return rule, "; ".join(notes) or None


def _weight_config(rule: GroupRule) -> dict[str, Any]:
    if rule.bits == 16:
        return {"weight_tensor_config": {"num_bits": 16, "symmetric": True, "granularity": "CHANNELWISE",
                                         "dtype": "FLOAT"},
                "compute_precision": "FLOAT", "explicit_dequantize": True, "skip_checks": False,
                "min_weight_elements": 0}
    granularity = "CHANNELWISE" if rule.granularity == "channel" else f"BLOCKWISE_{rule.block_size}"
    return {
        "weight_tensor_config": {"num_bits": rule.bits, "symmetric": True, "granularity": granularity, "dtype": "INT"},
        "compute_precision": "INTEGER",
        "explicit_dequantize": False,
        "skip_checks": False,
        "min_weight_elements": 0,
    }


def param_digests(graph: torch.nn.Module) -> dict[str, str]:
    """sha1 of each 2-D parameter's float32 bytes, as stored by the converter ([out, in])."""
    digests = {}
    for name, value in graph.state_dict().items():
        if value.ndim == 2:
            digests[hashlib.sha1(np.ascontiguousarray(value.numpy(), dtype=np.float32).tobytes()).hexdigest()] = name
    return digests


def plan_quantization(model, graph: torch.nn.Module, recipe: QuantRecipe) -> TflitePlan:
    digests = param_digests(graph)
    plan = TflitePlan()
    groups_by_output: dict[tuple[str, str], set[str]] = defaultdict(set)
    rules_by_output: dict[tuple[str, str], GroupRule] = {}
    for use in fb.weight_uses(model):
        param = digests.get(use.digest or "")
        if param is None:
            raise ExportError(f"LiteRT weight {use.tensor_name!r} matches no graph parameter; cannot plan quantization")
        plan.param_of_tensor[(use.subgraph, use.tensor_index)] = param
        part = part_of(param)
        group = recipe.rule_key_for(param) if part else None
        rule = recipe.rule_for(param) if part else GroupRule()
        if rule.is_float:
            continue
        rule, note = litert_rule(use.op, rule)
        if note:
            plan.notes[group] = note
        plan.expected[(use.subgraph, use.op_index)] = (param, group, rule)
        key = (use.op, use.scope)
        groups_by_output[key].add(group)
        rules_by_output[key] = rule
    # One entry per (op type, rule) whose regex is an alternation of exact scopes: a regex per op
    # (~1000 on the full model) thrashes Python's regex cache inside the quantizer.
    scopes_by_rule: dict[tuple[str, GroupRule], list[str]] = defaultdict(list)
    for (op, scope), groups in groups_by_output.items():
        if len(groups) > 1:
            raise ExportError(f"LiteRT names ops of groups {sorted(groups)} alike ({scope!r}); a recipe cannot tell "
                              "them apart, give those groups the same rule")
        scopes_by_rule[(op, rules_by_output[(op, scope)])].append(scope)
    for (op, rule), scopes in scopes_by_rule.items():
        plan.entries.append({"regex": "^(?:" + "|".join(re.escape(s) for s in sorted(scopes)) + ")$",
                             "operation": op,
                             "algorithm_key": FP16_ALGORITHM if rule.bits == 16 else ALGORITHM_KEYS[rule.algorithm],
                             "op_config": _weight_config(rule)})
    return plan


def quantize_tflite(float_path: Path, out_path: Path, graph: torch.nn.Module, recipe: QuantRecipe) -> TflitePlan:
    from ai_edge_quantizer import quantizer

    model = fb.read_model(float_path)
    plan = plan_quantization(model, graph, recipe)
    if not plan.entries:
        raise ExportError(f"recipe {recipe.name} quantizes nothing in this model")
    result = quantizer.Quantizer(str(float_path), plan.entries).quantize()
    out_path.write_bytes(bytes(result.quantized_model))
    return plan


def verify_quantized(path: Path, plan: TflitePlan) -> dict[str, int]:
    """Each planned weight must now have the planned integer type (and block size); returns type counts."""
    model = fb.read_model(path)
    counts: dict[str, int] = defaultdict(int)
    # fp16 weights come through DEQUANTIZE ops inserted before their users: original op k is the
    # k-th op that is not one of them, and its weight is the DEQUANTIZE input
    inserted = {i: _inserted_dequantize(model, sg) for i, sg in enumerate(model.subgraphs)}
    for (sg_index, op_index), (param, group, rule) in plan.expected.items():
        subgraph = model.subgraphs[sg_index]
        op = inserted[sg_index][0][op_index]
        weight = int(op.inputs[fb.WEIGHT_OPS[fb.op_name(model, op)]])
        tensor = subgraph.tensors[inserted[sg_index][1].get(weight, weight)]
        kind = fb.type_name(tensor.type)
        want = "FLOAT16" if rule.bits == 16 else f"INT{rule.bits}"
        details = tensor.quantization.details if tensor.quantization else None
        block = getattr(details, "blockSize", None)
        if kind != want or (rule.granularity == "block") != (block is not None) or (block and block != rule.block_size):
            raise ExportError(f"{param} ({group}) was planned as {rule.describe()} but the file holds {kind}"
                              f"{f' block {block}' if block else ''}: the quantizer skipped it silently")
        counts[want if rule.bits == 16 else f"{want}{'_block' + str(block) if block else '_channel'}"] += 1
    return dict(counts)


def _inserted_dequantize(model, subgraph) -> tuple[list[Any], dict[int, int]]:
    """(the subgraph's ops without DEQUANTIZE ops of constants, DEQUANTIZE output -> its constant input)."""
    ops, source = [], {}
    for op in subgraph.operators:
        if fb.op_name(model, op) == "DEQUANTIZE" and fb.raw_bytes(model, subgraph.tensors[int(op.inputs[0])]):
            source[int(op.outputs[0])] = int(op.inputs[0])
        else:
            ops.append(op)
    return ops, source
