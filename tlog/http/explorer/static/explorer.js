// The in-browser check of tlog's explorer: does the log prove the entry on this page?
//
// Dependency-free ES modules (no inline script: the page's CSP forbids it): protocol.js and
// statemap.js have the pure functions (tested under Node against the Python protocol code,
// tests/js), this file drives the page.
//
// What it checks, fetching everything itself from this origin's API at check time (never
// from data in the page, except the keys to use on a first visit):
//   1. GET /checkpoint: a signed note (c2sp.org/signed-note) whose log signature verifies
//      with the log key, whose origin is the key's name (c2sp.org/tlog-checkpoint), and
//      whose cosignatures (c2sp.org/tlog-cosignature, cosignature/v1) by the policy's
//      witnesses verify and meet its quorum (c2sp.org/tlog-policy);
//   2. GET /v1/entries/INDEX: the entry. The leaf bytes are recomputed from it as JCS
//      (RFC 8785): the log's leaves are the JCS of their entry, and the API's JSON parses
//      back to the same values, so SHA-256(0x00 || JCS(entry)) is the leaf hash. A served
//      entry that differs from the logged leaf hashes differently and fails step 3. (The
//      raw bytes are also in the entry bundle /tile/entries/N, but a bundle is up to 256
//      entries: this costs one entry.) The page's own rendering (#entry-json, #leaf-hash)
//      must be the same entry;
//   3. GET /v1/proof/inclusion?leaf_hash=H&tree_size=S: RFC 6962 inclusion in the
//      checkpoint's tree;
//   4. for an entry of a package: the checkpoint's last leaf (index S - 1, fetched and
//      proven as in 2-3) must be the map-root/v1 entry over entries [0, S - 1), and
//      GET /v1/package-state?package=P&size=S must give a state whose map proof leads to
//      that root (verifier/protocol/package_state.py, statemap.py) and that lists the entry.
//
// Keys: on a first visit, the log key and witness policy the page carries (#keys-used
// data-log-vkey, data-policy); once pinned (localStorage "tlog-pins:ORIGIN"), the pinned
// ones, and a page offering others fails the check.

import {
  CheckError, ED25519, MAX_CLOCK_SKEW, b64decode, describeQuorum, fail, fromHex, hex, jcs,
  leafHash, openCheckpoint, parsePolicy, parseVkey, strictUtf8, utf8, verifyInclusion,
} from "./protocol.js";
import { checkMapRootLeaf, entryInState, verifyState } from "./statemap.js";

const PIN_PREFIX = "tlog-pins:";
const WAIT_SECONDS = 30; // for a checkpoint that holds a freshly logged entry

// Each request's deadline, the body included: a log that holds a connection open must end
// the check failed, not leave it "Checking…" for ever.
const FETCH_SECONDS = 20;

async function getText(path) {
  let bytes, resp;
  try {
    resp = await fetch(path, { cache: "no-store", credentials: "omit",
      signal: AbortSignal.timeout(FETCH_SECONDS * 1000) });
    bytes = new Uint8Array(await resp.arrayBuffer());
  } catch (e) {
    if (e && (e.name === "TimeoutError" || e.name === "AbortError")) {
      fail(`GET ${path} did not answer within ${FETCH_SECONDS} s`);
    }
    throw e;
  }
  let text;
  try {
    text = strictUtf8.decode(bytes);
  } catch (e) {
    fail(`GET ${path}: not UTF-8`);
  }
  if (!resp.ok) {
    let message = text.slice(0, 200);
    try {
      message = JSON.parse(text).error.message;
    } catch (e) { /* not the API's error body */ }
    fail(`GET ${path} answered ${resp.status}: ${message}`);
  }
  return text;
}

async function getJson(path) {
  const text = await getText(path);
  try {
    return JSON.parse(text);
  } catch (e) {
    fail(`GET ${path}: not JSON`);
  }
}

