package dev.embg.core;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * The "post_processor" of tokenizer.json for single texts. Gemma 3's is TemplateProcessing
 * {@code <bos> $A <eos>}: the special ids come from the file, never hard-coded.
 */
final class PostProcessor {
    private final List<int[]> template; // each entry: the special ids to emit, or null for the sequence
    private final int added;

    private PostProcessor(List<int[]> template) {
        this.template = template;
        int count = 0;
        for (int[] ids : template) if (ids != null) count += ids.length;
        this.added = count;
    }

    static PostProcessor fromJson(Object spec) {
        List<int[]> t = new ArrayList<>();
        if (spec == null) { t.add(null); return new PostProcessor(t); }
        @SuppressWarnings("unchecked")
        Map<String, Object> m = (Map<String, Object>) spec;
        String type = JsonAccess.str(m, "type", "post_processor");
        if (!"TemplateProcessing".equals(type)) {
            throw new UnsupportedOperationException("tokenizer.json post_processor type '" + type + "' is not implemented");
        }
        Map<String, Object> specials = JsonAccess.obj(m, "special_tokens", "TemplateProcessing");
        boolean sawSequence = false;
        for (Object o : JsonAccess.list(m, "single", "TemplateProcessing")) {
            @SuppressWarnings("unchecked")
            Map<String, Object> piece = (Map<String, Object>) o;
            if (piece.containsKey("Sequence")) {
                String which = JsonAccess.str(JsonAccess.obj(piece, "Sequence", "template"), "id", "template Sequence");
                if (!"A".equals(which)) throw new IllegalArgumentException("single template uses sequence " + which);
                t.add(null);
                sawSequence = true;
            } else {
                String name = JsonAccess.str(JsonAccess.obj(piece, "SpecialToken", "template"), "id", "template SpecialToken");
                Map<String, Object> tok = JsonAccess.obj(specials, name, "TemplateProcessing special_tokens");
                t.add(JsonAccess.intArray(tok.get("ids"), "special token " + name + " ids"));
            }
        }
        if (!sawSequence) throw new IllegalArgumentException("single template has no $A");
        return new PostProcessor(t);
    }

    /** How many ids the template adds around a text (2 for BOS+EOS): truncation leaves room for them. */
    int addedCount() { return added; }

    int[] apply(int[] ids) {
        IntList out = new IntList();
        for (int[] piece : template) {
            if (piece == null) out.addAll(ids);
            else out.addAll(piece);
        }
        return out.toArray();
    }
}
