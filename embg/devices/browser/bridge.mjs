#!/usr/bin/env node
// Browser device runner: serves a page, the bundle and the runtime's WASM files from 127.0.0.1,
// drives Debian's headless Chromium with playwright-core, and speaks the remote_runner.py
// JSON-lines protocol on stdin/stdout, forwarding each request into the page (page.mjs).
//
// Usage: node bridge.mjs BUNDLE_DIR ENGINE(onnxruntime|litert) [THREADS] [NODE_MODULES_DIR]
// Env: EMBG_CHROMIUM (default /usr/bin/chromium), EMBG_BROWSER_TIMEOUT seconds (default 600),
//      EMBG_BROWSER_DEBUG=1 echoes page console lines to stderr.
// Nothing may leave 127.0.0.1: every other request is aborted and counted (hello/stats report it).

import fs from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const [bundleArg, engine, threadsArg, modulesArg] = process.argv.slice(2);
const THREADS = Number(threadsArg) || 1;
const MODULES = path.resolve(modulesArg || process.env.EMBG_BROWSER_MODULES || path.join(HERE, "node_modules"));
const CHROMIUM = process.env.EMBG_CHROMIUM || "/usr/bin/chromium";
const TIMEOUT_MS = 1000 * (Number(process.env.EMBG_BROWSER_TIMEOUT) || 600);
const DEBUG = Boolean(process.env.EMBG_BROWSER_DEBUG);
const ENGINES = { onnxruntime: "onnxruntime-web", litert: "@litertjs/core" };
// Only these trees are served from node_modules: the page needs nothing else.
const SERVED_MODULES = ["onnxruntime-web/dist/", "@litertjs/core/dist/", "@litertjs/core/wasm/", "@litertjs/wasm-utils/dist/"];
const TYPES = { ".html": "text/html", ".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
                ".json": "application/json", ".map": "application/json" };

const INDEX = `<!doctype html><html><head><meta charset="utf-8"><title>embg browser runner</title>
<script type="importmap">{"imports": {"@litertjs/wasm-utils": "/npm/@litertjs/wasm-utils/dist/index.js"}}</script>
<script type="module">import * as embg from "/page.mjs"; window.embg = embg;</script></head><body></body></html>`;

const send = (reply) => process.stdout.write(JSON.stringify(reply) + "\n");
const log = (text) => process.stderr.write(`[embg-browser] ${text}\n`);

function inside(root, relative) {
  // resolve and refuse anything that escapes root (../, symlinks out of the tree)
  const full = path.resolve(root, "." + path.posix.normalize("/" + decodeURIComponent(relative)));
  if (!full.startsWith(path.resolve(root) + path.sep)) return null;
  try {
    const real = fs.realpathSync(full);
    return real.startsWith(fs.realpathSync(root) + path.sep) && fs.statSync(real).isFile() ? real : null;
  } catch {
    return null;
  }
}

function resolveUrl(pathname, bundle) {
  if (pathname === "/" || pathname === "/index.html") return { body: INDEX, type: TYPES[".html"] };
  if (pathname === "/page.mjs") return { file: path.join(HERE, "page.mjs") };
  if (pathname === "/favicon.ico") return { body: "", type: "image/x-icon" };
  if (pathname.startsWith("/bundle/")) return { file: inside(bundle, pathname.slice("/bundle".length)) };
  if (pathname.startsWith("/npm/")) {
    const rel = pathname.slice("/npm/".length);
    if (SERVED_MODULES.some((p) => rel.startsWith(p))) return { file: inside(MODULES, "/" + rel) };
  }
  return { file: null };
}

