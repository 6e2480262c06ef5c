package dev.embg.core;

/** Embedding post-processing that needs no model: Matryoshka truncation and cosine similarity. */
public final class Vectors {
    private Vectors() {}

    /**
     * The first {@code dim} values, L2-normalised again (the model normalises the full vector;
     * a prefix of it is no longer unit length). {@code dim} must be one the model was trained for.
     */
    public static float[] matryoshka(float[] embedding, int dim) {
        if (dim <= 0 || dim > embedding.length) throw new IllegalArgumentException("dim " + dim + " outside 1.." + embedding.length);
        float[] out = new float[dim];
        double sum = 0;
        for (int k = 0; k < dim; k++) sum += (double) embedding[k] * embedding[k];
        double norm = Math.sqrt(sum);
        if (!(norm > 0) || Double.isInfinite(norm)) throw new IllegalArgumentException("embedding has zero or non-finite norm");
        for (int k = 0; k < dim; k++) out[k] = (float) (embedding[k] / norm);
        return out;
    }

    public static double cosine(float[] a, float[] b) {
        if (a.length != b.length) throw new IllegalArgumentException("length " + a.length + " vs " + b.length);
        double dot = 0, na = 0, nb = 0;
        for (int k = 0; k < a.length; k++) {
            dot += (double) a[k] * b[k];
            na += (double) a[k] * a[k];
            nb += (double) b[k] * b[k];
        }
        if (na == 0 || nb == 0) return 0;
        return dot / Math.sqrt(na * nb);
    }

    public static boolean allFinite(float[] v) {
        for (float x : v) if (Float.isNaN(x) || Float.isInfinite(x)) return false;
        return true;
    }
}
