// The pure part of tlog's in-browser check (see explorer.js): signed notes, checkpoints,
// cosignatures, witness policies, RFC 6962 inclusion proofs and JCS, ported from
// verifier/protocol (note.py, checkpoint.py, cosignature.py, policy.py, merkle.py); the
// package state map is in statemap.js. No DOM, no fetch: tests/js runs it under Node
// against vectors the Python code makes, tampered ones included.

const encoder = new TextEncoder();
export const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

export class CheckError extends Error {}

export function fail(message) {
  throw new CheckError(message);
}

export function utf8(text) {
  return encoder.encode(text);
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function fromHex(text) {
  if (!/^([0-9a-f]{2})*$/.test(text)) fail(`not lowercase hex: ${text.slice(0, 80)}`);
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

export function b64encode(bytes) {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

// Standard padded base64, canonical only (as verifier/protocol/note.py b64decode_strict).
export function b64decode(text) {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
    fail(`invalid base64 ${JSON.stringify(text.slice(0, 80))}`);
  }
  const bin = atob(text);
  const out = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  if (b64encode(out) !== text) fail(`non-canonical base64 ${JSON.stringify(text.slice(0, 80))}`);
  return out;
}

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

// RFC 8785 (JCS) for what JSON.parse gives: object members sorted by UTF-16 code units (the
// default sort), strings and numbers as JSON.stringify writes them (which is RFC 8785's).
export function jcs(value) {
  if (value === null || typeof value === "boolean" || typeof value === "string") {
    return JSON.stringify(value);
  }
  if (typeof value === "number") {
    if (!Number.isFinite(value)) fail("JCS: a number that is not finite");
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return "[" + value.map(jcs).join(",") + "]";
  if (typeof value === "object") {
    const keys = Object.keys(value).sort();
    return "{" + keys.map((k) => JSON.stringify(k) + ":" + jcs(value[k])).join(",") + "}";
  }
  fail(`JCS: cannot encode a ${typeof value}`);
}

// --- Signed notes, checkpoints, cosignatures, policies -------------------------------------

export const ED25519 = 0x01;
export const COSIGNATURE_V1 = 0x04;
const SIGNATURE_PREFIX = "— ";
const MAX_SIGNATURES = 100;
const MAX_NOTE_SIZE = 1 << 20;

export function isValidKeyName(name) {
  return name.length > 0 && !name.includes("+") && !/[\s\p{Cc}]/u.test(name);
}

// The 4-byte key ID: SHA-256(name || "\n" || type || public key)[:4] (signed-note).
export async function keyId(name, type, publicKey) {
  return (await sha256(concat(utf8(name), utf8("\n"), Uint8Array.of(type), publicKey))).slice(0, 4);
}

// A vkey "<name>+<8 hex key ID>+<base64(type || 32-byte key)>" whose key ID matches.
export async function parseVkey(text, type = ED25519) {
  const parts = text.split("+");
  if (parts.length < 3) fail("malformed key: want <name>+<key ID>+<base64 key>");
  const [name, id] = parts;
  const encoded = parts.slice(2).join("+");
  if (!isValidKeyName(name)) fail(`malformed key: invalid key name ${JSON.stringify(name)}`);
  if (!/^[0-9a-f]{8}$/.test(id)) fail("malformed key: key ID must be 8 lowercase hex digits");
  const raw = b64decode(encoded);
  if (raw.length !== 33 || raw[0] !== type) {
    fail(`malformed key ${name}: not a key of type 0x0${type} followed by 32 bytes`);
  }
  const publicKey = raw.slice(1);
  if (hex(await keyId(name, type, publicKey)) !== id) {
    fail(`key ID ${id} does not match the key of ${name}`);
  }
  return { name, keyId: fromHex(id), publicKey, text };
}

// A signed note's syntax (signed-note "Format"), nothing verified: {body, signatures}.
export function parseNote(text) {
  if (utf8(text).length > MAX_NOTE_SIZE) fail("malformed note: too large");
  const bad = text.search(/[\x00-\x09\x0b-\x1f]/);
  if (bad >= 0) fail(`malformed note: control character at offset ${bad}`);
  const split = text.lastIndexOf("\n\n");
  if (split < 0) fail("malformed note: no empty line before the signatures");
  const body = text.slice(0, split + 1);
  const block = text.slice(split + 2);
  if (!block.endsWith("\n")) fail("malformed note: signature block must end with a newline");
  const lines = block.slice(0, -1).split("\n");
  if (lines.length > MAX_SIGNATURES) fail("malformed note: too many signatures");
  const signatures = lines.map((line) => {
    if (!line.startsWith(SIGNATURE_PREFIX)) fail("malformed note: bad signature line");
    const rest = line.slice(SIGNATURE_PREFIX.length);
    const space = rest.indexOf(" ");
    const name = space < 0 ? rest : rest.slice(0, space);
    if (!isValidKeyName(name)) fail(`malformed note: invalid key name ${JSON.stringify(name)}`);
    const raw = b64decode(space < 0 ? "" : rest.slice(space + 1));
    if (raw.length <= 4) fail(`malformed note: signature of ${name} is too short`);
    return { name, keyId: raw.slice(0, 4), signature: raw.slice(4) };
  });
  return { body, signatures };
}

export async function ed25519Verify(publicKey, message, signature) {
  if (signature.length !== 64) return false;
  try {
    const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false,
      ["verify"]);
    return await crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
  } catch (e) {
    // A browser without Ed25519 must not report a forged signature: say what is missing.
    if (e && e.name === "NotSupportedError") {
      fail("this browser's WebCrypto has no Ed25519 (Chromium 137+, Firefox 129+, Safari 17+)");
    }
    return false;
  }
}

function claims(sig, key) {
  return sig.name === key.name && equalBytes(sig.keyId, key.keyId);
}

// The log's signature of a note (signed-note "Signatures"): one by the key must verify.
export async function verifyLogSignature(note, key) {
  const sig = note.signatures.find((s) => claims(s, key));
  if (!sig) fail(`the checkpoint carries no signature by the log key ${key.name}`);
  if (!(await ed25519Verify(key.publicKey, utf8(note.body), sig.signature))) {
    fail(`the checkpoint's signature by ${key.name} does not verify`);
  }
}

// A checkpoint body (c2sp.org/tlog-checkpoint): {origin, size, root, extensions}.
export function parseCheckpoint(body) {
  if (!body.endsWith("\n")) fail("checkpoint body must end with a newline");
  const lines = body.slice(0, -1).split("\n");
  if (lines.length < 3) fail("checkpoint body needs origin, size and root hash lines");
  const [origin, sizeText, rootText] = lines;
  if (!origin || /[\s\p{Cc}\p{Cs}]/u.test(origin)) fail("checkpoint origin is malformed");
  if (!/^(0|[1-9][0-9]{0,18})$/.test(sizeText)) fail("malformed checkpoint tree size");
  const size = Number(sizeText);
  if (!Number.isSafeInteger(size)) fail("checkpoint tree size beyond 2^53");
  const root = b64decode(rootText);
  if (root.length !== 32) fail("checkpoint root hash is not 32 bytes");
  if (lines.slice(3).some((l) => !l)) fail("checkpoint extension lines must be non-empty");
  // As verifier.protocol.checkpoint: no control characters (DEL and C1 included).
  if (lines.slice(3).some((l) => /[\p{Cc}\p{Cs}]/u.test(l))) {
    fail("checkpoint extension line has control characters");
  }
  return { origin, size, root, extensions: lines.slice(3) };
}

// The time of a cosignature/v1 line by `key` over `body` (c2sp.org/tlog-cosignature).
export async function verifyCosignature(key, body, sig) {
  if (!claims(sig, key)) fail(`signature is not by ${key.name}`);
  if (sig.signature.length !== 72) fail(`cosignature by ${key.name} is not 72 bytes`);
  const time = new DataView(sig.signature.buffer, sig.signature.byteOffset, 8).getBigUint64(0);
  if (time > (1n << 63n) - 1n) fail(`cosignature by ${key.name} has a time out of range`);
  const message = utf8(`cosignature/v1\ntime ${time}\n${body}`);
  if (!(await ed25519Verify(key.publicKey, message, sig.signature.slice(8)))) {
    fail(`the cosignature by ${key.name} does not verify`);
  }
  return Number(time);
}

// A witness policy (c2sp.org/tlog-policy), as verifier/protocol/policy.py parses it.
// The bounds of verifier/protocol/policy.py (MAX_POLICY_SIZE, MAX_LOGS, MAX_WITNESSES,
// MAX_GROUPS): the policy may come from the page, and the browser parses no more than they do.
const MAX_POLICY_SIZE = 1 << 20;
const MAX_POLICY_ITEMS = 256;

export async function parsePolicy(text) {
  if (new TextEncoder().encode(text).length > MAX_POLICY_SIZE) {
    fail(`policy larger than ${MAX_POLICY_SIZE} bytes`);
  }
  const policy = { logs: [], witnesses: new Map(), groups: new Map(), quorum: null };
  const used = new Set();
  const keys = new Set();
  // As policy.py _unique_key: each public key once, and each (name, key ID) once, else one
  // cosignature could count for two witness names (one key meeting "2 of 2").
  const unique = (key) => {
    const ident = `${key.name}+${hex(key.keyId)}`;
    if (keys.has(hex(key.publicKey)) || keys.has(ident)) fail(`key ${ident} listed twice`);
    keys.add(hex(key.publicKey));
    keys.add(ident);
    return key;
  };
  const newName = (name) => {
    if (name === "none") fail("'none' is predefined and cannot be redefined");
    if (policy.witnesses.has(name) || policy.groups.has(name)) fail(`name ${name} defined twice`);
    return name;
  };
  const lines = text.split("\n");
  for (let n = 0; n < lines.length; n++) {
    const words = lines[n].replace(/\t/g, " ").split(" ").filter((w) => w);
    if (!words.length || words[0].startsWith("#")) continue;
    const [keyword, ...args] = words;
    const where = `policy line ${n + 1}`;
    if (keyword === "log") {
      if (args.length < 1 || args.length > 2) fail(`${where}: want log <vkey> [<url>]`);
      policy.logs.push(unique(await parseVkey(args[0], ED25519)));
    } else if (keyword === "witness") {
      if (args.length < 2 || args.length > 3) fail(`${where}: want witness <name> <vkey>`);
      const name = newName(args[0]);
      policy.witnesses.set(name, unique(await parseVkey(args[1], COSIGNATURE_V1)));
    } else if (keyword === "group") {
      if (args.length < 3) fail(`${where}: want group <name> all|any|<k> <member>...`);
      const [name, k, ...members] = args;
      newName(name);
      for (const m of members) {
        if (m === "none" || (!policy.witnesses.has(m) && !policy.groups.has(m)) || used.has(m)) {
          fail(`${where}: bad group member ${m}`);
        }
        used.add(m);
      }
      const threshold = k === "all" ? members.length : k === "any" ? 1 :
        /^[1-9][0-9]{0,5}$/.test(k) ? Number(k) : 0;
      if (threshold < 1 || threshold > members.length) fail(`${where}: bad threshold ${k}`);
      policy.groups.set(name, { threshold, members });
    } else if (keyword === "quorum") {
      if (args.length !== 1 || policy.quorum !== null) fail(`${where}: one quorum <name>`);
      const name = args[0];
      if (name !== "none" && !policy.witnesses.has(name) && !policy.groups.has(name)) {
        fail(`${where}: quorum ${name} is not defined`);
      }
      policy.quorum = name;
    } else {
      fail(`${where}: unknown keyword ${keyword}`);
    }
  }
  if (policy.quorum === null) fail("the policy has no quorum line");
  const counts = [policy.logs.length, policy.witnesses.size, policy.groups.size];
  if (counts.some((n) => n > MAX_POLICY_ITEMS)) {
    fail(`a policy holds at most ${MAX_POLICY_ITEMS} logs, witnesses and groups each`);
  }
  return policy;
}

export function satisfied(policy, cosigners, name = policy.quorum) {
  if (name === "none") return true;
  const group = policy.groups.get(name);
  if (!group) return cosigners.has(name);
  return group.members.filter((m) => satisfied(policy, cosigners, m)).length >= group.threshold;
}

export function describeQuorum(policy, name = policy.quorum) {
  if (name === "none") return "no cosignatures required";
  const group = policy.groups.get(name);
  if (!group) return `witness ${name}`;
  const members = group.members.map((m) => describeQuorum(policy, m)).join(", ");
  return `${group.threshold} of ${group.members.length} in group ${name} (${members})`;
}

// Seconds a cosignature may be dated ahead of the browser's clock (policy.MAX_CLOCK_SKEW).
export const MAX_CLOCK_SKEW = 600;

// Open a cosigned checkpoint under a policy, as PolicyTrust.witnessed does with `now` (UNIX
// seconds): the log's signature, the origin, each policy witness's cosignature (one that
// claims a witness's key but does not verify refuses the note), and the quorum, counting no
// cosignature dated beyond now + MAX_CLOCK_SKEW (a witness clock running ahead would make a
// frozen checkpoint look fresh). Returns the checkpoint, the counted times and the future.
export async function openCheckpoint(text, logKey, policy, now) {
  if (!Number.isFinite(now)) fail("checking a checkpoint needs the current time");
  const note = parseNote(text);
  await verifyLogSignature(note, logKey);
  const checkpoint = parseCheckpoint(note.body);
  if (checkpoint.origin !== logKey.name) {
    fail(`checkpoint origin ${checkpoint.origin} is not the log ${logKey.name}`);
  }
  const times = new Map();
  for (const sig of note.signatures) {
    for (const [name, key] of policy.witnesses) {
      if (claims(sig, key) && !times.has(name)) {
        times.set(name, await verifyCosignature(key, note.body, sig));
      }
    }
  }
  const future = [...times].filter(([, t]) => t > now + MAX_CLOCK_SKEW).map(([w]) => w).sort();
  for (const name of future) times.delete(name);
  const quorum = satisfied(policy, new Set(times.keys()));
  return { checkpoint, times, quorum, future, body: note.body };
}

// --- RFC 6962 inclusion proofs -------------------------------------------------------------

export async function leafHash(leaf) {
  return sha256(concat(Uint8Array.of(0), leaf));
}

export async function nodeHash(left, right) {
  return sha256(concat(Uint8Array.of(1), left, right));
}

function bitLength(n) {
  return n === 0n ? 0 : n.toString(2).length;
}

function popCount(n) {
  return n.toString(2).split("").filter((c) => c === "1").length;
}

// RFC 9162 2.1.3.2, as verifier/protocol/merkle.py verify_inclusion; throws CheckError.
export async function verifyInclusion(index, size, leaf, proof, root) {
  let fn = BigInt(index);
  let sn = BigInt(size) - 1n;
  if (fn < 0n || fn > sn) fail(`leaf index ${index} is not in a tree of size ${size}`);
  const inner = bitLength(fn ^ sn);
  const want = inner + popCount(fn >> BigInt(inner));
  if (proof.length !== want) fail(`inclusion proof has ${proof.length} hashes, want ${want}`);
  if (leaf.length !== 32 || root.length !== 32 || proof.some((p) => p.length !== 32)) {
    fail("inclusion proof: a hash is not 32 bytes");
  }
  let r = leaf;
  for (const p of proof) {
    if (sn === 0n) fail(`inclusion proof for leaf ${index} is too long`);
    if (fn & 1n || fn === sn) {
      r = await nodeHash(p, r);
      while (!(fn & 1n) && fn !== 0n) {
        fn >>= 1n;
        sn >>= 1n;
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) fail(`inclusion proof for leaf ${index} is too short`);
  if (!equalBytes(r, root)) {
    fail(`inclusion proof for leaf ${index} does not match the root of size ${size}`);
  }
}
