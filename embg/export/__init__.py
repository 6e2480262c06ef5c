"""Export targets (one module each), the bundle Artifact and its manifest."""
