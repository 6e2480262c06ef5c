package dev.embg.core;

import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * A tokenizer.json (HF tokenizers) pipeline: added tokens -> normaliser -> pre-tokenizer -> BPE
 * -> truncation -> template. Only the pieces needed for ids (no offsets, no decoding).
 */
public final class HfTokenizer {
    private final AddedTokens added;
    private final Normalizer normalizer;
    private final PreTokenizer preTokenizer;
    private final BpeModel model;
    private final PostProcessor post;

    private HfTokenizer(AddedTokens added, Normalizer normalizer, PreTokenizer preTokenizer, BpeModel model, PostProcessor post) {
        this.added = added;
        this.normalizer = normalizer;
        this.preTokenizer = preTokenizer;
        this.model = model;
        this.post = post;
    }

    public static HfTokenizer fromJson(String tokenizerJson) {
        Map<String, Object> root = Json.parseObject(tokenizerJson);
        @SuppressWarnings("unchecked")
        List<Object> addedList = (List<Object>) root.get("added_tokens");
        return new HfTokenizer(
                AddedTokens.fromJson(addedList),
                Normalizer.fromJson(root.get("normalizer")),
                PreTokenizer.fromJson(root.get("pre_tokenizer")),
                BpeModel.fromJson(JsonAccess.obj(root, "model", "tokenizer.json")),
                PostProcessor.fromJson(root.get("post_processor")));
    }

    /** Ids of {@code text} without special tokens. */
    public int[] encodeRaw(String text) {
        IntList out = new IntList();
        for (AddedTokens.Piece raw : added.splitRaw(text)) {
            if (raw.id >= 0) { out.add(raw.id); continue; }
            String norm = normalizer.apply(raw.text);
            List<AddedTokens.Piece> pieces = added.hasNormalized()
                    ? added.splitNormalized(norm) : List.of(new AddedTokens.Piece(norm, -1));
            for (AddedTokens.Piece p : pieces) {
                if (p.id >= 0) { out.add(p.id); continue; }
                for (String word : preTokenizer.split(p.text)) model.tokenize(word, out);
            }
        }
        return out.toArray();
    }

    /**
     * Ids with the template's special tokens, at most {@code maxLength} of them: like HF with
     * truncation=True, the text is cut (from the right) to leave room for BOS/EOS, so EOS stays last.
     */
    public int[] encode(String text, int maxLength) {
        int[] ids = encodeRaw(text);
        int room = maxLength - post.addedCount();
        if (room < 0) throw new IllegalArgumentException("max length " + maxLength + " is shorter than the " + post.addedCount() + " special tokens");
        if (ids.length > room) ids = Arrays.copyOf(ids, room);
        return post.apply(ids);
    }

    /** Number of ids {@code text} needs including special tokens, before any truncation. */
    public int fullLength(String text) {
        return encodeRaw(text).length + post.addedCount();
    }
}