// The browser's storage of pins; null where the browser refuses it (storage disabled):
// then nothing is pinned and every check is a first visit.
function pinStore() {
  try {
    return window.localStorage;
  } catch (e) {
    return null;
  }
}

function pinsHeld() {
  const store = pinStore();
  const held = [];
  for (let i = 0; store && i < store.length; i++) {
    const name = store.key(i);
    if (name && name.startsWith(PIN_PREFIX)) held.push(name.slice(PIN_PREFIX.length));
  }
  return held;
}

function readPin(origin) {
  try {
    const pin = JSON.parse(pinStore()?.getItem(PIN_PREFIX + origin) || "null");
    return pin && typeof pin.vkey === "string" && typeof pin.policy === "string" ? pin : null;
  } catch (e) {
    return null;
  }
}

// The keys to check with: the pinned ones, else the page's (a first visit).
function keysToUse(section) {
  const offered = { vkey: section.dataset.logVkey || "", policy: section.dataset.policy || "" };
  const origin = offered.vkey.split("+")[0];
  const pin = readPin(origin);
  if (pin) {
    if (pin.vkey !== offered.vkey) fail("the log's key differs from the one you pinned");
    if (pin.policy !== offered.policy) {
      fail("the log's witness policy differs from the one you pinned");
    }
    return { ...pin, origin, pinned: true };
  }
  const others = pinsHeld();
  if (others.length) {
    fail(`the log's key differs from the one you pinned (pinned: ${others.join(", ")})`);
  }
  return { ...offered, origin, pinned: false };
}

class Steps {
  constructor(list) {
    this.list = list;
    this.list.replaceChildren();
  }

  add(text, ok) {
    const item = document.createElement("li");
    item.dataset.ok = ok ? "true" : "false";
    item.textContent = text;
    this.list.append(item);
  }

  // Run `work`; its step is added as passed with the text it returns, or failed.
  async run(label, work) {
    const detail = await this.attempt(label, work);
    this.add(detail ? `${label}: ${detail}` : label, true);
    return detail;
  }

  // Run `work` and return its result; only a failure adds a step.
  async attempt(label, work) {
    try {
      return await work();
    } catch (e) {
      this.add(`${label}: ${e.message}`, false);
      throw e;
    }
  }
}

// A witness's time: the date when it has one (a witness's clock may say anything).
function when(seconds) {
  const date = new Date(seconds * 1000);
  return Number.isNaN(date.getTime()) ? `UNIX time ${seconds}` : date.toISOString();
}

function setStatus(status, result, text) {
  status.dataset.result = result;
  status.textContent = text;
}

async function provenLeaf(steps, what, index, size, root) {
  const label = `${what} (entry ${index}) is in the checkpoint's tree`;
  let found;
  await steps.run(label, async () => {
    const body = await getJson(`/v1/entries/${index}`);
    if (body.index !== index || typeof body.entry !== "object" || body.entry === null) {
      fail(`GET /v1/entries/${index} did not answer entry ${index}`);
    }
    const leaf = utf8(jcs(body.entry));
    const hash = await leafHash(leaf);
    if (body.leaf_hash !== hex(hash)) fail("the log's leaf hash is not its entry's");
    const proof = await getJson(`/v1/proof/inclusion?leaf_hash=${hex(hash)}&tree_size=${size}`);
    if (proof.index !== index || proof.tree_size !== size || !Array.isArray(proof.hashes)) {
      fail("the proof answered is for another entry or tree");
    }
    await verifyInclusion(index, size, hash, proof.hashes.map(fromHex), root);
    found = { entry: body.entry, leaf, hash };
    return `leaf hash ${hex(hash).slice(0, 16)}…, inclusion proof of ${proof.hashes.length} ` +
      "hashes leads to the root";
  });
  return found;
}

