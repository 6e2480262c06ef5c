package dev.embg.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.List;
import org.junit.jupiter.api.Test;

class VectorsTest {
    @Test
    void matryoshkaRenormalises() {
        float[] v = Vectors.matryoshka(new float[] {3, 4, 12}, 2);
        assertEquals(0.6f, v[0], 1e-7);
        assertEquals(0.8f, v[1], 1e-7);
        assertThrows(IllegalArgumentException.class, () -> Vectors.matryoshka(new float[] {1, 2}, 3));
        assertThrows(IllegalArgumentException.class, () -> Vectors.matryoshka(new float[] {0, 0}, 2));
        assertThrows(IllegalArgumentException.class, () -> Vectors.matryoshka(new float[] {Float.NaN, 1}, 2));
    }

    @Test
    void cosine() {
        assertEquals(1.0, Vectors.cosine(new float[] {1, 2}, new float[] {2, 4}), 1e-12);
        assertEquals(0.0, Vectors.cosine(new float[] {1, 0}, new float[] {0, 3}), 1e-12);
        assertEquals(-1.0, Vectors.cosine(new float[] {1, 1}, new float[] {-1, -1}), 1e-12);
    }

    @Test
    void rankingUsesTheTruncatedDims() {
        SemanticIndex idx = new SemanticIndex(2);
        idx.add("east", new float[] {1, 0, 0});
        idx.add("north", new float[] {0, 1, 0});
        idx.add("north-ish, far off in dim 3", new float[] {0.1f, 1, 50});
        idx.add("west", new float[] {-1, 0, 0});
        List<SemanticIndex.Hit> hits = idx.search(new float[] {0, 1, -50}, 3);
        assertEquals(3, hits.size());
        assertEquals("north", hits.get(0).text);      // the third dimension is cut off before ranking
        assertEquals("north-ish, far off in dim 3", hits.get(1).text);
        assertEquals(1.0, hits.get(0).score, 1e-6);
    }

    @Test
    void tiesKeepInsertionOrder() {
        SemanticIndex idx = new SemanticIndex(2);
        idx.add("first", new float[] {1, 0});
        idx.add("second", new float[] {2, 0});
        assertEquals("first", idx.search(new float[] {1, 0}, 2).get(0).text);
    }
}
