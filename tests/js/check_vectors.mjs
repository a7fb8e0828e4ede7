// Runs the explorer's pure check functions (tlog/http/explorer/static/protocol.js,
// statemap.js) on
// vectors the Python protocol code made (tests/tlog/http/test_explorer_js.py), and prints
// one JSON object: case name -> {ok, error?, value?}.
//
// usage: node check_vectors.mjs DIR VECTORS.json
// DIR holds protocol.js and statemap.js (and a package.json making them ES modules).
import { webcrypto } from "node:crypto";
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

// Node 18 has WebCrypto (Ed25519 included) but not as the global browsers have.
if (!globalThis.crypto) globalThis.crypto = webcrypto;

const [, , dir, vectorsPath] = process.argv;
const p = { ...await import(pathToFileURL(`${dir}/protocol.js`).href),
  ...await import(pathToFileURL(`${dir}/statemap.js`).href) };
const vectors = JSON.parse(readFileSync(vectorsPath, "utf8"));

// The check explorer.js runs on an entry page, on the answers the API gave.
async function fullCheck(c) {
  const logKey = await p.parseVkey(c.vkey);
  const policy = await p.parsePolicy(c.policy);
  const opened = await p.openCheckpoint(c.checkpoint, logKey, policy, 1_760_000_100);
  if (!opened.quorum) throw new Error(`short of ${p.describeQuorum(policy)}`);
  const { size, root } = opened.checkpoint;
  const leaf = p.utf8(p.jcs(c.entry));
  const hash = await p.leafHash(leaf);
  await p.verifyInclusion(c.index, size, hash, c.proof.map(p.fromHex), root);
  const mapLeaf = p.utf8(p.jcs(c.map_entry));
  const mapHash = await p.leafHash(mapLeaf);
  await p.verifyInclusion(size - 1, size, mapHash, c.map_proof.map(p.fromHex), root);
  const mapRoot = p.checkMapRootLeaf(size, mapLeaf);
  await p.verifyState(mapRoot, c.package, c.state, p.b64decode(c.state_proof));
  const where = p.entryInState(c.state, c.index, p.hex(hash), c.entry);
  if (!where) throw new Error("the state does not list the entry");
  return { times: Object.fromEntries(opened.times), where };
}

async function run(c) {
  if (c.type === "check") return fullCheck(c);
  if (c.type === "jcs") return p.jcs(JSON.parse(c.json));
  if (c.type === "key_id") return p.hex(await p.keyId(c.key_name, c.key_type, p.fromHex(c.public_key)));
  if (c.type === "map") {
    const value = await p.verifyMapProof(p.fromHex(c.root), p.fromHex(c.key), p.fromHex(c.proof));
    return value === null ? null : p.hex(value);
  }
  if (c.type === "state_hash") return p.hex(await p.stateHash(JSON.parse(c.json)));
  if (c.type === "policy") {
    const policy = await p.parsePolicy(c.policy);
    return { witnesses: [...policy.witnesses.keys()], quorum: policy.quorum };
  }
  if (c.type === "open") {
    const opened = await p.openCheckpoint(c.checkpoint, await p.parseVkey(c.vkey),
      await p.parsePolicy(c.policy), c.now);
    return { quorum: opened.quorum, times: Object.fromEntries(opened.times) };
  }
  throw new Error(`unknown case type ${c.type}`);
}

const out = {};
for (const c of vectors) {
  try {
    out[c.name] = { ok: true, value: await run(c) };
  } catch (e) {
    out[c.name] = { ok: false, error: String(e && e.message) };
  }
}
process.stdout.write(JSON.stringify(out));