async function openLatest(steps, keys, index, status) {
  const logKey = await steps.attempt("the log key", () => parseVkey(keys.vkey, ED25519));
  const policy = await steps.attempt("the witness policy", async () => {
    const parsed = await parsePolicy(keys.policy);
    // As PolicyTrust.for_log: a policy that names logs must name this one.
    if (parsed.logs.length && !parsed.logs.some((l) => l.text === keys.vkey)) {
      fail(`the log key ${logKey.name} is not one of the policy's logs`);
    }
    return parsed;
  });
  showWitnesses(policy);
  for (let waited = 0; ; waited++) {
    const text = await getText("/checkpoint");
    const opened = await steps.attempt("the checkpoint's signatures",
      () => openCheckpoint(text, logKey, policy, Math.floor(Date.now() / 1000)));
    if (opened.checkpoint.size > index || waited >= WAIT_SECONDS) return { opened, logKey, policy };
    setStatus(status, "pending", `Waiting for a checkpoint that holds entry ${index}…`);
    await new Promise((done) => setTimeout(done, 1000));
  }
}

async function check(section, steps, status) {
  const index = Number(section.dataset.index);
  const keys = keysToUse(document.getElementById("keys-used"));
  showKeys(keys);
  const { opened, logKey, policy } = await openLatest(steps, keys, index, status);
  const { checkpoint, times } = opened;
  steps.add(`checkpoint of size ${checkpoint.size} signed by the log key ${logKey.name}`, true);
  for (const [name, time] of times) steps.add(`cosigned by witness ${name} at ${when(time)}`, true);
  const missing = [...policy.witnesses.keys()].filter((w) => !times.has(w));
  await steps.run("witness quorum", async () => {
    const ahead = opened.future.length ? ` (${opened.future.join(", ")} ignored: dated more ` +
      `than ${MAX_CLOCK_SKEW} s ahead of this browser's clock)` : "";
    if (!opened.quorum) fail(`short of ${describeQuorum(policy)}${ahead}`);
    const absent = missing.length ? ` (no cosignature from ${missing.join(", ")})` : "";
    return describeQuorum(policy) + absent;
  });
  if (index >= checkpoint.size) fail(`entry ${index} is not in the latest checkpoint yet`);
  const { entry, hash } = await provenLeaf(steps, "the entry", index, checkpoint.size,
    checkpoint.root);
  await steps.run("the page shows the entry proven", async () => {
    const json = document.getElementById("entry-json");
    const shown = JSON.parse(json.textContent);
    const shownHash = document.getElementById("leaf-hash").textContent.trim();
    const shownKind = document.getElementById("entry-kind")?.textContent;
    if (jcs(shown) !== jcs(entry) || shownHash !== hex(hash) || shownKind !== entry.kind) {
      fail("the entry on this page is not the one the log proves");
    }
    // Text that parses to the proven entry can still read otherwise (a member twice: the
    // parse keeps the last; 1.0 for 1): from here on the page shows the proven entry.
    json.textContent = pretty(entry);
    return "";
  });
  let proven = `entry ${index} is in the checkpoint of size ${checkpoint.size}`;
  if (typeof entry.package === "string") {
    await checkState(steps, entry, index, hex(hash), checkpoint);
    proven += ` and in the package state of ${entry.package}`;
  }
  const cosigners = [...times.keys()];
  return `${proven}, signed by ${logKey.name}` +
    (cosigners.length ? ` and cosigned by ${cosigners.join(", ")}` : "");
}

async function checkState(steps, entry, index, hashHex, checkpoint) {
  const size = checkpoint.size;
  const last = await provenLeaf(steps, "the map root", size - 1, size, checkpoint.root);
  const pkg = entry.package;
  let answer;
  await steps.run(`package state proof of ${pkg}`, async () => {
    const root = checkMapRootLeaf(size, last.leaf);
    answer = await getJson(`/v1/package-state?package=${encodeURIComponent(pkg)}&size=${size}`);
    if (answer.package !== pkg || answer.size !== size) {
      fail("the answer is for another package or size");
    }
    await verifyState(root, pkg, answer.state, b64decode(answer.proof || ""));
    return `the map proof leads to the map root ${hex(root).slice(0, 16)}… in entry ${size - 1}`;
  });
  await steps.run("the package state holds the entry", async () => {
    const where = entryInState(answer.state, index, hashHex, entry);
    if (!where) fail(`the proven state of ${pkg} does not list entry ${index}`);
    return where;
  });
}

