package dev.embg.core;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The "added_tokens" of tokenizer.json: strings such as {@code <bos>} or {@code "\n"} that are cut
 * out of the text before normalisation and become one id each.
 *
 * <p>Mirrors HF tokenizers' AddedVocabulary: leftmost-longest matching (its Aho-Corasick
 * MatchKind::LeftmostLongest), single_word / lstrip / rstrip handling, tokens with
 * {@code normalized=false} matched on the raw text, the others on the normalised text.
 */
final class AddedTokens {
    /** A piece of text; {@code id >= 0} when it is an added token. */
    static final class Piece {
        final String text;
        final int id;

        Piece(String text, int id) {
            this.text = text;
            this.id = id;
        }
    }

    private static final class Token {
        final String content;
        final int id;
        final boolean singleWord, lstrip, rstrip;

        Token(String content, int id, boolean singleWord, boolean lstrip, boolean rstrip) {
            this.content = content;
            this.id = id;
            this.singleWord = singleWord;
            this.lstrip = lstrip;
            this.rstrip = rstrip;
        }
    }

    private static final class Node {
        final Map<Character, Node> next = new HashMap<>();
        Token token; // a token ends here
    }

    private final Node raw = new Node();
    private final Node normalized = new Node();
    private boolean hasRaw, hasNormalized;

    static AddedTokens fromJson(List<Object> added) {
        AddedTokens t = new AddedTokens();
        if (added == null) return t;
        for (Object o : added) {
            @SuppressWarnings("unchecked")
            Map<String, Object> m = (Map<String, Object>) o;
            String content = JsonAccess.str(m, "content", "added_tokens");
            if (content.isEmpty()) continue;
            Token tok = new Token(content, JsonAccess.integer(m, "id", "added_tokens"),
                    JsonAccess.bool(m, "single_word", false), JsonAccess.bool(m, "lstrip", false),
                    JsonAccess.bool(m, "rstrip", false));
            boolean norm = JsonAccess.bool(m, "normalized", !JsonAccess.bool(m, "special", false));
            Node root = norm ? t.normalized : t.raw;
            if (norm) t.hasNormalized = true; else t.hasRaw = true;
            Node n = root;
            for (int k = 0; k < content.length(); k++) n = n.next.computeIfAbsent(content.charAt(k), c -> new Node());
            n.token = tok;
        }
        return t;
    }

    boolean hasRaw() { return hasRaw; }

    boolean hasNormalized() { return hasNormalized; }

    List<Piece> splitRaw(String s) { return split(s, raw); }

    List<Piece> splitNormalized(String s) { return split(s, normalized); }

    private static List<Piece> split(String s, Node root) {
        List<Piece> out = new ArrayList<>();
        if (s.isEmpty()) { out.add(new Piece(s, -1)); return out; }
        int startOffset = 0;
        int i = 0;
        while (i < s.length()) {
            // longest token starting at i (leftmost-longest: the first position with any match wins)
            Node n = root;
            Token best = null;
            int bestEnd = -1;
            for (int k = i; k < s.length(); k++) {
                n = n.next.get(s.charAt(k));
                if (n == null) break;
                if (n.token != null) { best = n.token; bestEnd = k + 1; }
            }
            if (best == null) { i++; continue; }
            int start = i, stop = bestEnd;
            i = bestEnd; // the automaton resumes after a match
            if (best.singleWord) {
                boolean startOk = start == 0 || !isWordChar(s.codePointBefore(start));
                boolean stopOk = stop == s.length() || !isWordChar(s.codePointAt(stop));
                if (!startOk || !stopOk) continue;
            }
            if (best.lstrip) {
                int ns = start;
                while (ns > 0 && Character.isWhitespace(s.codePointBefore(ns))) ns -= Character.charCount(s.codePointBefore(ns));
                start = Math.max(ns, startOffset);
            }
            if (best.rstrip) {
                while (stop < s.length() && Character.isWhitespace(s.codePointAt(stop))) stop += Character.charCount(s.codePointAt(stop));
            }
            if (startOffset < start) out.add(new Piece(s.substring(startOffset, start), -1));
            out.add(new Piece(s.substring(start, stop), best.id));
            startOffset = stop;
        }
        if (startOffset != s.length()) out.add(new Piece(s.substring(startOffset), -1));
        return out;
    }

    private static boolean isWordChar(int cp) {
        return Character.isLetterOrDigit(cp) || cp == '_';
    }
}
