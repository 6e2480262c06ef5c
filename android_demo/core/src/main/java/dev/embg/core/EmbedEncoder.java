package dev.embg.core;

import java.util.Arrays;

/**
 * Text -> model inputs exactly as embg's EmbedTokenizer.encode does it for one text: prompt
 * prepended, BOS/EOS from the tokenizer, truncated to the largest bucket keeping EOS last,
 * right-padded with the pad id to the smallest bucket that fits.
 */
public final class EmbedEncoder {
    /** int32 inputs for one signature of the model. */
    public static final class Encoded {
        public final int[] inputIds;      // length == signature.seqLen
        public final int[] attentionMask; // 1 for real tokens
        public final int tokenCount;      // real tokens after truncation
        public final boolean truncated;
        public final Manifest.Signature signature;

        Encoded(int[] inputIds, int[] attentionMask, int tokenCount, boolean truncated, Manifest.Signature signature) {
            this.inputIds = inputIds;
            this.attentionMask = attentionMask;
            this.tokenCount = tokenCount;
            this.truncated = truncated;
            this.signature = signature;
        }

        public int[] realIds() { return Arrays.copyOf(inputIds, tokenCount); }
    }

    private final Manifest manifest;
    private final HfTokenizer tokenizer;

    public EmbedEncoder(Manifest manifest, HfTokenizer tokenizer) {
        this.manifest = manifest;
        this.tokenizer = tokenizer;
    }

    public Manifest manifest() { return manifest; }

    /** Real token ids (no padding), truncated to the largest bucket. */
    public int[] ids(String text, String promptName) {
        return tokenizer.encode(manifest.promptText(promptName) + text, manifest.largestBucket());
    }

    public Encoded encode(String text, String promptName) {
        String full = manifest.promptText(promptName) + text;
        int limit = manifest.largestBucket();
        boolean truncated = tokenizer.fullLength(full) > limit;
        return pad(tokenizer.encode(full, limit), truncated);
    }

    /** Pads already-tokenized ids (e.g. ids pushed by the adb parity runner) into their bucket. */
    public Encoded pad(int[] ids, boolean truncated) {
        Manifest.Signature sig = manifest.bucketFor(ids.length);
        if (ids.length > sig.seqLen) {
            throw new IllegalArgumentException(ids.length + " ids do not fit the largest bucket " + sig.seqLen + ": truncate when tokenizing");
        }
        int[] padded = new int[sig.seqLen];
        int[] mask = new int[sig.seqLen];
        Arrays.fill(padded, manifest.padId);
        System.arraycopy(ids, 0, padded, 0, ids.length);
        Arrays.fill(mask, 0, ids.length, 1);
        return new Encoded(padded, mask, ids.length, truncated, sig);
    }
}
