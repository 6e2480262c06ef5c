"""Bundle integrity: the manifest is well formed, every file it names lies inside the bundle and has
the sha256 the manifest records, and the model file is structurally sound before any native
loader (LiteRT, ONNX Runtime) sees it.

A truncated .tflite crashes LiteRT (segmentation fault) and a manifest path such as ``../../x``
would load a file from outside the bundle, so both are refused here with one line naming the file.
:meth:`embg.bundle.artifact.Artifact.verify` is the entry point; this module holds the checks.
"""

from __future__ import annotations

import mmap
import re
import struct
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from embg.bundle.digest import file_sha256
from embg.bundle.names import HASHES_FIELD, INPUT_NAMES, OUTPUT_NAME
from embg.errors import EmbgError

SHA256 = re.compile(r"^[0-9a-f]{64}$")
TFLITE_IDENTIFIER = b"TFL3"


class BundleError(EmbgError):
    """A bundle that is damaged, tampered with or malformed (exit status 2, one line naming the file)."""


def record_hashes(bundle: Path, names: list[str]) -> dict[str, str]:
    """{file name: sha256} for the manifest's ``file_sha256`` field, written at export time."""
    return {name: file_sha256(Path(bundle) / name) for name in sorted(set(names))}


# ---------------------------------------------------------------- manifest fields and paths

