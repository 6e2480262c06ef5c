"""Token lengths of embg.textdata's sets and the reference's recall@1 on the retrieval pairs.

A one-off sanity measurement on a real checkpoint (heavy: run it alone, one thread):

    flock /tmp/embg-heavy.lock python scripts/textdata_stats.py ~/.cache/embg/real/embeddinggemma-300m

Token lengths include the task prompt, as the model sees them. recall@1: the share of queries whose
own document is the nearest of all documents (sentence-transformers, prompt_name query/document).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from embg import textdata  # noqa: E402

WINDOW = 257  # EmbeddingGemma's sliding-window size


def length_stats(lengths: list[int]) -> dict[str, float]:
    a = np.asarray(lengths)
    return {"count": len(a), "min": int(a.min()), "p10": float(np.percentile(a, 10)), "median": float(np.median(a)),
            "p90": float(np.percentile(a, 90)), "max": int(a.max()), f"over_{WINDOW}": int((a > WINDOW).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a real EmbeddingGemma checkpoint directory")
    args = parser.parse_args()
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(1)
    model = SentenceTransformer(str(args.model), device="cpu")
    prompts = model.prompts
    tokenizer = model.tokenizer

    def lengths(texts: list[str], task: str) -> list[int]:
        return [len(ids) for ids in tokenizer([prompts[task] + t for t in texts])["input_ids"]]

    pairs = textdata.retrieval_pairs()
    calibration = textdata.calibration_texts()
    stats = {
        "retrieval_queries": length_stats(lengths([p.query for p in pairs], "query")),
        "retrieval_documents": length_stats(lengths([p.document for p in pairs], "document")),
        "calibration": length_stats([n for t in calibration for n in lengths([t.text], t.task)]),
    }
    queries = model.encode([p.query for p in pairs], prompt_name="query", normalize_embeddings=True, batch_size=16)
    documents = model.encode([p.document for p in pairs], prompt_name="document", normalize_embeddings=True,
                             batch_size=16)
    ranks = np.argsort(-(queries @ documents.T), axis=1)
    own = np.arange(len(pairs))
    hit1 = ranks[:, 0] == own
    hit10 = (ranks[:, :10] == own[:, None]).any(axis=1)
    groups = {"all": np.ones(len(pairs), bool), "stdlib": np.array([p.id.startswith("stdlib:") for p in pairs])}
    groups["handwritten"] = ~groups["stdlib"]
    stats["recall"] = {name: {"pairs": int(m.sum()), "recall_at_1": round(float(hit1[m].mean()), 4),
                              "recall_at_10": round(float(hit10[m].mean()), 4)} for name, m in groups.items()}
    stats["recall"]["chance_at_1"] = round(1 / len(pairs), 4)
    print(json.dumps(stats, indent=2))


if __name__ == "__main__":
    main()
