// Runs the explorer's page script (static/explorer.js) under Node on an entry page, with a
// minimal stand-in for the DOM, against a running log: what the check ends with, not how it
// looks (tests/browser drives a real Chromium for that). tests/tlog/http/test_explorer_page_js.py.
//
// usage: node run_explorer.mjs DIR SCENARIO.json
// DIR holds explorer.js, protocol.js and statemap.js (and a package.json making them ES modules).
// SCENARIO: {base, page: {index, vkey, policy, entry_json, leaf_hash, kind}, lies: {path: text},
//            hang: [path prefix], seconds}.
// Prints {result, status, steps, entry_json}.
import { readFileSync } from "node:fs";
import { webcrypto } from "node:crypto";
import { pathToFileURL } from "node:url";

if (!globalThis.crypto) globalThis.crypto = webcrypto;
const [, , dir, scenarioPath] = process.argv;
const scenario = JSON.parse(readFileSync(scenarioPath, "utf8"));

class Element {
  constructor(id = "") {
    this.id = id;
    this.dataset = {};
    this.textContent = "";
    this.children = [];
    this.hidden = false;
    this.disabled = false;
  }

  replaceChildren(...children) { this.children = children; }
  append(child) { this.children.push(child); }
  addEventListener() {}
}

const elements = new Map();
const element = (id) => {
  if (!elements.has(id)) elements.set(id, new Element(id));
  return elements.get(id);
};
const page = scenario.page;
element("verification").dataset.index = String(page.index);
Object.assign(element("keys-used").dataset, { logVkey: page.vkey, policy: page.policy });
element("entry-json").textContent = page.entry_json;
element("leaf-hash").textContent = page.leaf_hash;
element("entry-kind").textContent = page.kind;
element("verify-status").dataset.result = "pending";

const store = new Map();
globalThis.window = {
  localStorage: {
    get length() { return store.size; },
    key: (i) => [...store.keys()][i] ?? null,
    getItem: (k) => store.get(k) ?? null,
    setItem: (k, v) => store.set(k, String(v)),
    removeItem: (k) => store.delete(k),
  },
};
globalThis.document = {
  readyState: "complete",
  getElementById: element,
  createElement: () => new Element(),
};
const realFetch = globalThis.fetch;
globalThis.fetch = async (path, options) => {
  // A server that never answers: a request with a deadline (a signal) sees it pass (at
  // once here); one without waits forever.
  if ((scenario.hang || []).some((p) => path.startsWith(p))) {
    if (options?.signal) throw new DOMException("The operation timed out.", "TimeoutError");
    return new Promise(() => {});
  }
  if (scenario.lies && path in scenario.lies) return new Response(scenario.lies[path]);
  // Node's fetch has no HTTP cache (and refuses cache modes): the rest goes as it is.
  const { cache, ...rest } = options || {};
  try {
    return await realFetch(scenario.base + path, rest);
  } catch (e) {
    throw new TypeError(`fetch ${path}: ${e.cause || e}`);
  }
};

await import(pathToFileURL(`${dir}/explorer.js`).href);
const status = element("verify-status");
const deadline = Date.now() + (scenario.seconds || 20) * 1000;
while (status.dataset.result === "pending" && Date.now() < deadline) {
  await new Promise((done) => setTimeout(done, 20));
}
const steps = element("verify-steps").children.map((c) => [c.dataset.ok, c.textContent]);
process.stdout.write(JSON.stringify({ result: status.dataset.result, status: status.textContent,
  steps, entry_json: element("entry-json").textContent }));
