package dev.embg.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;

/** The JVM tokenizer against ids written by embg's Python tokenizer (tests/test_android_golden.py). */
class GoldenIdsTest {
    private static Map<String, Object> golden() {
        return Json.parseObject(Resources.text("golden/tiny_ids.json"));
    }

    @SuppressWarnings("unchecked")
    private static List<Map<String, Object>> cases() {
        List<Map<String, Object>> out = new ArrayList<>();
        for (Object o : (List<Object>) golden().get("cases")) out.add((Map<String, Object>) o);
        return out;
    }

    @TestFactory
    List<DynamicTest> idsMatchPython() {
        EmbedEncoder enc = new EmbedEncoder(Resources.manifest(), Resources.tinyTokenizer());
        List<DynamicTest> tests = new ArrayList<>();
        for (Map<String, Object> c : cases()) {
            String name = (String) c.get("name");
            tests.add(DynamicTest.dynamicTest(name, () -> {
                String text = (String) c.get("text");
                String prompt = (String) c.get("prompt");
                int[] want = JsonAccess.intArray(c.get("ids"), name);
                int[] got = enc.ids(text, prompt);
                assertArrayEquals(want, got, () -> name + ": ids differ for " + text);
                EmbedEncoder.Encoded e = enc.encode(text, prompt);
                assertEquals(((Long) c.get("bucket")).intValue(), e.signature.seqLen, name + ": bucket");
                assertEquals(c.get("truncated"), e.truncated, name + ": truncated flag");
                assertArrayEquals(want, e.realIds());
                for (int k = 0; k < e.inputIds.length; k++) {
                    boolean real = k < want.length;
                    assertEquals(real ? 1 : 0, e.attentionMask[k], name + ": mask at " + k);
                    if (!real) assertEquals(enc.manifest().padId, e.inputIds[k], name + ": pad at " + k);
                }
            }));
        }
        return tests;
    }

    @Test
    void goldensCoverTruncationAndEveryBucket() {
        boolean truncated = false, eosLastWhenTruncated = true;
        int maxLen = 0;
        for (Map<String, Object> c : cases()) {
            int[] ids = JsonAccess.intArray(c.get("ids"), "ids");
            maxLen = Math.max(maxLen, ids.length);
            if (Boolean.TRUE.equals(c.get("truncated"))) {
                truncated = true;
                eosLastWhenTruncated &= ids[ids.length - 1] == 1;
            }
        }
        assertTrue(truncated, "no golden text exceeds the largest bucket");
        assertTrue(eosLastWhenTruncated, "truncation must keep EOS as the last id");
        assertEquals(Resources.manifest().largestBucket(), maxLen);
    }

    @Test
    void rawEncodingHasNoSpecials() {
        int[] ids = Resources.tinyTokenizer().encodeRaw("hello world");
        assertTrue(ids.length > 0);
        for (int id : ids) assertTrue(id > 2, "special id in raw encoding");
        assertArrayEquals(new int[] {2, 1}, Resources.tinyTokenizer().encode("", 64));
    }
}
