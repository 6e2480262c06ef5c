package dev.embg.core;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/** Documents and their (Matryoshka-truncated) embeddings; ranks them against a query by cosine. */
public final class SemanticIndex {
    public static final class Hit {
        public final int index;
        public final String text;
        public final double score;

        Hit(int index, String text, double score) {
            this.index = index;
            this.text = text;
            this.score = score;
        }
    }

    private final int dim;
    private final List<String> texts = new ArrayList<>();
    private final List<float[]> vectors = new ArrayList<>();

    public SemanticIndex(int dim) {
        this.dim = dim;
    }

    public int dim() { return dim; }

    public int size() { return texts.size(); }

    public void add(String text, float[] embedding) {
        if (!Vectors.allFinite(embedding)) throw new IllegalArgumentException("non-finite embedding for: " + text);
        texts.add(text);
        vectors.add(Vectors.matryoshka(embedding, dim));
    }

    /** The {@code k} best documents, highest cosine first; ties keep insertion order. */
    public List<Hit> search(float[] queryEmbedding, int k) {
        float[] q = Vectors.matryoshka(queryEmbedding, dim);
        List<Hit> hits = new ArrayList<>();
        for (int i = 0; i < texts.size(); i++) hits.add(new Hit(i, texts.get(i), Vectors.cosine(q, vectors.get(i))));
        hits.sort(Comparator.comparingDouble((Hit h) -> -h.score).thenComparingInt(h -> h.index));
        return hits.subList(0, Math.min(k, hits.size()));
    }
}