def _field(manifest: dict[str, Any], key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    value = manifest.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise BundleError(f"{where}: manifest field {key!r} is {value!r}, not a valid {_kind_name(kind)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({dict: "object", list: "list", str: "string", int: "integer"}.get(k, k.__name__)
                       for k in kinds)


def inside(directory: Path, name: Any, field: str) -> Path:
    """``directory / name`` when ``name`` is a plain relative file name that stays inside the bundle."""
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        raise BundleError(f"{directory}: manifest field {field} holds {name!r}, not a file name in the bundle")
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or name.startswith("~"):
        raise BundleError(f"{directory}: manifest field {field} = {name!r} points outside the bundle; every path "
                          "in a manifest must be a file inside the bundle directory")
    path = Path(directory) / name
    root = Path(directory).resolve()
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:  # a symlink that leaves the bundle
        raise BundleError(f"{directory}: {name} (manifest field {field}) resolves to {resolved}, outside the bundle")
    if not path.is_file():
        raise BundleError(f"bundle {directory} lacks the file {name} named by its manifest ({field})")
    return path


def named_files(directory: Path, manifest: dict[str, Any]) -> dict[str, str]:
    """Every file the manifest names, {name: the field naming it}; checks the fields' types on the way."""
    names = {_field(manifest, "model_file", str, directory): "model_file"}
    for name in _field(manifest, "files", list, directory):
        names.setdefault(name, "files")
    tokenizer = _field(manifest, "tokenizer", dict, directory)
    files = tokenizer.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{directory}: manifest field 'tokenizer.files' must name the bundle's tokenizer files")
    for name in files:
        names.setdefault(name, "tokenizer.files")
    for name, field in names.items():
        inside(directory, name, field)
    if manifest["model_file"] not in manifest["files"]:
        raise BundleError(f"{directory}: manifest 'files' does not list the model file {manifest['model_file']!r}")
    return names


def check_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Types and ranges of the fields runtimes and apps read, and every named path inside the bundle."""
    target = _field(manifest, "target", str, directory)
    if target not in MODEL_CHECKS:
        raise BundleError(f"{directory}: manifest target {target!r} is not one of {', '.join(MODEL_CHECKS)}")
    _field(manifest, "runtime", str, directory)
    _field(manifest, "model", dict, directory)
    _field(manifest, "recipe", dict, directory)
    _field(manifest, "prompts", dict, directory)
    dim = _field(manifest, "embedding_dim", int, directory)
    if dim < 1:
        raise BundleError(f"{directory}: manifest embedding_dim {dim} must be positive")
    dims = manifest.get("matryoshka_dims") or []
    if not isinstance(dims, list) or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= dim
                                             for d in dims):
        raise BundleError(f"{directory}: manifest matryoshka_dims {dims!r} must be integers in 1..{dim}")
    longest = _field(manifest, "max_sequence_length", int, directory)
    if longest < 1:
        raise BundleError(f"{directory}: manifest max_sequence_length {longest} must be positive")
    if target == "tflite":
        signatures = _field(manifest, "signatures", list, directory)
        if not signatures or not all(isinstance(s, dict) and isinstance(s.get("name"), str)
                                     and isinstance(s.get("seq_len"), int) and not isinstance(s.get("seq_len"), bool)
                                     and s["seq_len"] > 0 for s in signatures):
            raise BundleError(f"{directory}: manifest signatures must be a non-empty list of "
                              "{\"name\": ..., \"seq_len\": N}")
    names = named_files(directory, manifest)
    hashes = _field(manifest, HASHES_FIELD, dict, directory) if HASHES_FIELD in manifest else None
    if hashes is None:
        raise BundleError(f"{directory}: the manifest records no {HASHES_FIELD} (written by an older embg-export); "
                          "re-export the bundle so its files can be verified")
    unhashed = sorted(set(names) - set(hashes))
    if unhashed:
        raise BundleError(f"{directory}: the manifest records no sha256 for {', '.join(unhashed)}")
    for name, digest in hashes.items():
        inside(directory, name, HASHES_FIELD)
        if not isinstance(digest, str) or not SHA256.match(digest):
            raise BundleError(f"{directory}: manifest {HASHES_FIELD}[{name!r}] is not a sha256 hex digest")


def check_hashes(directory: Path, manifest: dict[str, Any]) -> dict[str, str]:
    """Every recorded file has its recorded sha256; returns them."""
    hashes = manifest[HASHES_FIELD]
    for name, expected in sorted(hashes.items()):
        actual = file_sha256(Path(directory) / name)
        if actual != expected:
            raise BundleError(f"{Path(directory) / name}: sha256 {actual[:12]}... differs from the manifest's "
                              f"{expected[:12]}...: the file was changed or replaced after export; re-export the bundle")
    return dict(hashes)


# ---------------------------------------------------------------- model files, before any native loader

class _Span:
    """Bounds-checked reads of flatbuffer vectors: a damaged length or offset raises instead of
    sending a native loader past the end of the file."""

    def __init__(self, path: Path, size: int) -> None:
        self.path, self.size = path, size

    def bad(self, what: str) -> BundleError:
        return BundleError(f"{self.path} is not a valid .tflite file ({what}); the file is damaged or truncated, "
                           "re-export or copy it again")

    def vector(self, table: Any, field: int, element: int, what: str) -> int:
        """Length of vector ``field`` of ``table`` after checking it lies inside the file (0 when absent)."""
        offset = table._tab.Offset(field)
        if not offset:
            return 0
        start, count = table._tab.Vector(offset), table._tab.VectorLen(offset)
        if start < 0 or count < 0 or start + count * element > self.size:
            raise self.bad(f"{what} extends past the end of the file")
        return count

    def index(self, value: int, count: int, what: str, optional: bool = False) -> None:
        if not (0 <= value < count or optional and value == -1):
            raise self.bad(f"{what} {value} is out of range 0..{count - 1}")


def _tflite_structure(path: Path, data: Any, size: int) -> dict[str, dict[str, list[int]]]:
    """Walk the parts of the flatbuffer a loader dereferences; returns {signature: {input: shape}}."""
    from ai_edge_litert import schema_py_generated as schema

    span = _Span(path, size)
    if size < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise span.bad(f"no {TFLITE_IDENTIFIER.decode()} identifier")
    root = int.from_bytes(data[0:4], "little")
    if root >= size:
        raise span.bad("root table offset past the end of the file")
    model = schema.Model.GetRootAs(data, 0)
    buffers = span.vector(model, 12, 4, "buffer table")
    codes = span.vector(model, 6, 4, "operator codes")
    for j in range(buffers):
        buffer = model.Buffers(j)
        span.vector(buffer, 4, 1, f"buffer {j}")
        if buffer.Offset() > 1 and buffer.Offset() + buffer.Size() > size:  # data stored after the flatbuffer
            raise span.bad(f"buffer {j} (offset {buffer.Offset()}, {buffer.Size()} bytes) ends past the file's "
                           f"{size} bytes")
    if span.vector(model, 22, 4, "external buffers"):
        raise span.bad("external buffers outside the file are not supported in bundles")
    tensor_counts = []
    for g in range(span.vector(model, 8, 4, "subgraphs")):
        graph = model.Subgraphs(g)
        tensors = span.vector(graph, 4, 4, f"subgraph {g} tensors")
        tensor_counts.append(tensors)
        for t in range(tensors):
            tensor = graph.Tensors(t)
            span.vector(tensor, 4, 4, f"tensor {t} shape")
            span.index(tensor.Buffer(), buffers, f"tensor {t} buffer index")
            quant = tensor.Quantization()
            if quant is not None:
                for field, element in ((4, 4), (6, 4), (8, 4), (10, 8)):  # min, max, scale, zero_point
                    span.vector(quant, field, element, f"tensor {t} quantization")
        for field in (6, 8):
            for k in range(span.vector(graph, field, 4, f"subgraph {g} inputs/outputs")):
                span.index(graph.Inputs(k) if field == 6 else graph.Outputs(k), tensors, f"subgraph {g} io tensor")
        for o in range(span.vector(graph, 10, 4, f"subgraph {g} operators")):
            op = graph.Operators(o)
            span.index(op.OpcodeIndex(), codes, f"operator {o} opcode index")
            for k in range(span.vector(op, 6, 4, f"operator {o} inputs")):
                span.index(op.Inputs(k), tensors, f"operator {o} input", optional=True)
            for k in range(span.vector(op, 8, 4, f"operator {o} outputs")):
                span.index(op.Outputs(k), tensors, f"operator {o} output", optional=True)
            span.vector(op, 14, 1, f"operator {o} custom options")
            if op.LargeCustomOptionsOffset() > 1 and op.LargeCustomOptionsOffset() + op.LargeCustomOptionsSize() > size:
                raise span.bad(f"operator {o} custom options end past the file")
    signatures: dict[str, dict[str, list[int]]] = {}
    for s in range(span.vector(model, 18, 4, "signatures")):
        signature = model.SignatureDefs(s)
        graph_index = signature.SubgraphIndex()
        span.index(graph_index, len(tensor_counts), f"signature {s} subgraph")
        graph = model.Subgraphs(graph_index)
        shapes: dict[str, list[int]] = {}
        for field, getter in ((4, signature.Inputs), (6, signature.Outputs)):
            for k in range(span.vector(signature, field, 4, f"signature {s} tensors")):
                entry = getter(k)
                span.index(entry.TensorIndex(), tensor_counts[graph_index], f"signature {s} tensor")
                tensor = graph.Tensors(entry.TensorIndex())
                shapes[(entry.Name() or b"").decode("utf-8", "replace")] = [int(tensor.Shape(i))
                                                                           for i in range(tensor.ShapeLength())]
        signatures[(signature.SignatureKey() or b"").decode("utf-8", "replace")] = shapes
    return signatures


def check_tflite_file(directory: Path, manifest: dict[str, Any]) -> None:
    """Size, identifier and every buffer/tensor/operator offset inside the file; the manifest's
    signatures exist with inputs of shape [1, seq_len]."""
    path = Path(directory) / manifest["model_file"]
    size = path.stat().st_size
    if size < 8:
        raise _Span(path, size).bad(f"{size} bytes")
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            signatures = _tflite_structure(path, data, size)
        except BundleError:
            raise
        except (struct.error, IndexError, ValueError) as exc:  # reads beyond the mapped file
            raise _Span(path, size).bad(f"a table or vector lies past the end of the file: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - any other failure to parse a damaged flatbuffer
            raise _Span(path, size).bad(f"{type(exc).__name__}: {exc}") from exc
    for entry in manifest["signatures"]:
        found = signatures.get(entry["name"])
        if found is None:
            raise BundleError(f"{path} has no signature {entry['name']!r} (the manifest lists it); "
                              f"the file has {sorted(signatures)}")
        for name in INPUT_NAMES:
            if found.get(name) != [1, entry["seq_len"]]:
                raise BundleError(f"{path}: signature {entry['name']} input {name} has shape {found.get(name)}, "
                                  f"the manifest says [1, {entry['seq_len']}]")
        if OUTPUT_NAME not in found:
            raise BundleError(f"{path}: signature {entry['name']} has no output {OUTPUT_NAME}")


def check_onnx_file(directory: Path, manifest: dict[str, Any]) -> None:
    """Parsed by onnx and passed by its checker; external data only in bundle files within their sizes;
    the graph's inputs and output carry the bundle's I/O names."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    path = Path(directory) / manifest["model_file"]
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf DecodeError and friends
        raise BundleError(f"{path} is not a valid ONNX model ({type(exc).__name__}: {exc}); "
                          "the file is damaged or truncated") from exc
    for tensor in model.graph.initializer:
        if not uses_external_data(tensor):
            continue
        info = ExternalDataInfo(tensor)
        data = inside(directory, info.location, f"external data of {tensor.name}")
        if info.location not in manifest["files"]:
            raise BundleError(f"{path}: tensor {tensor.name} keeps its data in {info.location}, which the manifest "
                              "does not list")
        offset, length = int(info.offset or 0), int(info.length or 0)
        if offset < 0 or length < 0 or offset + length > data.stat().st_size:
            raise BundleError(f"{data}: tensor {tensor.name}'s data (offset {offset}, {length} bytes) ends past "
                              f"the file's {data.stat().st_size} bytes; the file is truncated")
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # noqa: BLE001 - ValidationError and protobuf errors
        raise BundleError(f"{path} fails the ONNX checker: {str(exc).splitlines()[0] if str(exc) else exc}") from exc
    inputs = sorted(i.name for i in model.graph.input)
    outputs = [o.name for o in model.graph.output]
    if inputs != sorted(INPUT_NAMES) or OUTPUT_NAME not in outputs:
        raise BundleError(f"{path}: graph inputs {inputs} / outputs {outputs} are not {list(INPUT_NAMES)} / "
                          f"{OUTPUT_NAME}")


# target -> structural check of its model file
MODEL_CHECKS: dict[str, Callable[[Path, dict[str, Any]], None]] = {
    "tflite": check_tflite_file,
    "onnx": check_onnx_file,
}


def verify_bundle(directory: Path, manifest: dict[str, Any]) -> dict[str, str]:
    """All of the above, in order: fields and paths, hashes, model file structure. Returns the verified hashes."""
    directory = Path(directory)
    check_manifest(directory, manifest)
    hashes = check_hashes(directory, manifest)
    MODEL_CHECKS[manifest["target"]](directory, manifest)
    return hashes
