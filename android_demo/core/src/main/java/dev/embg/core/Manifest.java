package dev.embg.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** The parts of a bundle's manifest.json an app needs: model file, buckets, I/O names, dims, prompts, special ids. */
public final class Manifest {
    /** One fixed-length signature of the .tflite file. */
    public static final class Signature {
        public final String name;
        public final int seqLen;

        Signature(String name, int seqLen) {
            this.name = name;
            this.seqLen = seqLen;
        }
    }

    public final String modelId;
    public final String target;
    public final String modelFile;
    public final int embeddingDim;
    public final List<Integer> matryoshkaDims;
    public final Map<String, String> prompts;
    public final List<Signature> signatures; // sorted by seqLen, ascending
    public final List<String> inputNames;
    public final String outputName;
    public final int bosId, eosId, padId;
    public final String recipe;

    private Manifest(Map<String, Object> m) {
        String w = "manifest.json";
        modelId = JsonAccess.str(JsonAccess.obj(m, "model", w), "id", w + " model");
        target = JsonAccess.str(m, "target", w);
        modelFile = JsonAccess.str(m, "model_file", w);
        embeddingDim = JsonAccess.integer(m, "embedding_dim", w);
        Object recipeObj = m.get("recipe");
        recipe = recipeObj instanceof Map ? String.valueOf(((Map<?, ?>) recipeObj).get("name")) : String.valueOf(recipeObj);
        List<Integer> dims = new ArrayList<>();
        if (m.get("matryoshka_dims") != null) for (int d : JsonAccess.intArray(m.get("matryoshka_dims"), w + " matryoshka_dims")) dims.add(d);
        else dims.add(embeddingDim);
        matryoshkaDims = Collections.unmodifiableList(dims);
        Map<String, String> p = new LinkedHashMap<>();
        for (Map.Entry<String, Object> e : JsonAccess.obj(m, "prompts", w).entrySet()) p.put(e.getKey(), (String) e.getValue());
        prompts = Collections.unmodifiableMap(p);
        List<Signature> sigs = new ArrayList<>();
        for (Object o : JsonAccess.list(m, "signatures", w)) {
            @SuppressWarnings("unchecked")
            Map<String, Object> s = (Map<String, Object>) o;
            sigs.add(new Signature(JsonAccess.str(s, "name", w + " signatures"), JsonAccess.integer(s, "seq_len", w + " signatures")));
        }
        if (sigs.isEmpty()) throw new IllegalArgumentException(w + ": no signatures (buckets)");
        sigs.sort(Comparator.comparingInt(s -> s.seqLen));
        signatures = Collections.unmodifiableList(sigs);
        List<String> ins = new ArrayList<>();
        for (Object o : JsonAccess.list(m, "inputs", w)) ins.add(JsonAccess.str(castMap(o), "name", w + " inputs"));
        inputNames = Collections.unmodifiableList(ins);
        outputName = JsonAccess.str(castMap(JsonAccess.list(m, "outputs", w).get(0)), "name", w + " outputs");
        Map<String, Object> tok = JsonAccess.obj(m, "tokenizer", w);
        bosId = JsonAccess.integer(tok, "bos_id", w + " tokenizer");
        eosId = JsonAccess.integer(tok, "eos_id", w + " tokenizer");
        padId = JsonAccess.integer(tok, "pad_id", w + " tokenizer");
        if (!"right".equals(tok.getOrDefault("padding_side", "right"))) {
            throw new IllegalArgumentException(w + ": padding_side must be right (the model masks trailing pads)");
        }
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> castMap(Object o) {
        return (Map<String, Object>) o;
    }

    public static Manifest parse(String json) {
        return new Manifest(Json.parseObject(json));
    }

    public int largestBucket() {
        return signatures.get(signatures.size() - 1).seqLen;
    }

    /** The smallest bucket holding {@code length} tokens, else the largest (the caller truncates): as embg's choose_bucket. */
    public Signature bucketFor(int length) {
        for (Signature s : signatures) if (s.seqLen >= length) return s;
        return signatures.get(signatures.size() - 1);
    }

    /** The prompt text for a prompt name ("query", "document", ...); "" or null means no prompt. */
    public String promptText(String name) {
        if (name == null || name.isEmpty()) return "";
        String p = prompts.get(name);
        if (p == null) throw new IllegalArgumentException("unknown prompt '" + name + "'; this bundle has " + prompts.keySet());
        return p;
    }
}
