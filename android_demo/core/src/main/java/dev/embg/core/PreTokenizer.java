package dev.embg.core;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The "pre_tokenizer" of tokenizer.json: cuts a normalised piece into words that BPE encodes
 * one at a time. Gemma 3's is {@code Split " " MergedWithPrevious}, which after the
 * {@code " " -> "▁"} normaliser finds nothing to split: the whole piece is one BPE word.
 * Implemented faithfully anyway (HF's Split semantics), and unknown types are refused.
 */
interface PreTokenizer {
    List<String> split(String s);

    static PreTokenizer fromJson(Object spec) {
        if (spec == null) return s -> nonEmpty(List.of(s));
        @SuppressWarnings("unchecked")
        Map<String, Object> m = (Map<String, Object>) spec;
        String type = JsonAccess.str(m, "type", "pre_tokenizer");
        switch (type) {
            case "Sequence": {
                List<PreTokenizer> parts = new ArrayList<>();
                for (Object o : JsonAccess.list(m, "pretokenizers", "pre_tokenizer Sequence")) parts.add(fromJson(o));
                return s -> {
                    List<String> pieces = nonEmpty(List.of(s));
                    for (PreTokenizer p : parts) {
                        List<String> next = new ArrayList<>();
                        for (String piece : pieces) next.addAll(p.split(piece));
                        pieces = next;
                    }
                    return pieces;
                };
            }
            case "Split": {
                Map<String, Object> p = JsonAccess.obj(m, "pattern", "pre_tokenizer Split");
                Pattern re = p.containsKey("String")
                        ? Pattern.compile(Pattern.quote(JsonAccess.str(p, "String", "Split pattern")))
                        : Pattern.compile(JsonAccess.str(p, "Regex", "Split pattern"));
                String behavior = JsonAccess.str(m, "behavior", "pre_tokenizer Split");
                boolean invert = JsonAccess.bool(m, "invert", false);
                return s -> split(s, re, behavior, invert);
            }
            default:
                throw new UnsupportedOperationException("tokenizer.json pre_tokenizer type '" + type + "' is not implemented");
        }
    }

    private static List<String> nonEmpty(List<String> in) {
        List<String> out = new ArrayList<>();
        for (String s : in) if (!s.isEmpty()) out.add(s);
        return out;
    }

    /** HF tokenizers' SplitDelimiterBehavior over (start, end, isMatch) segments. */
    private static List<String> split(String s, Pattern re, String behavior, boolean invert) {
        List<int[]> segs = new ArrayList<>(); // {start, end, isMatch}
        if (s.isEmpty()) return new ArrayList<>();
        Matcher mt = re.matcher(s);
        int last = 0;
        while (mt.find()) {
            if (mt.end() == mt.start()) continue; // empty matches split nothing
            if (mt.start() > last) segs.add(new int[] {last, mt.start(), 0});
            segs.add(new int[] {mt.start(), mt.end(), 1});
            last = mt.end();
        }
        if (last < s.length()) segs.add(new int[] {last, s.length(), 0});
        if (invert) for (int[] g : segs) g[2] = 1 - g[2];

        List<int[]> out = new ArrayList<>();
        switch (behavior) {
            case "Removed":
                for (int[] g : segs) if (g[2] == 0) out.add(g);
                break;
            case "Isolated":
                out.addAll(segs);
                break;
            case "MergedWithPrevious": {
                boolean prevMatch = false;
                for (int[] g : segs) {
                    if (g[2] == 1 && !prevMatch && !out.isEmpty()) out.get(out.size() - 1)[1] = g[1];
                    else out.add(new int[] {g[0], g[1], 0});
                    prevMatch = g[2] == 1;
                }
                break;
            }
            case "MergedWithNext": {
                boolean prevMatch = false;
                List<int[]> rev = new ArrayList<>();
                for (int k = segs.size() - 1; k >= 0; k--) {
                    int[] g = segs.get(k);
                    if (g[2] == 1 && !prevMatch && !rev.isEmpty()) rev.get(rev.size() - 1)[0] = g[0];
                    else rev.add(new int[] {g[0], g[1], 0});
                    prevMatch = g[2] == 1;
                }
                for (int k = rev.size() - 1; k >= 0; k--) out.add(rev.get(k));
                break;
            }
            case "Contiguous": {
                boolean prevMatch = false;
                for (int[] g : segs) {
                    boolean isMatch = g[2] == 1;
                    if (isMatch == prevMatch && !out.isEmpty()) out.get(out.size() - 1)[1] = g[1];
                    else out.add(new int[] {g[0], g[1], 0});
                    prevMatch = isMatch;
                }
                break;
            }
            default:
                throw new UnsupportedOperationException("Split behavior '" + behavior + "' is not implemented");
        }
        List<String> pieces = new ArrayList<>();
        for (int[] g : out) if (g[1] > g[0]) pieces.add(s.substring(g[0], g[1]));
        return pieces;
    }
}
