package dev.embg.core;

import java.util.Arrays;

/**
 * BPE merges as an open-addressing map (left id, right id) -> (rank, merged id), two longs per
 * entry: the real Gemma 3 tokenizer has ~500k merges, too many for boxed HashMap entries on a phone.
 */
final class MergeTable {
    private static final long EMPTY = -1L;
    private long[] keys;
    private long[] values;
    private int size;

    MergeTable(int expected) {
        int cap = Integer.highestOneBit(Math.max(16, expected * 2 - 1)) << 1;
        keys = new long[cap];
        values = new long[cap];
        Arrays.fill(keys, EMPTY);
    }

    private static long key(int a, int b) {
        return ((long) a << 32) | (b & 0xffffffffL);
    }

    private int slot(long k) {
        long h = k * 0x9E3779B97F4A7C15L;
        return (int) (h >>> 40) & (keys.length - 1);
    }

    /** Keeps the first (lowest-rank) entry when a pair repeats, as HF's merge map does. */
    void putIfAbsent(int a, int b, int rank, int merged) {
        long k = key(a, b);
        int s = slot(k);
        while (keys[s] != EMPTY) {
            if (keys[s] == k) return;
            s = (s + 1) & (keys.length - 1);
        }
        keys[s] = k;
        values[s] = ((long) rank << 32) | (merged & 0xffffffffL);
        if (++size * 2 > keys.length) grow();
    }

    /** (rank << 32 | merged id), or -1 when the pair never merges. */
    long get(int a, int b) {
        long k = key(a, b);
        int s = slot(k);
        while (keys[s] != EMPTY) {
            if (keys[s] == k) return values[s];
            s = (s + 1) & (keys.length - 1);
        }
        return -1L;
    }

    private void grow() {
        long[] ok = keys, ov = values;
        keys = new long[ok.length * 2];
        values = new long[ok.length * 2];
        Arrays.fill(keys, EMPTY);
        size = 0;
        for (int i = 0; i < ok.length; i++) {
            if (ok[i] == EMPTY) continue;
            long k = ok[i];
            int s = slot(k);
            while (keys[s] != EMPTY) s = (s + 1) & (keys.length - 1);
            keys[s] = k;
            values[s] = ov[i];
            size++;
        }
    }
}
