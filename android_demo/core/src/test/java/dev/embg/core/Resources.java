package dev.embg.core;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;

/** Test resources (tokenizer.json, manifest.json, goldens written by tests/test_android_golden.py). */
final class Resources {
    private Resources() {}

    static String text(String name) {
        try (InputStream in = Resources.class.getClassLoader().getResourceAsStream(name)) {
            if (in == null) throw new IllegalStateException("test resource missing: " + name);
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    private static HfTokenizer tokenizer;

    static synchronized HfTokenizer tinyTokenizer() {
        if (tokenizer == null) tokenizer = HfTokenizer.fromJson(text("tokenizer.json"));
        return tokenizer;
    }

    static Manifest manifest() {
        return Manifest.parse(text("manifest.json"));
    }
}
