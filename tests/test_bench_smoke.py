"""`bench/run.py --quick` end to end on the tiny fixtures: every JSON field is there (no timing checks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

VARIANT_FIELDS = {"target", "fixture", "runtime", "size", "export", "latency", "drift", "probe",
                  "speedup_vs_eager", "short_query", "machine_fraction"}
STATS_FIELDS = {"tokens", "batch", "pad_to", "bucket", "median_ms", "min_ms", "samples_ms", "inner"}


@pytest.mark.slow
def test_quick_benchmark_writes_every_field(tmp_path):
    out, cache = tmp_path / "results", tmp_path / "cache"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--out", str(out),
                           "--cache", str(cache)], capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    results = json.loads((out / "results.json").read_text())
    assert {"machine", "plan", "model_flops", "machine_limit", "variants", "targets", "skipped"} <= set(results)
    assert {"cpu", "cpu_family_model", "usable_cores", "python", "packages"} <= set(results["machine"])
    assert results["machine_limit"]["peak_fp32_gflops"] > 0 and results["machine_limit"]["peak_int8_gops"] > 0
    assert results["model_flops"]["256"]["total"] > 0

    variants = results["variants"]
    assert {"eager-fp32", "onnx-int8", "tflite-int4"} <= set(variants)
    shape_keys = {s["key"] for s in results["plan"]["shapes"]}
    for name, entry in variants.items():
        assert VARIANT_FIELDS <= set(entry), name
        for threads in ("1", "2"):
            assert set(entry["latency"][threads]) == shape_keys, name
            assert STATS_FIELDS <= set(entry["latency"][threads]["s256"]), name
            assert entry["latency"][threads]["s256"]["median_ms"] > 0, name
        assert entry["probe"]["runtime_rss_mb"] is not None, name
    for name in ("onnx-int8", "tflite-int4"):
        entry = variants[name]
        assert entry["drift"]["nonfinite"] == 0 and 0 < entry["drift"]["cosine_min"] <= 1.0 + 1e-6
        assert entry["export"]["wall_s"] > 0 and entry["export"]["peak_rss_mb"] > 0
        assert entry["size"]["breakdown"]["groups"], name
        assert entry["short_query"]["1"]["padded256_ms"] is not None, name
    assert variants["tflite-int4"]["latency"]["1"]["q16"]["bucket"] == 64
    assert variants["tflite-int4"]["latency"]["1"]["q16_pad256"]["bucket"] == 256
    assert len(results["targets"]) == 8 and all(t["status"] for t in results["targets"])

    table = (out / "table.md").read_text()
    assert "<!-- bench:start -->" in table and "<!-- bench:end -->" in table
    assert (out / "latency_vs_seq.png").stat().st_size > 0 and (out / "size_vs_drift.png").stat().st_size > 0


@pytest.mark.slow
def test_write_readme_replaces_only_the_marked_block(tmp_path):
    table = tmp_path / "table.md"
    table.write_text("intro\n<!-- bench:start -->\n| new | table |\n<!-- bench:end -->\nmore details\n")
    readme = tmp_path / "README.md"
    readme.write_text("# title\n<!-- bench:start -->\nold\n<!-- bench:end -->\ntail\n")
    done = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--write-readme", "--out", str(tmp_path),
                           "--readme", str(readme)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert readme.read_text() == "# title\n<!-- bench:start -->\n| new | table |\n<!-- bench:end -->\ntail\n"
    readme.write_text("# no markers\n")
    done = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--write-readme", "--out", str(tmp_path),
                           "--readme", str(readme)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and readme.read_text() == "# no markers\n"


@pytest.mark.slow
def test_model_flag_exports_and_times_a_checkpoint_directory(tmp_path, tiny_dir):
    """`bench/run.py --model DIR`: the real-checkpoint path, here on a fixture written in the real layout."""
    out, cache = tmp_path / "results", tmp_path / "cache"
    command = [sys.executable, str(REPO / "bench" / "run.py"), "--model", str(tiny_dir), "--variants", "onnx-bits8",
               "--tokens", "16,32", "--repeats", "1", "--out", str(out), "--cache", str(cache)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((out / "real_run.json").read_text())
    assert set(result["latency"]) == {"eager-fp32", "onnx-bits8"}
    assert set(result["latency"]["onnx-bits8"]["1"]) == {"s16", "s32"}
    assert result["latency"]["onnx-bits8"]["1"]["s32"]["median_ms"] > 0
    assert 0.9 < result["drift"]["onnx-bits8"]["min"] <= 1.0 + 1e-6
    assert result["exports"]["onnx-bits8"]["recipe"]["name"] == "int8-rotated"  # exported through --bits 8
    assert "| onnx-bits8 |" in (out / "real_table.md").read_text()

    again = subprocess.run(command[:-4] + ["--out", str(out), "--cache", str(cache), "--export-only"],
                           capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0 and "reusing cached bundle" in again.stdout

    wrong = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--model", str(tmp_path)],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert wrong.returncode != 0 and "not a checkpoint directory" in wrong.stderr


def test_weight_agreement_measures_parts_and_variants(tmp_path, tiny_dir):
    """`python -m bench.weight_agreement`: the recipe's weights, one part alone and a variant, each
    with cosine and top-10 agreement against the float graph (tiny fixture, min-max: no calibration)."""
    from bench.weight_agreement import PARTS, WeightBench, with_rules
    from embg.quantize.groups import part_of
    from embg.quantize.recipe import load_recipe

    recipe = load_recipe("int4-minmax")
    bench = WeightBench(str(tiny_dir), recipe=recipe)  # the weights of a rotated graph, as exported
    weights = bench.weights(recipe)
    assert {part_of(name) for name in weights} <= set(PARTS)
    every = bench.measure("all", weights)
    alone = bench.measure("only embedding", {n: f for n, f in weights.items() if part_of(n) == "embedding"})
    assert bench.measure("float", {}) == {"config": "float", "cosine_min": 1.0, "cosine_mean": 1.0,
                                         "top10_agreement": 1.0}
    assert 0 < every["top10_agreement"] < alone["top10_agreement"] < 1.0  # one part costs less than all
    wider = with_rules(recipe, {"projections": {"bits": 8, "granularity": "channel"}}, "o_proj int8")
    assert wider.rule("o_proj").bits == 8 and wider.rule("q_proj").bits == 4
    late = with_rules(recipe, {"layer_rules": {"1": {"projections": {"bits": 8, "granularity": "channel"}}}},
                      "layer 1 o_proj int8")
    assert late.rule_for("layers.1.self_attn.o_proj.weight").bits == 8
    assert late.rule_for("layers.0.self_attn.o_proj.weight").bits == 4


@pytest.mark.heavy
def test_weight_agreement_parts_include_all_but_the_embedding(tmp_path, tiny_dir):
    """--parts measures each part alone and everything but the embedding (an embedding change's ceiling)."""
    import json

    from bench.weight_agreement import main

    out = tmp_path / "rows.json"
    assert main(["--model", str(tiny_dir), "--recipe", "int4-minmax", "--parts", "--out", str(out)]) == 0
    rows = {row["config"]: row for row in json.loads(out.read_text())["rows"]}
    assert {"recipe int4-minmax weights", "only embedding", "all but the embedding"} <= set(rows)
    assert rows["all but the embedding"]["top10_agreement"] > rows["recipe int4-minmax weights"]["top10_agreement"]


@pytest.mark.heavy
def test_weight_agreement_layers_scan_and_mix(tmp_path, tiny_dir):
    """--layers: one row per decoder layer and part group (drift and bytes saved), then the mix the drift
    ranking picks for the recipe's int4 bytes, measured like the recipe."""
    import json

    from bench.weight_agreement import LAYER_GROUPS, cheapest_mix, main

    out = tmp_path / "rows.json"
    assert main(["--model", str(tiny_dir), "--recipe", "int4", "--layers", "8", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    layers = {row["layer"] for row in data["layers"]}
    assert len(data["layers"]) == len(layers) * len(LAYER_GROUPS) and len(layers) >= 2
    assert all(row["drift"] > 0 and row["mb_saved"] > 0 for row in data["layers"])
    assert [row["config"] for row in data["rows"]][-1].startswith("per-layer mix")
    rows = [{"layer": 0, "group": "v", "drift_per_mb": 3.0, "mb_saved": 1.0},
            {"layer": 1, "group": "v", "drift_per_mb": 1.0, "mb_saved": 1.0},
            {"layer": 2, "group": "v", "drift_per_mb": 2.0, "mb_saved": 1.0}]
    assert cheapest_mix(rows, 1.5) == {(1, "v"), (2, "v")}  # the cheapest first, until the bytes are saved


def test_activation_sensitivity_rotated_graph_keeps_its_float_reference(tiny_dir):
    """`python -m bench.activation_sensitivity --rotation`: the rows run on a rotated graph whose float
    function is the original's, so only the int8 roundings move them."""
    from bench.activation_sensitivity import ActivationBench, two_pass_on

    plain = ActivationBench(str(tiny_dir), "builtin")
    rotated = ActivationBench(str(tiny_dir), "builtin", {"block": 128, "table": False, "down": "auto"})
    assert getattr(rotated.graph, "rotated", None) and not getattr(plain.graph, "rotated", None)
    assert rotated.rotation["down_layers"] == list(range(len(rotated.graph.layers)))  # random weights: all
    assert (plain.reference * rotated.reference).sum(axis=1).min() > 0.99999
    row = rotated.measure("ONNX grid", rotated.grid(two_pass_on(()), 0))
    assert 0.5 < row["cosine_min"] < 1.0


def test_table_rows_ranks_ids_without_the_validator_texts_and_replaces_only_chosen_rows(tiny_dir):
    """bench.table_rows: the frequency list comes from word lists and the calibration texts (never the
    validator's sets), stays inside the table, and a replacement changes exactly the chosen rows."""
    import torch

    from bench.table_rows import frequent_ids, int8_per_row, with_rows
    from embg.checkpoint.load import load_model

    tokenizer = load_model(str(tiny_dir)).tokenizer.backend
    lists = {"en": {"the": 0.05, "of": 0.03, "zebra": 1e-7}, "de": {"der": 0.04, "und": 0.03}}
    assert max(frequent_ids(tokenizer, 4096, lists)) < 4096  # only rows the table has
    ranked = frequent_ids(tokenizer, len(tokenizer), lists)
    assert len(ranked) == len(set(ranked))
    common = set(tokenizer(" the", add_special_tokens=False)["input_ids"])
    rare = set(tokenizer(" zebra", add_special_tokens=False)["input_ids"]) - common
    assert min(ranked.index(i) for i in common) < min(ranked.index(i) for i in rare)  # by frequency
    assert set(tokenizer.all_special_ids) <= set(ranked)
    table = torch.randn(16, 8)
    base = torch.zeros(16, 8)
    out = with_rows(base, table, torch.tensor([2, 5]), int8_per_row)(table)
    assert torch.equal(out[[0, 1, 3, 4]], base[[0, 1, 3, 4]])
    assert (out[[2, 5]] - table[[2, 5]]).abs().max() <= table[[2, 5]].abs().max() / 254 + 1e-6


@pytest.mark.heavy
def test_weight_agreement_resample_calibrates_on_other_draws_and_reports_the_spread(tmp_path, tiny_dir):
    """--resample N: N more calibrations on seeded 90% draws of the calibration texts (each a different
    draw, the same draw for the same seed), then top-10's mean and spread over all calibrations."""
    import json

    from bench.weight_agreement import WeightBench, main
    from embg.quantize.calibration_texts import calibration_split

    bench = WeightBench(str(tiny_dir))
    first, again, other = (bench.resampled_calibration(seed) for seed in (0, 0, 1))
    tokens = lambda batches: sorted(int(m.sum()) for _, m in batches)  # noqa: E731
    assert tokens(first) == tokens(again) and tokens(first) != tokens(other)
    texts = sum(len(ids) for ids, _ in first)
    assert texts == round(0.9 * len(calibration_split()[0]))
    out = tmp_path / "rows.json"
    assert main(["--model", str(tiny_dir), "--recipe", "int4", "--resample", "2", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [row["config"] for row in rows[1:3]] == ["calibrated on resample 0", "calibrated on resample 1"]
    spread = rows[-1]
    values = [row["top10_agreement"] for row in rows[:3]]
    assert spread["top10_min"] == min(values) and spread["top10_max"] == max(values)
    assert abs(spread["top10_mean"] - sum(values) / 3) < 1e-4


@pytest.mark.heavy
def test_low_rank_correction_follows_the_activations_and_reaches_the_weight_at_full_rank(tmp_path, tiny_dir):
    """bench.low_rank: the weighted error falls with the rank, full rank gives the float weight back, and
    --low-rank measures each rank on the recipe's int4 decoder weights."""
    import json

    import torch

    from bench.low_rank import LowRankCorrection
    from bench.weight_agreement import main

    torch.manual_seed(0)
    weight, inputs = torch.randn(24, 16), torch.randn(500, 16) * torch.linspace(0.1, 3.0, 16)
    quantized = torch.round(weight * 2) / 2
    fix = LowRankCorrection(weight, quantized, (inputs.T @ inputs / 500).double())
    weighted = [float(((fix.weight(rank) - weight) @ inputs.T).norm()) for rank in (0, 2, 4, 8)]
    assert weighted == sorted(weighted, reverse=True) and weighted[-1] < 0.6 * weighted[0]
    assert 0 < fix.captured(2) < fix.captured(8) < fix.captured(16) == pytest.approx(1.0)
    assert torch.allclose(fix.weight(16), weight, atol=1e-4)
    out = tmp_path / "rows.json"
    assert main(["--model", str(tiny_dir), "--recipe", "int4", "--low-rank", "1,4", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [row["config"].split(" correction")[0] for row in rows[1:]] == ["rank 1", "rank 4"]
    assert 0 < rows[1]["weighted_error_removed"] < rows[2]["weighted_error_removed"] <= 1


def test_table_rows_low_bits_keeps_frequent_rows_and_puts_the_rest_on_the_coarser_grid(tiny_dir):
    """--low-bits: rows on a symmetric 3-bit grid (at most 8 levels per block) with less error than
    plain range scales, and the frequent rows exactly as the recipe's table has them."""
    import argparse

    import torch

    from bench.table_rows import frequent_ids, low_bit_rows, measure_low_bit_rest
    from bench.weight_agreement import WeightBench
    from embg.quantize.recipe import load_recipe

    torch.manual_seed(0)
    table = torch.randn(40, 64)
    low = low_bit_rows(table, 3, 32, chunk=16)
    assert all(torch.unique(block).numel() <= 8 for block in low.reshape(-1, 32))
    widest = table.reshape(-1, 32).abs().amax(-1, keepdim=True) / 3
    plain = (torch.clamp(torch.round(table.reshape(-1, 32) / widest), -4, 3) * widest).reshape(40, 64)
    assert ((low - table) ** 2).sum() < ((plain - table) ** 2).sum()
    recipe = load_recipe("int4")
    bench = WeightBench(str(tiny_dir))
    weights = bench.weights(recipe)
    name = next(n for n in weights if "embed_tokens" in n)
    tokens = torch.cat([ids[mask > 0] for ids, mask in bench.batches]).numpy()
    rows_of = {}
    bench.measure = lambda label, replacements: rows_of.setdefault(label, replacements)
    ranked = frequent_ids(bench.tokenizer.backend, 4096, {"en": {"the": 0.05, "of": 0.03}})
    args = argparse.Namespace(int8="gate_proj,up_proj", low_bits=3, coarse_block=32, rows="8")
    measure_low_bit_rest(bench, recipe, weights, name, args, ranked, tokens)
    assert list(rows_of)[0] == "gate_proj/up_proj int8, the recipe's table"
    int8_weights = rows_of["gate_proj/up_proj int8, the recipe's table"]
    assert all(n in int8_weights for n in weights)
    original = dict(bench.graph.named_parameters())[name].detach()
    mixed = list(rows_of.values())[1][name](original)
    assert torch.equal(mixed[ranked[:8]], weights[name](original)[ranked[:8]])
    rest = [i for i in range(original.shape[0]) if i not in set(ranked[:8])][:50]
    assert not torch.equal(mixed[rest], weights[name](original)[rest])


def test_profile_eager_splits_the_baseline_into_linear_attention_and_the_rest(tiny_dir):
    """bench/profile_eager.py: the profiled parts of one eager pass cover the linear layers and attention."""
    from bench.profile_eager import category, profile, render

    assert category("aten::mm") == "linear layers" and category("aten::gelu").startswith("other")
    result = profile(Path(tiny_dir), tokens=16, repeats=2)
    parts = result["categories_ms"]
    assert parts["linear layers"] > 0 and parts["attention"] > 0 and result["wall_ms_median"] > 0
    assert "linear layers" in render(result)


def test_weight_agreement_gptq_bits_calibrates_only_the_named_parts_wider(tiny_dir, monkeypatch):
    """--gptq-bits gate_proj=6,head=6: those parts' grids reach past int4's -8..7 (within -32..31), the recipe's
    other GPTQ parts stay int4; the table is refused (GPTQ does not calibrate it)."""
    import bench.weight_agreement as module
    from bench.weight_agreement import WeightBench, measure_gptq_bits, parse_part_bits
    from embg.quantize.groups import part_of
    from embg.quantize.recipe import load_recipe

    assert parse_part_bits("gate_proj=6,head=6") == {"gate_proj": 6, "head": 6}
    with pytest.raises(SystemExit):
        parse_part_bits("gate_proj=4")
    recipe = load_recipe("int4")
    bench = WeightBench(str(tiny_dir), recipe=recipe)
    seen = {}
    real = module.calibrate_grids

    def spy(*args, **kwargs):
        grids, report = real(*args, **kwargs)
        seen.update(grids)
        return grids, report

    monkeypatch.setattr(module, "calibrate_grids", spy)
    row = measure_gptq_bits(bench, recipe, {"gate_proj": 6, "head": 6}, 32)
    assert 0 < row["cosine_min"] <= 1 and "gate_proj int6" in row["config"]
    span = {part_of(name): (int(q.min()), int(q.max())) for name, (q, _) in seen.items()}
    for part in ("gate_proj", "head"):  # int6: -32..31, used beyond int4's range
        assert -32 <= span[part][0] and span[part][1] <= 31 and max(-span[part][0], span[part][1]) > 8
    for part in ("up_proj", "q_proj"):  # the recipe's int4
        assert -8 <= span[part][0] and span[part][1] <= 7
    with pytest.raises(SystemExit):
        measure_gptq_bits(bench, recipe, {"embedding": 6}, 32)


def test_ffn_channels_scores_the_int4_error_and_swaps_in_int8_rows(tiny_dir):
    """bench.ffn_channels: no int4 error scores zero everywhere; every channel picked is gate/up int8
    throughout; the top-scored half's int8 rows leave less drift than the bottom half's."""
    import torch

    from bench.ffn_channels import channel_scores, mlp_weight_names, split_by_layer, with_int8_rows
    from bench.weight_agreement import WeightBench
    from embg.quantize.recipe import load_recipe
    from embg.quantize.simulate import int8_channel

    recipe = load_recipe("int4-minmax")
    bench = WeightBench(str(tiny_dir), pairs=20, recipe=recipe)
    weights = bench.weights(recipe)
    params = dict(bench.graph.named_parameters())
    names = [n for layer in range(len(bench.graph.layers)) for n in mlp_weight_names(layer)]
    with torch.no_grad():
        exact = {n: params[n].detach().clone() for n in names}
        quantized = {n: weights[n](params[n].detach()) for n in names}
    assert all(float(s.abs().max()) == 0.0 for s in channel_scores(bench, exact))
    scores = channel_scores(bench, quantized)
    flat = torch.cat(scores)
    assert float(flat.min()) >= 0 and float(flat.sum()) > 0
    width, layers = len(scores[0]), len(scores)
    every = with_int8_rows(weights, quantized, split_by_layer(list(range(len(flat))), width, layers))
    for name in names:
        assert torch.equal(every[name](params[name].detach()), int8_channel(params[name].detach()))
    order = torch.argsort(flat, descending=True).tolist()
    half = len(order) // 2
    top = bench.measure("top half", with_int8_rows(weights, quantized, split_by_layer(order[:half], width, layers)))
    bottom = bench.measure("bottom half", with_int8_rows(weights, quantized, split_by_layer(order[half:], width, layers)))
    assert top["cosine_mean"] > bottom["cosine_mean"]
