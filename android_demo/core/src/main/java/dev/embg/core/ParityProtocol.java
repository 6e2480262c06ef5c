package dev.embg.core;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The files exchanged with embg's adb runner (embg/devices/adb/protocol.py), schema 1.
 *
 * <p>Request (pushed by the host): {@code {"schema":1, "accelerator":"cpu|gpu|npu", "repeats":N,
 * "items":[{"name":..., "ids":[...], "text":..., "prompt":...}]}}; ids come from the host's
 * tokenizer so the device result isolates the model; text/prompt (optional) let the app check
 * its own tokenizer against those ids.
 *
 * <p>Response (written by the app): {@code {"schema":1, "runner":..., "device":{...},
 * "accelerator":{"requested","used","note"}, "load_ms":..., "results":[{"name", "signature",
 * "bucket", "token_count", "embedding":[...], "ms":[...], "tokenizer_match": true|false|null}]}}.
 */
public final class ParityProtocol {
    public static final int SCHEMA = 1;

    private ParityProtocol() {}

    public static final class Item {
        public final String name;
        public final int[] ids;
        public final String text;   // may be null
        public final String prompt; // may be null

        Item(String name, int[] ids, String text, String prompt) {
            this.name = name;
            this.ids = ids;
            this.text = text;
            this.prompt = prompt;
        }
    }

    public static final class Request {
        public final String accelerator;
        public final int repeats;
        public final List<Item> items;

        Request(String accelerator, int repeats, List<Item> items) {
            this.accelerator = accelerator;
            this.repeats = repeats;
            this.items = items;
        }
    }

    public static Request parseRequest(String json) {
        Map<String, Object> m = Json.parseObject(json);
        String w = "parity request";
        int schema = JsonAccess.integer(m, "schema", w);
        if (schema != SCHEMA) throw new IllegalArgumentException(w + ": schema " + schema + ", this app reads " + SCHEMA);
        String acc = m.get("accelerator") instanceof String ? (String) m.get("accelerator") : "cpu";
        int repeats = m.get("repeats") == null ? 1 : JsonAccess.integer(m, "repeats", w);
        if (repeats < 1) throw new IllegalArgumentException(w + ": repeats must be >= 1");
        List<Item> items = new ArrayList<>();
        for (Object o : JsonAccess.list(m, "items", w)) {
            @SuppressWarnings("unchecked")
            Map<String, Object> it = (Map<String, Object>) o;
            String name = JsonAccess.str(it, "name", w + " item");
            items.add(new Item(name, JsonAccess.intArray(it.get("ids"), w + " item " + name + " ids"),
                    it.get("text") instanceof String ? (String) it.get("text") : null,
                    it.get("prompt") instanceof String ? (String) it.get("prompt") : null));
        }
        return new Request(acc, repeats, items);
    }

    /** Builds the response; the app fills device facts and one result per item. */
    public static final class Response {
        private final Map<String, Object> root = new LinkedHashMap<>();
        private final List<Object> results = new ArrayList<>();

        public Response(String runner, Map<String, Object> device, String requested, String used, String note, double loadMs) {
            root.put("schema", SCHEMA);
            root.put("runner", runner);
            root.put("device", device);
            Map<String, Object> acc = new LinkedHashMap<>();
            acc.put("requested", requested);
            acc.put("used", used);
            acc.put("note", note);
            root.put("accelerator", acc);
            root.put("load_ms", loadMs);
            root.put("results", results);
        }

        public void add(String name, Manifest.Signature sig, int tokenCount, float[] embedding, double[] ms, Boolean tokenizerMatch) {
            Map<String, Object> r = new LinkedHashMap<>();
            r.put("name", name);
            r.put("signature", sig.name);
            r.put("bucket", sig.seqLen);
            r.put("token_count", tokenCount);
            r.put("embedding", embedding);
            List<Object> times = new ArrayList<>();
            for (double t : ms) times.add(t);
            r.put("ms", times);
            r.put("tokenizer_match", tokenizerMatch);
            results.add(r);
        }

        public void error(String message) {
            root.put("error", message);
        }

        public String toJson() {
            return Json.write(root);
        }
    }
}
