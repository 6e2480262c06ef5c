package dev.embg.core;

import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.PriorityQueue;

/**
 * The "model" of tokenizer.json when its type is BPE, as HF tokenizers runs it: one symbol per
 * Unicode character (code point, not UTF-16 unit), characters missing from the vocab become
 * {@code <0xNN>} byte tokens (byte_fallback) or one fused {@code <unk>}, then merges are applied
 * lowest rank first, leftmost first among equal ranks.
 */
final class BpeModel {
    private final Map<String, Integer> vocab;
    private final MergeTable merges;
    private final Integer unkId;
    private final boolean byteFallback, fuseUnk, ignoreMerges;
    private final String prefix, suffix;
    private final int[] byteIds = new int[256]; // -1 when the vocab lacks that byte token

    private BpeModel(Map<String, Integer> vocab, MergeTable merges, Integer unkId, boolean byteFallback,
                     boolean fuseUnk, boolean ignoreMerges, String prefix, String suffix) {
        this.vocab = vocab;
        this.merges = merges;
        this.unkId = unkId;
        this.byteFallback = byteFallback;
        this.fuseUnk = fuseUnk;
        this.ignoreMerges = ignoreMerges;
        this.prefix = prefix;
        this.suffix = suffix;
        for (int b = 0; b < 256; b++) {
            Integer id = vocab.get(String.format("<0x%02X>", b));
            byteIds[b] = id == null ? -1 : id;
        }
    }

    static BpeModel fromJson(Map<String, Object> m) {
        String type = JsonAccess.str(m, "type", "model");
        if (!"BPE".equals(type)) throw new UnsupportedOperationException("tokenizer.json model type '" + type + "' is not implemented (BPE only)");
        if (m.get("dropout") != null) throw new UnsupportedOperationException("BPE dropout is random: refusing it for deterministic embeddings");
        Map<String, Object> v = JsonAccess.obj(m, "vocab", "model");
        Map<String, Integer> vocab = new HashMap<>(v.size() * 2);
        for (Map.Entry<String, Object> e : v.entrySet()) vocab.put(e.getKey(), Math.toIntExact((Long) e.getValue()));
        String prefix = m.get("continuing_subword_prefix") instanceof String ? (String) m.get("continuing_subword_prefix") : null;
        String suffix = m.get("end_of_word_suffix") instanceof String ? (String) m.get("end_of_word_suffix") : null;
        List<Object> list = JsonAccess.list(m, "merges", "model");
        MergeTable table = new MergeTable(list.size());
        int plen = prefix == null ? 0 : prefix.length();
        for (int rank = 0; rank < list.size(); rank++) {
            Object o = list.get(rank);
            String a, b;
            if (o instanceof String) { // older files: "a b"
                String s = (String) o;
                int sp = s.indexOf(' ');
                if (sp < 0) throw new IllegalArgumentException("merge #" + rank + " is not 'a b': " + s);
                a = s.substring(0, sp);
                b = s.substring(sp + 1);
            } else {
                List<?> pair = (List<?>) o;
                a = (String) pair.get(0);
                b = (String) pair.get(1);
            }
            Integer ia = vocab.get(a), ib = vocab.get(b);
            String mergedText = a + (plen > 0 && b.startsWith(prefix) ? b.substring(plen) : b);
            Integer im = vocab.get(mergedText);
            if (ia == null || ib == null || im == null) {
                throw new IllegalArgumentException("merge #" + rank + " (" + a + ", " + b + ") uses a token missing from the vocab");
            }
            table.putIfAbsent(ia, ib, rank, im);
        }
        Integer unk = null;
        if (m.get("unk_token") instanceof String) unk = vocab.get((String) m.get("unk_token"));
        return new BpeModel(vocab, table, unk, JsonAccess.bool(m, "byte_fallback", false),
                JsonAccess.bool(m, "fuse_unk", false), JsonAccess.bool(m, "ignore_merges", false), prefix, suffix);
    }

    /** Appends the ids of one pre-tokenized word to {@code out}. */
    void tokenize(String word, IntList out) {
        if (word.isEmpty()) return;
        if (ignoreMerges) {
            Integer whole = vocab.get(word);
            if (whole != null) { out.add(whole); return; }
        }
        IntList symbols = new IntList();
        int unk = -1; // pending (possibly fused) unknown
        int n = word.length();
        for (int i = 0; i < n; ) {
            int cp = word.codePointAt(i);
            int end = i + Character.charCount(cp);
            String s = word.substring(i, end);
            if (prefix != null && i > 0) s = prefix + s;
            if (suffix != null && end == n) s = s + suffix;
            i = end;
            Integer id = vocab.get(s);
            if (id != null) {
                if (unk >= 0) { symbols.add(unk); unk = -1; }
                symbols.add(id);
                continue;
            }
            if (byteFallback && addBytes(s, symbols)) continue; // HF does not flush a pending unk here either
            if (unkId == null) throw new IllegalStateException("character '" + s + "' is not in the vocab and the model has no unk_token");
            if (unk >= 0 && !fuseUnk) symbols.add(unk);
            unk = unkId;
        }
        if (unk >= 0) symbols.add(unk);
        mergeAll(symbols, out);
    }

    private boolean addBytes(String s, IntList symbols) {
        byte[] bytes = s.getBytes(StandardCharsets.UTF_8);
        for (byte b : bytes) if (byteIds[b & 0xff] < 0) return false;
        for (byte b : bytes) symbols.add(byteIds[b & 0xff]);
        return true;
    }

    /** HF's Word::merge_all: a heap of candidate pairs ordered by (rank, position), stale ones skipped. */
    private void mergeAll(IntList symbols, IntList out) {
        int n = symbols.size();
        int[] id = symbols.toArray();
        int[] prev = new int[n], next = new int[n];
        boolean[] gone = new boolean[n];
        for (int k = 0; k < n; k++) { prev[k] = k - 1; next[k] = k + 1 < n ? k + 1 : -1; }
        PriorityQueue<long[]> heap = new PriorityQueue<>((x, y) -> x[0] != y[0] ? Long.compare(x[0], y[0]) : Long.compare(x[1], y[1]));
        for (int k = 0; k + 1 < n; k++) push(heap, id, k, k + 1);
        while (!heap.isEmpty()) {
            long[] top = heap.poll(); // {rank, pos, mergedId}
            int pos = (int) top[1];
            if (gone[pos]) continue;
            int right = next[pos];
            if (right < 0) continue;
            long found = merges.get(id[pos], id[right]);
            if (found < 0 || (int) found != (int) top[2]) continue; // stale: a neighbour changed
            id[pos] = (int) top[2];
            gone[right] = true;
            next[pos] = next[right];
            if (next[right] >= 0) prev[next[right]] = pos;
            if (prev[pos] >= 0) push(heap, id, prev[pos], pos);
            if (next[pos] >= 0) push(heap, id, pos, next[pos]);
        }
        for (int k = 0; k < n; k++) if (!gone[k]) out.add(id[k]);
    }

    private void push(PriorityQueue<long[]> heap, int[] id, int left, int right) {
        long m = merges.get(id[left], id[right]);
        if (m >= 0) heap.add(new long[] {m >>> 32, left, (int) m});
    }
}