// The entry as the server shows it (Python's json.dumps indent=2, ensure_ascii): indented,
// non-ASCII as \u escapes so no look-alike text reads as another.
function pretty(entry) {
  return JSON.stringify(entry, null, 2).replace(/[\u0080-\uffff]/g,
    (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
}

function showWitnesses(policy) {
  const list = document.getElementById("key-witnesses");
  const items = [...policy.witnesses].map(([name, key]) => {
    const item = document.createElement("li");
    item.className = "witness-key";
    item.textContent = `${name}: ${key.text}`;
    return item;
  });
  if (!items.length) {
    items.push(document.createElement("li"));
    items[0].textContent = "none: the policy requires no cosignatures";
  }
  list.replaceChildren(...items);
  document.getElementById("key-quorum").textContent = describeQuorum(policy);
}

function showKeys(keys) {
  document.getElementById("keys-source").textContent = keys.pinned
    ? `Pinned in this browser${keys.pinnedAt ? " on " + keys.pinnedAt : ""}: a log ` +
      "offering other keys fails the check."
    : "The keys this log's server gives (first visit): pin them to notice if they change.";
  document.getElementById("key-log").textContent = keys.vkey;
}

// Pin while this log's keys are not pinned; forget whatever is pinned (also when the check
// failed because of a pin, so a user who trusts the change can take it back).
function showPinButtons() {
  const origin = (document.getElementById("keys-used").dataset.logVkey || "").split("+")[0];
  document.getElementById("pin-keys").hidden = readPin(origin) !== null;
  document.getElementById("unpin-keys").hidden = pinsHeld().length === 0;
}

let running = false;
let again = false; // asked to run while running (a pin changed): run once more after

async function runCheck() {
  if (running) {
    again = true;
    return;
  }
  running = true;
  again = false;
  const section = document.getElementById("verification");
  const status = document.getElementById("verify-status");
  const steps = new Steps(document.getElementById("verify-steps"));
  const button = document.getElementById("verify");
  button.disabled = true;
  setStatus(status, "pending", "Checking…");
  try {
    const proven = await check(section, steps, status);
    setStatus(status, "verified", `Verified: ${proven}.`);
  } catch (e) {
    const reason = e instanceof CheckError || e instanceof TypeError ? e.message : String(e);
    setStatus(status, "failed", `Failed: ${reason}`);
  } finally {
    showPinButtons();
    button.disabled = false;
    running = false;
  }
  if (again) runCheck();
}

function pin() {
  const section = document.getElementById("keys-used");
  const vkey = section.dataset.logVkey || "";
  const store = pinStore();
  if (!store) {
    document.getElementById("keys-source").textContent =
      "This browser keeps no data for this page: the keys cannot be pinned.";
    return;
  }
  for (const other of pinsHeld()) store.removeItem(PIN_PREFIX + other);
  store.setItem(PIN_PREFIX + vkey.split("+")[0], JSON.stringify({
    vkey, policy: section.dataset.policy || "", pinnedAt: new Date().toISOString() }));
  runCheck();
}

function unpin() {
  for (const other of pinsHeld()) pinStore()?.removeItem(PIN_PREFIX + other);
  runCheck();
}

function start() {
  if (!document.getElementById("verification")) return;
  const button = document.getElementById("verify");
  button.hidden = false;  // hidden in the HTML: without JavaScript it could do nothing
  button.addEventListener("click", runCheck);
  document.getElementById("pin-keys").addEventListener("click", pin);
  document.getElementById("unpin-keys").addEventListener("click", unpin);
  showPinButtons();
  runCheck();
}

if (typeof document !== "undefined") {
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
}
