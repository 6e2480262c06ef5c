"""Every registered target, recipe preset, runtime and device kind must be exercised by some test.

Adding one to a registry without a test that names it fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

TESTS = Path(__file__).parent


def _test_sources() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in TESTS.glob("test_*.py") if p.name != "test_meta.py")


def _registered() -> dict[str, list[str]]:
    from embg.devices import DEVICES, load_devices
    from embg.export.base import TARGETS
    from embg.export.pipeline import load_targets
    from embg.quantize.recipe import preset_names
    from embg.runtimes import RUNTIMES, load_all

    load_targets()
    load_all()
    load_devices()
    return {"target": TARGETS.names(), "recipe": preset_names(), "runtime": RUNTIMES.names(),
            "device": DEVICES.names()}


REGISTERED = _registered()


@pytest.mark.parametrize("kind, name", [(k, n) for k, names in REGISTERED.items() for n in names])
def test_registered_name_is_tested(kind, name):
    sources = _test_sources()
    # Quoted as a string literal, or as a recipe passed through --bits (fp32/int8/int4).
    quoted = re.search(rf"""["']{re.escape(name)}["']""", sources)
    bits = {"fp32": 32, "int8": 8, "int4": 4}.get(name)
    via_bits = bits is not None and re.search(rf"recipe_for_bits\(\s*{bits}\s*\)|\(32, 8, 4\)", sources)
    assert quoted or via_bits, f"{kind} {name!r} is registered but no test names it"


def test_registries_are_not_empty():
    assert {"onnx", "tflite"} <= set(REGISTERED["target"])
    assert {"onnxruntime", "litert"} <= set(REGISTERED["runtime"])
    assert {"fp32", "int8", "int4", "int4-qat", "int8-qat"} <= set(REGISTERED["recipe"])
    assert {"local", "aihub"} <= set(REGISTERED["device"])  # aihub imports qai_hub only when used


def test_every_fixture_kind_is_named_where_users_look():
    """embg-export's --help, embg-fixture's --help and the README each list every built-in fixture."""
    from embg.cli.export import build_parser as export_parser
    from embg.cli.fixture import build_parser as fixture_parser
    from embg.fixtures import FIXTURE_KINDS

    readme = (TESTS.parent / "README.md").read_text(encoding="utf-8")
    places = {"embg-export --help": export_parser().format_help(), "embg-fixture --help": fixture_parser().format_help(),
              "README": readme}
    for place, text in places.items():
        missing = [name for name in FIXTURE_KINDS if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text)]
        assert not missing, f"{place} does not name the fixtures {missing}"
