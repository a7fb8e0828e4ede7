// The package state map of tlog's in-browser check (see explorer.js): sparse Merkle map
// proofs, package states and the map-root entry, ported from verifier/protocol (statemap.py,
// package_state.py). Pure, as protocol.js; tests/js runs it under Node.

import {
  concat, equalBytes, fail, fromHex, jcs, sha256, strictUtf8, utf8,
} from "./protocol.js";

const KEY_BITS = 256;
const MAX_PROOF_SIZE = 3 + 32 + 32 * KEY_BITS + 64;
export const MAP_ROOT_KIND = "map-root/v1";
const STATE_PREFIX = "tlog/package-state/v1\n";
let emptyHash = null;

export async function mapEmpty() {
  if (!emptyHash) emptyHash = await sha256(utf8("tlog/map/empty\n"));
  return emptyHash;
}

export async function mapLeafHash(key, value) {
  return sha256(concat(utf8("tlog/map/leaf\n"), key, value));
}

export async function mapNodeHash(left, right) {
  return sha256(concat(utf8("tlog/map/node\n"), left, right));
}

function keyBit(key, depth) {
  return (key[depth >> 3] >> (7 - (depth & 7))) & 1;
}

function samePrefix(a, b, depth) {
  for (let d = 0; d < depth; d++) if (keyBit(a, d) !== keyBit(b, d)) return false;
  return true;
}

// Strict parse of an encoded map proof (statemap.parse_proof).
export async function parseMapProof(data) {
  const EMPTY = await mapEmpty();
  if (data.length < 3 || data.length > MAX_PROOF_SIZE) fail("map proof: bad length");
  const terminal = data[0];
  const depth = (data[1] << 8) | data[2];
  if (terminal > 2) fail(`map proof: unknown terminal ${terminal}`);
  if (depth > KEY_BITS) fail(`map proof: depth ${depth} over ${KEY_BITS}`);
  const bitmapSize = (depth + 7) >> 3;
  const bitmap = data.slice(3, 3 + bitmapSize);
  if (bitmap.length !== bitmapSize) fail("map proof: truncated bitmap");
  if (depth % 8 && bitmap[bitmapSize - 1] & (0xff >> (depth % 8))) {
    fail("map proof: padding bits set");
  }
  let pos = 3 + bitmapSize;
  const siblings = [];
  for (let i = 0; i < depth; i++) {
    if (bitmap[i >> 3] & (0x80 >> (i & 7))) {
      const sibling = data.slice(pos, pos + 32);
      if (sibling.length !== 32 || equalBytes(sibling, EMPTY)) fail("map proof: bad sibling");
      siblings.push(sibling);
      pos += 32;
    } else {
      siblings.push(EMPTY);
    }
  }
  if (depth && equalBytes(siblings[depth - 1], EMPTY)) {
    fail("map proof: deepest sibling is empty (not canonical)");
  }
  const tail = data.slice(pos);
  if (tail.length !== [0, 32, 64][terminal]) fail("map proof: bad length");
  return { terminal, siblings, tail };
}

// The value hash the proof shows for `key` under `root`, or null for an absent key
// (statemap.verify_proof); throws CheckError when it does not lead to the root.
export async function verifyMapProof(root, key, proof) {
  if (root.length !== 32 || key.length !== 32) fail("map proof: root and key are 32 bytes");
  const parsed = await parseMapProof(proof);
  const depth = parsed.siblings.length;
  let value = null;
  let current;
  if (parsed.terminal === 0) {
    current = await mapEmpty();
  } else if (parsed.terminal === 1) {
    value = parsed.tail;
    current = await mapLeafHash(key, value);
  } else {
    const other = parsed.tail.slice(0, 32);
    if (equalBytes(other, key) || !samePrefix(other, key, depth)) {
      fail("map proof: other leaf is not on the key's path");
    }
    current = await mapLeafHash(other, parsed.tail.slice(32));
  }
  for (let d = depth - 1; d >= 0; d--) {
    const sibling = parsed.siblings[d];
    current = keyBit(key, d) ? await mapNodeHash(sibling, current)
      : await mapNodeHash(current, sibling);
  }
  if (!equalBytes(current, root)) fail("map proof does not lead to the map root");
  return value;
}

export async function packageKey(name) {
  return sha256(utf8(name));
}

export async function stateHash(state) {
  return sha256(utf8(STATE_PREFIX + jcs(state)));
}

// package_state.verify_state: the proof shows exactly this state for the package.
export async function verifyState(root, packageName, state, proof) {
  if (!state || state.package !== packageName) {
    fail(`the state is for ${JSON.stringify(state && state.package)}, not ${packageName}`);
  }
  const shown = await verifyMapProof(root, await packageKey(packageName), proof);
  if (shown === null || !equalBytes(shown, await stateHash(state))) {
    fail("map proof shows a different value for the package");
  }
}

// package_state.check_map_root_leaf: the map root the checkpoint of `size` commits to.
export function checkMapRootLeaf(size, leaf) {
  let obj;
  try {
    obj = JSON.parse(strictUtf8.decode(leaf));
  } catch (e) {
    fail("map root entry: not JSON");
  }
  const members = obj && typeof obj === "object" && !Array.isArray(obj) ? Object.keys(obj) : [];
  if (members.length !== 3 || !["kind", "size", "root"].every((m) => members.includes(m))) {
    fail("map root entry: members must be kind, size, root");
  }
  if (obj.kind !== MAP_ROOT_KIND) fail(`map root entry: kind must be ${MAP_ROOT_KIND}`);
  if (!Number.isSafeInteger(obj.size) || obj.size < 0) fail("map root entry: bad size");
  if (typeof obj.root !== "string" || !/^[0-9a-f]{64}$/.test(obj.root)) {
    fail("map root entry: root must be 64 lowercase hex digits");
  }
  if (!equalBytes(utf8(jcs(obj)), leaf)) fail("map root entry: not in canonical (JCS) form");
  if (obj.size !== size - 1) {
    fail(`map root entry covers ${obj.size} entries, not the ${size - 1} before it`);
  }
  return fromHex(obj.root);
}

// Where the entry stands in its package's state: a release must be listed; a lifecycle
// statement is the version's latest, or one a later statement replaced (the state keeps
// only the latest per version, and the rollout in force before it).
export function entryInState(state, index, leafHashHex, entry) {
  if (entry.kind === "release/v1") {
    const ok = state.releases.some((r) => r.index === index && r.leaf_hash === leafHashHex &&
      r.version === entry.version);
    return ok ? `the state lists release ${entry.version} at index ${index}` : null;
  }
  const latest = state.lifecycle[entry.version];
  if (!latest) return null;
  if (latest.index === index) {
    return latest.leaf_hash === leafHashHex ? `it is the latest statement about ${entry.version}`
      : null;
  }
  if (latest.rollout && latest.rollout.index === index) {
    return latest.rollout.leaf_hash === leafHashHex ?
      `it is the rollout in force under the latest statement (entry ${latest.index})` : null;
  }
  return latest.index > index ? `a later statement (entry ${latest.index}) replaced it` : null;
}

