// In-page side of the browser runner: loads one bundle into onnxruntime-web (WASM EP) or
// LiteRT.js (WASM/XNNPACK) and embeds token ids handed over by bridge.mjs via page.evaluate.
// Everything is fetched from the 127.0.0.1 server that serves this page (see bridge.mjs).

const state = { engine: null, run: null, version: null };

function b64ToBytes(text) {
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

function bytesToB64(bytes) {
  let raw = "";
  for (let i = 0; i < bytes.length; i += 0x8000) raw += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(raw);
}

function int32s(text) {
  const bytes = b64ToBytes(text);
  return new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

async function loadOnnx(modelUrl, threads, externalData) {
  const ort = await import("/npm/onnxruntime-web/dist/ort.wasm.min.mjs");
  ort.env.wasm.wasmPaths = "/npm/onnxruntime-web/dist/";
  ort.env.wasm.numThreads = threads || 1; // >1 needs cross-origin isolation, which the server sends
  ort.env.logLevel = "error";
  // large exports keep weights in a side file (protobuf's 2 GB cap); ORT-web must be told its URL
  const session = await ort.InferenceSession.create(modelUrl, {
    executionProviders: ["wasm"],
    externalData: externalData.map((name) => ({ path: name, data: `/bundle/${encodeURIComponent(name)}` })),
  });
  // the graph's declared input dtype decides the tensor type (the dynamo export uses int64)
  const inputTypes = Object.fromEntries(session.inputMetadata.map((m) => [m.name, m.type]));
  const typed = (name, values, shape) => inputTypes[name] === "int64"
    ? new ort.Tensor("int64", BigInt64Array.from(values, (v) => BigInt(v)), shape)
    : new ort.Tensor("int32", values, shape);
  state.run = async (signature, shape, ids, mask) => {
    const out = await session.run({ input_ids: typed("input_ids", ids, shape),
                                    attention_mask: typed("attention_mask", mask, shape) });
    const emb = out.sentence_embedding;
    return { shape: Array.from(emb.dims), data: emb.data };
  };
  return { engine: "onnxruntime-web", version: ort.env.versions?.web || "unknown",
           inputs: session.inputNames, outputs: session.outputNames };
}

async function loadLiteRt(modelUrl, threads) {
  const litert = await import("/npm/@litertjs/core/dist/index.js");
  await litert.loadLiteRt("/npm/@litertjs/core/wasm/", { threads: (threads || 1) > 1 });
  const model = await litert.loadAndCompile(modelUrl, { accelerator: "wasm", cpuOptions: { numThreads: threads || 1 } });
  const signatures = Object.keys(model.signatures);
  state.run = async (signature, shape, ids, mask) => {
    const [batch, seq] = shape;
    const rows = [];
    let dim = 0;
    for (let b = 0; b < batch; b++) { // buckets are [1, L]: one row per call
      const inputs = {
        input_ids: new litert.Tensor(ids.slice(b * seq, (b + 1) * seq), [1, seq]),
        attention_mask: new litert.Tensor(mask.slice(b * seq, (b + 1) * seq), [1, seq]),
      };
      try {
        const out = signature ? await model.run(signature, inputs) : await model.run(inputs);
        const tensor = out.sentence_embedding;
        if (!tensor) throw new Error(`no sentence_embedding output (got ${Object.keys(out)})`);
        const data = Float32Array.from(tensor.toTypedArray());
        dim = data.length;
        rows.push(data);
        for (const t of Object.values(out)) t.delete();
      } finally {
        inputs.input_ids.delete();
        inputs.attention_mask.delete();
      }
    }
    const all = new Float32Array(batch * dim);
    rows.forEach((r, i) => all.set(r, i * dim));
    return { shape: [batch, dim], data: all };
  };
  return { engine: "litert.js", version: null, signatures };
}

export async function load(engine, modelUrl, threads, externalData = []) {
  const info = engine === "onnxruntime"
    ? await loadOnnx(modelUrl, threads, externalData)
    : await loadLiteRt(modelUrl, threads);
  state.engine = info.engine;
  return { ...info, userAgent: navigator.userAgent, isolated: self.crossOriginIsolated,
           cores: navigator.hardwareConcurrency };
}

export async function embed(signature, shape, idsB64, maskB64) {
  const ids = int32s(idsB64);
  const mask = int32s(maskB64);
  const start = performance.now();
  const { shape: outShape, data } = await state.run(signature, shape, ids, mask);
  const seconds = (performance.now() - start) / 1000;
  const floats = Float32Array.from(data);
  return { shape: outShape, seconds, embeddings: bytesToB64(new Uint8Array(floats.buffer)) };
}

// Test hook: ask the page to fetch a URL; anything off 127.0.0.1 must be blocked by the bridge.
export async function probe(url) {
  try {
    const response = await fetch(url, { cache: "no-store" });
    return { fetched: true, status: response.status };
  } catch (error) {
    return { fetched: false, error: String(error) };
  }
}
