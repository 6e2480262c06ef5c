package dev.embg.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** manifest.json as the app reads it, against the values Python read from the same file. */
class ManifestTest {
    private final Manifest m = Resources.manifest();
    private final Map<String, Object> want = Json.parseObject(Resources.text("golden/manifest_expected.json"));

    @Test
    void fieldsMatchPython() {
        assertEquals(want.get("model_file"), m.modelFile);
        assertEquals(((Long) want.get("embedding_dim")).intValue(), m.embeddingDim);
        List<Integer> dims = new ArrayList<>();
        for (int d : JsonAccess.intArray(want.get("matryoshka_dims"), "dims")) dims.add(d);
        assertEquals(dims, m.matryoshkaDims);
        assertEquals(want.get("prompts"), m.prompts);
        assertEquals(want.get("inputs"), m.inputNames);
        assertEquals(want.get("output"), m.outputName);
        assertEquals(((Long) want.get("bos_id")).intValue(), m.bosId);
        assertEquals(((Long) want.get("eos_id")).intValue(), m.eosId);
        assertEquals(((Long) want.get("pad_id")).intValue(), m.padId);
        List<?> sigs = (List<?>) want.get("signatures");
        assertEquals(sigs.size(), m.signatures.size());
        for (int k = 0; k < sigs.size(); k++) {
            List<?> s = (List<?>) sigs.get(k);
            assertEquals(s.get(0), m.signatures.get(k).name);
            assertEquals(((Long) s.get(1)).intValue(), m.signatures.get(k).seqLen);
        }
    }

    @Test
    void bucketChoiceMatchesPythonForEveryLength() {
        int[] expected = JsonAccess.intArray(want.get("bucket_for_length"), "bucket_for_length");
        for (int n = 0; n < expected.length; n++) assertEquals(expected[n], m.bucketFor(n).seqLen, "length " + n);
    }

    @Test
    void promptsByName() {
        assertEquals("task: search result | query: ", m.promptText("query"));
        assertEquals("title: none | text: ", m.promptText("document"));
        assertEquals("", m.promptText(""));
        assertEquals("", m.promptText(null));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> m.promptText("qeury"));
        assertTrue(e.getMessage().contains("qeury"));
    }

    @Test
    void signaturesAreSortedWhateverTheFileOrder() {
        String json = Resources.text("manifest.json").replace("\"seq64\"", "\"tmp\"")
                .replace("\"seq256\"", "\"seq64\"").replace("\"tmp\"", "\"seq256\"")
                .replace("\"seq_len\": 64", "\"seq_len\": 999").replace("\"seq_len\": 256", "\"seq_len\": 64")
                .replace("\"seq_len\": 999", "\"seq_len\": 256");
        Manifest swapped = Manifest.parse(json);
        assertEquals(64, swapped.signatures.get(0).seqLen);
        assertEquals("seq64", swapped.signatures.get(0).name);
    }

    @Test
    void missingFieldIsNamed() {
        String json = Resources.text("manifest.json").replace("\"model_file\"", "\"model_fil\"");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> Manifest.parse(json));
        assertTrue(e.getMessage().contains("model_file"), e.getMessage());
    }

    @Test
    void leftPaddingIsRefused() {
        String json = Resources.text("manifest.json").replace("\"padding_side\": \"right\"", "\"padding_side\": \"left\"");
        assertThrows(IllegalArgumentException.class, () -> Manifest.parse(json));
    }
}
