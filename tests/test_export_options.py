"""Export options are typed; each target takes only the options it declares, refused before any work."""

from __future__ import annotations

import pytest

from embg.errors import EmbgError, ExportError
from embg.export.options import ExportOptions
from embg.export.pipeline import ExportRequest, export_bundle, load_targets
from embg.quantize.recipe import bits_of_preset, recipe_for_bits


def test_options_from_a_mapping_refuse_unknown_names_and_fp16():
    assert ExportOptions.parse({"web_compatible": True}) == ExportOptions(web_compatible=True)
    assert ExportOptions.parse(None) == ExportOptions()
    with pytest.raises(EmbgError, match="unknown export option.*web_compatibel"):
        ExportOptions.parse({"web_compatibel": True})  # a typo is an error, never ignored
    with pytest.raises(ExportError, match="fp16"):
        ExportOptions.parse({"precision": "fp16"})


@pytest.mark.parametrize("target, request_args, message", [
    ("onnx", {"seq_lens": (32, 64)}, r"--seq-lens 32,64 applies to the tflite target only: an ONNX bundle"),
    ("tflite", {"options": {"web_compatible": True}}, r"--web-compatible applies to the onnx target only"),
])
def test_a_target_refuses_options_it_does_not_declare(tmp_path, target, request_args, message):
    with pytest.raises(EmbgError, match=message):
        export_bundle(ExportRequest(model="no-such-model-is-loaded", target=target, recipe=recipe_for_bits(8),
                                    out=tmp_path / "out", **request_args))
    assert not list(tmp_path.iterdir())


def test_every_registered_target_declares_its_options():
    from embg.export.base import TARGETS

    load_targets()
    assert set(TARGETS.names()) >= {"onnx", "tflite"}
    for name in TARGETS.names():
        declared = TARGETS.get(name).accepted_options
        assert declared <= {"seq_lens", "web_compatible"}, (name, declared)


def test_the_attention_form_is_a_typed_choice():
    """attention=dense (the graph before banding, for benchmarks) travels typed; anything else is refused."""
    assert ExportOptions.parse({"attention": "dense"}).attention == "dense"
    assert ExportOptions().attention == "banded" and not ExportOptions().asked()
    with pytest.raises(EmbgError, match=r"attention option must be one of \['banded', 'dense'\], got 'sparse'"):
        ExportOptions.parse({"attention": "sparse"})


def test_bits_qat_detection_keys_on_the_bits_a_preset_stands_for():
    """--bits looks for the Q4_0/Q8_0 grid by the bits of the preset it named (the recipe table), not by
    a list of names beside it."""
    assert bits_of_preset(recipe_for_bits(4).name) == 4 and bits_of_preset(recipe_for_bits(8).name) == 8
    assert bits_of_preset("int4-rotated") is None  # only --recipe names it: no QAT detection
