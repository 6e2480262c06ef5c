"""Whether a recipe's grid blocks fit a model: a block runs along a weight's input columns and must divide them.

Grids embg computes itself (QAT recovery, GPTQ, MSE-clipped scales) need whole blocks; a recipe made for the
real model's sizes (768, 1152, 3072: multiples of 128) does not fit a fine-tune or fixture of other sizes
(192 columns and blocks of 128). Said before any work, naming each weight; ``--bits`` uses it to pass over a
target's preferred preset that does not fit (embg/export/pipeline.py).
"""

from __future__ import annotations

import torch

from embg.quantize.groups import part_of
from embg.quantize.recipe import QuantRecipe


def grid_block_misfits(recipe: QuantRecipe, graph: torch.nn.Module) -> list[str]:
    """One line per weight of ``graph`` whose grid rule in ``recipe`` has a block size that
    does not divide its input columns; empty when every block fits."""
    found = []
    for name, weight in graph.named_parameters():
        if weight.dim() != 2 or part_of(name) is None:
            continue
        rule = recipe.rule_for(name)
        columns = weight.shape[1]
        if rule.is_integer and rule.carries_grid and rule.granularity == "block" and columns % rule.block_size:
            found.append(f"{name} ({recipe.rule_key_for(name)}): {columns} input columns, block {rule.block_size}")
    return found
