"""The model: checkpoint resolution, strict loading, tokenizer and prompts, the export graph, fixtures."""
