package dev.embg.core;

import java.text.Normalizer.Form;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The "normalizer" of tokenizer.json. Gemma 3 uses only {@code Replace " " -> "▁"}; the other
 * types here are the few that SentencePiece-derived tokenizers commonly carry. Anything else
 * is refused by name rather than silently skipped, because a skipped normaliser gives wrong ids.
 */
interface Normalizer {
    String apply(String s);

    static Normalizer fromJson(Object spec) {
        if (spec == null) return s -> s;
        @SuppressWarnings("unchecked")
        Map<String, Object> m = (Map<String, Object>) spec;
        String type = JsonAccess.str(m, "type", "normalizer");
        switch (type) {
            case "Sequence": {
                List<Normalizer> parts = new ArrayList<>();
                for (Object o : JsonAccess.list(m, "normalizers", "normalizer Sequence")) parts.add(fromJson(o));
                return s -> {
                    for (Normalizer n : parts) s = n.apply(s);
                    return s;
                };
            }
            case "Replace": {
                String content = JsonAccess.str(m, "content", "normalizer Replace");
                Map<String, Object> p = JsonAccess.obj(m, "pattern", "normalizer Replace");
                if (p.containsKey("String")) {
                    String from = JsonAccess.str(p, "String", "normalizer Replace pattern");
                    return s -> from.isEmpty() ? s : s.replace(from, content);
                }
                Pattern re = Pattern.compile(JsonAccess.str(p, "Regex", "normalizer Replace pattern"));
                String literal = Matcher.quoteReplacement(content);
                return s -> re.matcher(s).replaceAll(literal);
            }
            case "Prepend": {
                String prefix = JsonAccess.str(m, "prepend", "normalizer Prepend");
                return s -> s.isEmpty() ? s : prefix + s; // HF prepends only to non-empty pieces
            }
            case "NFC": return s -> java.text.Normalizer.normalize(s, Form.NFC);
            case "NFD": return s -> java.text.Normalizer.normalize(s, Form.NFD);
            case "NFKC": return s -> java.text.Normalizer.normalize(s, Form.NFKC);
            case "NFKD": return s -> java.text.Normalizer.normalize(s, Form.NFKD);
            case "Lowercase": return s -> s.toLowerCase(Locale.ROOT);
            default:
                throw new UnsupportedOperationException("tokenizer.json normalizer type '" + type + "' is not implemented");
        }
    }
}
