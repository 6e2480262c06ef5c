package dev.embg.core;

import java.util.List;
import java.util.Map;

/** Typed getters over parsed JSON with errors that name the missing or mistyped field. */
final class JsonAccess {
    private JsonAccess() {}

    @SuppressWarnings("unchecked")
    static Map<String, Object> obj(Map<String, Object> m, String key, String where) {
        Object v = m.get(key);
        if (!(v instanceof Map)) throw new IllegalArgumentException(where + ": '" + key + "' must be an object");
        return (Map<String, Object>) v;
    }

    @SuppressWarnings("unchecked")
    static List<Object> list(Map<String, Object> m, String key, String where) {
        Object v = m.get(key);
        if (!(v instanceof List)) throw new IllegalArgumentException(where + ": '" + key + "' must be an array");
        return (List<Object>) v;
    }

    static String str(Map<String, Object> m, String key, String where) {
        Object v = m.get(key);
        if (!(v instanceof String)) throw new IllegalArgumentException(where + ": '" + key + "' must be a string");
        return (String) v;
    }

    static int integer(Map<String, Object> m, String key, String where) {
        Object v = m.get(key);
        if (!(v instanceof Long)) throw new IllegalArgumentException(where + ": '" + key + "' must be an integer");
        return Math.toIntExact((Long) v);
    }

    static boolean bool(Map<String, Object> m, String key, boolean dflt) {
        Object v = m.get(key);
        return v instanceof Boolean ? (Boolean) v : dflt;
    }

    static int[] intArray(Object v, String where) {
        if (!(v instanceof List)) throw new IllegalArgumentException(where + " must be an array of integers");
        List<?> l = (List<?>) v;
        int[] out = new int[l.size()];
        for (int k = 0; k < out.length; k++) {
            Object o = l.get(k);
            if (!(o instanceof Long)) throw new IllegalArgumentException(where + "[" + k + "] must be an integer");
            out[k] = Math.toIntExact((Long) o);
        }
        return out;
    }
}
