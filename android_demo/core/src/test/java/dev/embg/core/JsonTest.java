package dev.embg.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

class JsonTest {
    @Test
    void escapesAndSurrogatePairs() {
        Object v = Json.parse("[\"a\\\"b\\\\c\\n\\u2581\\ud83d\\ude80\", \"\u00e9\"]");
        assertEquals(List.of("a\"b\\c\n\u2581\ud83d\ude80", "\u00e9"), v);
    }

    @Test
    void numbersLiteralsAndKeyOrder() {
        Map<String, Object> m = Json.parseObject("{\"z\": 1, \"a\": -2.5e1, \"t\": true, \"n\": null, \"o\": {}}");
        assertEquals(List.of("z", "a", "t", "n", "o"), List.copyOf(m.keySet()));
        assertEquals(1L, m.get("z"));
        assertEquals(-25.0, m.get("a"));
        assertEquals(true, m.get("t"));
        assertNull(m.get("n"));
    }

    @Test
    void malformedInputFails() {
        for (String bad : new String[] {"{", "[1,]", "{\"a\" 1}", "\"x", "[1] 2", "tru", "{\"a\":\"\u0001\"}"}) {
            assertThrows(IllegalArgumentException.class, () -> Json.parse(bad), bad);
        }
    }

    @Test
    void writeRoundTrips() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("s", "q\"\n\t\u0001\u2581");
        m.put("f", new float[] {0.1f, -1e-8f, Float.NaN});
        m.put("i", new int[] {1, 2});
        m.put("b", null);
        Map<String, Object> back = Json.parseObject(Json.write(m));
        assertEquals("q\"\n\t\u0001\u2581", back.get("s"));
        List<?> f = (List<?>) back.get("f");
        assertEquals(0.1f, ((Double) f.get(0)).floatValue());
        assertEquals(-1e-8f, ((Double) f.get(1)).floatValue());
        assertNull(f.get(2)); // NaN is written as null, never as a number
        assertEquals(List.of(1L, 2L), back.get("i"));
    }
}
