"""embg-export: EmbeddingGemma to LiteRT and ONNX bundles, with parity checked on the exported file."""

__version__ = "0.1.0"
