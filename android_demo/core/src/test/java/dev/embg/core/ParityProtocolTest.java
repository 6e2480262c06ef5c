package dev.embg.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** The adb runner's request/response files, and padding of pushed ids into their bucket. */
class ParityProtocolTest {
    @Test
    void requestParses() {
        ParityProtocol.Request r = ParityProtocol.parseRequest(
                "{\"schema\":1,\"accelerator\":\"gpu\",\"repeats\":3,\"items\":[{\"name\":\"q0\",\"ids\":[2,9,1],\"text\":\"x\",\"prompt\":\"query\"},"
                        + "{\"name\":\"q1\",\"ids\":[2,1]}]}");
        assertEquals("gpu", r.accelerator);
        assertEquals(3, r.repeats);
        assertArrayEquals(new int[] {2, 9, 1}, r.items.get(0).ids);
        assertEquals("query", r.items.get(0).prompt);
        assertNull(r.items.get(1).text);
    }

    @Test
    void wrongSchemaOrIdsAreRefused() {
        assertThrows(IllegalArgumentException.class, () -> ParityProtocol.parseRequest("{\"schema\":2,\"items\":[]}"));
        assertThrows(IllegalArgumentException.class,
                () -> ParityProtocol.parseRequest("{\"schema\":1,\"items\":[{\"name\":\"a\",\"ids\":[1.5]}]}"));
    }

    @Test
    void responseCarriesDeviceAcceleratorAndResults() {
        Manifest m = Resources.manifest();
        ParityProtocol.Response resp = new ParityProtocol.Response("android-app", Map.of("model", "Pixel"), "npu", "cpu",
                "NPU unavailable: fell back to CPU", 12.5);
        resp.add("q0", m.bucketFor(3), 3, new float[] {0.5f, -0.25f}, new double[] {1.5, 1.25}, Boolean.TRUE);
        Map<String, Object> back = Json.parseObject(resp.toJson());
        assertEquals("cpu", ((Map<?, ?>) back.get("accelerator")).get("used"));
        Map<?, ?> r0 = (Map<?, ?>) ((List<?>) back.get("results")).get(0);
        assertEquals("seq64", r0.get("signature"));
        assertEquals(64L, r0.get("bucket"));
        assertEquals(List.of(0.5, -0.25), r0.get("embedding"));
        assertEquals(true, r0.get("tokenizer_match"));
    }

    @Test
    void pushedIdsArePaddedIntoTheirBucket() {
        EmbedEncoder enc = new EmbedEncoder(Resources.manifest(), Resources.tinyTokenizer());
        int[] ids = new int[70];
        java.util.Arrays.fill(ids, 7);
        EmbedEncoder.Encoded e = enc.pad(ids, false);
        assertEquals(256, e.signature.seqLen);
        assertEquals(1, e.attentionMask[69]);
        assertEquals(0, e.attentionMask[70]);
        assertEquals(0, e.inputIds[255]);
        assertThrows(IllegalArgumentException.class, () -> enc.pad(new int[257], false));
    }
}