function serve(bundle) {
  const server = http.createServer((req, res) => {
    const { pathname } = new URL(req.url, "http://127.0.0.1");
    const found = resolveUrl(pathname, bundle);
    // COOP/COEP make the page cross-origin isolated: needed for multi-threaded WASM (SharedArrayBuffer)
    const headers = { "Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
                      "Cache-Control": "no-store" };
    if (found.body !== undefined) {
      res.writeHead(200, { ...headers, "Content-Type": found.type });
      res.end(found.body);
    } else if (found.file) {
      res.writeHead(200, { ...headers, "Content-Type": TYPES[path.extname(found.file)] || "application/octet-stream",
                           "Content-Length": fs.statSync(found.file).size });
      fs.createReadStream(found.file).pipe(res);
    } else {
      res.writeHead(404, headers);
      res.end("not found");
    }
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${TIMEOUT_MS / 1000} s`)), TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// Turn runtime messages into an error that names the missing op and what to do about it.
function explain(error, runtime) {
  const text = String(error?.message || error).replace(/^Error: /, "");
  const ort = text.match(/Could not find an implementation for (\w+)\((\d+)\) node with name '([^']*)'/);
  if (ort) {
    const hint = ort[1] === "GatherBlockQuantized" ? "; export the ONNX bundle with --web-compatible" : "";
    return `${runtime} (WASM) does not implement op ${ort[1]} (opset ${ort[2]}, node '${ort[3]}')${hint}`;
  }
  const tfl = text.match(/(?:Didn't find op for builtin opcode '(\w+)'[^\n]*|unresolved custom op: (\w+))/);
  if (tfl) return `${runtime} (WASM) does not implement op ${tfl[1] || tfl[2]}: ${text}`;
  return `${runtime}: ${text}`;
}

async function main() {
  if (!bundleArg || !ENGINES[engine]) throw new Error("usage: bridge.mjs BUNDLE_DIR onnxruntime|litert [THREADS] [NODE_MODULES]");
  const bundle = path.resolve(bundleArg);
  const manifest = JSON.parse(fs.readFileSync(path.join(bundle, "manifest.json"), "utf-8"));
  const require = createRequire(path.join(MODULES, "noop.js"));
  const { chromium } = require("playwright-core");
  const packageVersion = JSON.parse(fs.readFileSync(path.join(MODULES, ENGINES[engine], "package.json"), "utf-8")).version;
  const runtime = `${engine === "onnxruntime" ? "onnxruntime-web" : "litert.js"} ${packageVersion}`;

  const server = await serve(bundle);
  const origin = `http://127.0.0.1:${server.address().port}`;
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "embg-chromium-"));
  const blocked = [];
  const consoleTail = [];
  let requests = 0;
  let context;

  const cleanup = async () => {
    try { if (context) await context.close(); } catch { /* already gone */ }
    server.close();
    fs.rmSync(profile, { recursive: true, force: true });
  };
  for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => cleanup().finally(() => process.exit(1)));

  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, timeout: TIMEOUT_MS,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-domain-reliability", "--no-pings", "--dns-prefetch-disable",
           // defence in depth behind the route below: no name but 127.0.0.1 resolves at all
           "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"],
  });
  // Every request, from the page or its workers, passes here: only our own origin goes through.
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith(origin + "/")) return route.continue();
    blocked.push(url);
    return route.abort("blockedbyclient");
  });
  context.on("request", () => { requests += 1; });

  const page = context.pages()[0] || await context.newPage();
  let crashed = null;
  page.on("crash", () => { crashed = "the page crashed (out of memory?)"; });
  page.on("pageerror", (error) => consoleTail.push(`pageerror: ${error.message}`));
  page.on("console", (message) => {
    consoleTail.push(`${message.type()}: ${message.text()}`);
    if (consoleTail.length > 20) consoleTail.shift();
    if (DEBUG) log(`console ${message.type()}: ${message.text()}`);
  });

  const cdp = await context.newCDPSession(page);
  const browserVersion = (await cdp.send("Browser.getVersion")).product.replace(/^(Headless)?Chrom(e|ium)\//, "Chromium ");
  await cdp.detach();

  const modelUrl = `/bundle/${encodeURIComponent(manifest.model_file)}`;
  let info = null;
  let loadError = null;
  try {
    await withTimeout(page.goto(origin + "/"), "opening the page");
    await withTimeout(page.waitForFunction(() => window.embg !== undefined), "loading page.mjs");
    const external = (manifest.files || []).filter((f) => f !== manifest.model_file && f.endsWith(".data"));
    info = await withTimeout(page.evaluate(([e, u, t, x]) => window.embg.load(e, u, t, x), [engine, modelUrl, THREADS, external]),
                             `loading ${manifest.model_file}`);
  } catch (error) {
    loadError = explain(crashed || error, runtime);
  }

  const stats = () => ({ requests, blocked: blocked.length, blocked_urls: blocked.slice(0, 20), origin });
  const rl = readline.createInterface({ input: process.stdin, terminal: false });
  for await (const line of rl) {
    if (!line.trim()) continue;
    let request;
    let fatal = false;
    try {
      request = JSON.parse(line);
      if (request.op === "quit") break;
      if (loadError) {
        // nothing can run: say why, then exit so no browser is left behind
        send({ ok: false, error: `cannot load ${manifest.model_file} in ${browserVersion}: ${loadError}` });
        fatal = true;
        process.exitCode = 2;
      } else if (request.op === "hello") {
        send({ ok: true, engine: info.engine, version: packageVersion, browser: browserVersion,
               machine: os.arch(), user_agent: info.userAgent, cross_origin_isolated: info.isolated,
               threads: THREADS, signatures: info.signatures || null, ...stats() });
      } else if (request.op === "embed") {
        const out = await withTimeout(page.evaluate(([s, shape, ids, mask]) => window.embg.embed(s, shape, ids, mask),
                                                    [request.signature ?? null, request.shape, request.ids, request.mask]),
                                      "embedding");
        send({ ok: true, ...out });
      } else if (request.op === "stats") {
        send({ ok: true, ...stats() });
      } else if (request.op === "probe") {
        const result = await withTimeout(page.evaluate((u) => window.embg.probe(u), String(request.url)), "probe");
        send({ ok: true, ...result, ...stats() });
      } else {
        send({ ok: false, error: `unknown op ${JSON.stringify(request.op)}` });
      }
    } catch (error) {
      const tail = consoleTail.filter((l) => /error/i.test(l)).slice(-3).join(" | ");
      send({ ok: false, error: explain(crashed || error, runtime) + (tail ? ` [console: ${tail}]` : "") });
      fatal = Boolean(crashed) || /timed out/.test(String(error));  // the page state is unknown after these
    }
    if (fatal) break;
  }
  await cleanup();
}

main().then(() => process.exit(process.exitCode ?? 0), (error) => {
  log(error?.stack || String(error));
  send({ ok: false, error: `browser runner failed to start: ${error?.message || error}` });
  process.exit(2);
});
