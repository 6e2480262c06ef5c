package dev.embg.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * The tokenizer.json components on hand-made files whose right answers are known, so a failure
 * names the rule that broke (the goldens only say that some id differs).
 */
class TokenizerAlgorithmTest {
    private static final String VOCAB = "{\"<pad>\":0,\"<eos>\":1,\"<bos>\":2,\"<unk>\":3,\"\\n\":4,\"<0xC3>\":5,\"<0xA9>\":6,"
            + "\"a\":7,\"b\":8,\"c\":9,\"\\u2581\":10,\"ab\":11,\"bc\":12,\"abc\":13,\"\\u2581a\":14,\"aa\":15,\"\\n\\n\":16}";
    private static final String ADDED = "[{\"id\":0,\"content\":\"<pad>\",\"normalized\":false,\"special\":true},"
            + "{\"id\":1,\"content\":\"<eos>\",\"normalized\":false,\"special\":true},"
            + "{\"id\":2,\"content\":\"<bos>\",\"normalized\":false,\"special\":true},"
            + "{\"id\":4,\"content\":\"\\n\",\"normalized\":false,\"special\":false},"
            + "{\"id\":16,\"content\":\"\\n\\n\",\"normalized\":false,\"special\":false}]";
    private static final String POST = "{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<bos>\",\"type_id\":0}},"
            + "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}},{\"SpecialToken\":{\"id\":\"<eos>\",\"type_id\":0}}],"
            + "\"pair\":[],\"special_tokens\":{\"<bos>\":{\"id\":\"<bos>\",\"ids\":[2],\"tokens\":[\"<bos>\"]},"
            + "\"<eos>\":{\"id\":\"<eos>\",\"ids\":[1],\"tokens\":[\"<eos>\"]}}}";

    private static HfTokenizer tok(String merges, boolean fuseUnk, String normalizer) {
        String json = "{\"version\":\"1.0\",\"added_tokens\":" + ADDED + ",\"normalizer\":" + normalizer
                + ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"String\":\" \"},\"behavior\":\"MergedWithPrevious\",\"invert\":false},"
                + "\"post_processor\":" + POST + ",\"decoder\":null,\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":\"<unk>\","
                + "\"continuing_subword_prefix\":null,\"end_of_word_suffix\":null,\"fuse_unk\":" + fuseUnk
                + ",\"byte_fallback\":true,\"ignore_merges\":false,\"vocab\":" + VOCAB + ",\"merges\":" + merges + "}}";
        return HfTokenizer.fromJson(json);
    }

    private static final String REPLACE = "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}";

    private static HfTokenizer tok(String merges) {
        return tok(merges, true, REPLACE);
    }

    @Test
    void lowestRankMergesFirst() {
        assertArrayEquals(new int[] {7, 12}, tok("[[\"b\",\"c\"],[\"a\",\"b\"],[\"ab\",\"c\"]]").encodeRaw("abc"));
        assertArrayEquals(new int[] {13}, tok("[[\"a\",\"b\"],[\"b\",\"c\"],[\"ab\",\"c\"]]").encodeRaw("abc"));
    }

    @Test
    void equalRanksMergeLeftmostFirst() {
        assertArrayEquals(new int[] {15, 7}, tok("[[\"a\",\"a\"]]").encodeRaw("aaa"));
        assertArrayEquals(new int[] {15, 15}, tok("[[\"a\",\"a\"]]").encodeRaw("aaaa"));
    }

    @Test
    void oldStyleMergeStrings() {
        assertArrayEquals(new int[] {13}, tok("[\"a b\",\"ab c\"]").encodeRaw("abc"));
    }

    @Test
    void byteFallbackAndFusedUnknown() {
        HfTokenizer t = tok("[]");
        assertArrayEquals(new int[] {5, 6}, t.encodeRaw("\u00e9"));          // é = C3 A9, both bytes in the vocab
        assertArrayEquals(new int[] {7, 3, 8}, t.encodeRaw("a\u4e16\u754cb"));  // bytes of 世界 missing: one fused <unk>
        assertArrayEquals(new int[] {7, 3, 3, 8}, tok("[]", false, REPLACE).encodeRaw("a\u4e16\u754cb"));
        assertArrayEquals(new int[] {3}, t.encodeRaw("\ud83d\ude80"));       // one code point, not two UTF-16 units
    }

    @Test
    void spacesBecomeMetaspaceAndMerge() {
        assertArrayEquals(new int[] {14, 10, 8}, tok("[[\"\u2581\",\"a\"]]").encodeRaw(" a b"));
    }

    @Test
    void addedTokensLeftmostLongestOnRawText() {
        HfTokenizer t = tok("[]");
        assertArrayEquals(new int[] {16, 4}, t.encodeRaw("\n\n\n"));
        assertArrayEquals(new int[] {7, 2, 8, 1}, t.encodeRaw("a<bos>b<eos>"));
        assertArrayEquals(new int[] {3, 8, 3, 8, 3}, t.encodeRaw("<bo>b<"));  // near-misses are ordinary text (unknown chars)
    }

    @Test
    void templateAndTruncationKeepEos() {
        HfTokenizer t = tok("[]");
        assertArrayEquals(new int[] {2, 7, 8, 9, 1}, t.encode("abc", 10));
        assertArrayEquals(new int[] {2, 7, 8, 1}, t.encode("abc", 4));
        assertArrayEquals(new int[] {2, 1}, t.encode("", 4));
        assertThrows(IllegalArgumentException.class, () -> t.encode("abc", 1));
        assertEquals(5, t.fullLength("abc"));
    }

    @Test
    void splitBehavioursAsHfTokenizers() {
        // expected values printed by the Python tokenizers library: Split("-", behavior).pre_tokenize_str(...)
        String[][] cases = {
            {"MergedWithPrevious", "a-|b-|-|c", "-|-|a-"},
            {"MergedWithNext", "a|-b|-|-c", "-|-a|-"},
            {"Removed", "a|b|c", "a"},
            {"Isolated", "a|-|b|-|-|c", "-|-|a|-"},
            {"Contiguous", "a|-|b|--|c", "--|a|-"},
        };
        for (String[] c : cases) {
            PreTokenizer p = PreTokenizer.fromJson(Json.parse(
                    "{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"invert\":false,\"behavior\":\"" + c[0] + "\"}"));
            assertEquals(List.of(c[1].split("\\|")), p.split("a-b--c"), c[0]);
            assertEquals(List.of(c[2].split("\\|")), p.split("--a-"), c[0]);
        }
    }

    @Test
    void normaliserSequenceAndPrepend() {
        Normalizer n = Normalizer.fromJson(Json.parse("{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},"
                + REPLACE + "]}"));
        assertEquals("\u2581a\u2581b", n.apply("a b"));
        assertEquals("", n.apply(""));
    }

    @Test
    void unknownComponentsAreRefusedByName() {
        UnsupportedOperationException e = assertThrows(UnsupportedOperationException.class,
                () -> tok("[]", true, "{\"type\":\"Precompiled\",\"precompiled_charsmap\":\"\"}"));
        assertTrue(e.getMessage().contains("Precompiled"));
    }

    @Test
    void mergeWithUnknownTokenIsAnError() {
        assertThrows(IllegalArgumentException.class, () -> tok("[[\"c\",\"a\"]]"));
    }
}
