/**
 * KEM rows (issue 15): the server's part of a handshake — acceptHello (HPKE
 * SetupBaseS, the challenge signature), verifyProof, sealGrant — per ephemeral
 * KEM, in process on the node:crypto engine as a broker runs it: rate on one
 * core and CPU per handshake, X-Wing against X25519 (and P-256); the hello
 * and challenge sizes; and the browser bundle with and without X-Wing.
 *
 *   node dist/bench/kem.js [--seconds 3]
 *
 * The client's part (key generation, the proof, opening the grant) is timed
 * too, as the client pays for X-Wing as well.
 */
import { build } from "esbuild";
import { gzipSync } from "node:zlib";
import { fileURLToPath } from "node:url";
import { cpuUsage } from "node:process";
import { generateSigningKey, randomBytes } from "../shared/crypto.js";
import { b64u, fromB64u, fromUtf8 } from "../shared/encoding.js";
import { type Grant, type Hello, KemType, decodeClientFrame } from "../shared/frames.js";
import { acceptHello, answerChallenge, createHello, openGrant, sealGrant, verifyProof } from "../shared/handshake.js";
import { useNodeCrypto } from "../node/engines.js";

const seconds = Number(process.argv[process.argv.indexOf("--seconds") + 1] ?? 3) || 3;
const root = fileURLToPath(new URL("../../", import.meta.url));

async function rows(): Promise<void> {
  useNodeCrypto();
  const server = await generateSigningKey();
  const identity = await generateSigningKey();
  const out: Record<string, unknown>[] = [];
  let base: { server_us: number } | undefined;
  for (const kem of [KemType.x25519, KemType.p256, KemType.xwing]) {
    // the client's messages are made outside the timed server loop
    const pre = [];
    for (let i = 0; i < 64; i++) {
      const h = await createHello(identity, { kem });
      pre.push({ h, hello: decodeClientFrame(fromUtf8(h.bytes)) as Hello });
    }
    let n = 0;
    let clientUs = 0;
    const c0 = cpuUsage();
    const t0 = performance.now();
    let serverUs = 0;
    let sizes = { hello: 0, challenge: 0 };
    while (performance.now() - t0 < seconds * 1000) {
      const { h, hello } = pre[n % pre.length]!;
      const s0 = cpuUsage();
      const { challenge, pending } = await acceptHello(h.bytes, hello, { key: server, source: "wss://bench/" });
      serverUs += sum(cpuUsage(s0));
      const k0 = cpuUsage();
      const { proof, state } = await answerChallenge(h, challenge, () => {});
      clientUs += sum(cpuUsage(k0));
      const s1 = cpuUsage();
      const sig = fromB64u(proof.signature, "signature");
      if (!(await verifyProof(pending, sig))) throw new Error("proof");
      const grant: Grant = { channel: b64u(randomBytes(16)), key: { type: "AES-256-GCM", data: b64u(randomBytes(32)) }, valid_until: new Date().toISOString(), ttl: 3600 };
      const est = await sealGrant(pending, sig, grant, "wss://bench/");
      serverUs += sum(cpuUsage(s1));
      const k1 = cpuUsage();
      await openGrant(state, est);
      clientUs += sum(cpuUsage(k1));
      sizes = { hello: h.bytes.length, challenge: JSON.stringify(challenge).length };
      n++;
    }
    const wall = performance.now() - t0;
    const all = sum(cpuUsage(c0));
    const server_us = Math.round(serverUs / n);
    base ??= { server_us };
    out.push({
      kem,
      handshakes: n,
      server_per_s_one_core: Math.round(1e6 / (serverUs / n)),
      server_cpu_us: server_us,
      server_cpu_vs_x25519: Math.round((server_us / base.server_us) * 100) / 100,
      client_cpu_us: Math.round(clientUs / n),
      total_cpu_us: Math.round(all / n),
      wall_ms: Math.round((wall / n) * 100) / 100,
      hello_bytes: sizes.hello,
      challenge_bytes: sizes.challenge,
    });
  }
  console.table(out);
  console.log(JSON.stringify({ kem_rows: out }));
}

const sum = (u: NodeJS.CpuUsage) => u.user + u.system;

/** The browser bundle (bin/build-browser.mjs's settings) with X-Wing, and with its package stubbed out. */
async function bundles(): Promise<void> {
  const common = {
    absWorkingDir: root,
    entryPoints: ["client/browser.ts"],
    bundle: true,
    format: "esm" as const,
    platform: "browser" as const,
    target: ["es2022"],
    write: false,
    logLevel: "silent" as const,
  };
  const stubNodeCrypto = {
    name: "stub-node-crypto",
    setup(b: import("esbuild").PluginBuild) {
      b.onResolve({ filter: /^(node:)?crypto$/ }, (a) => ({ path: a.path, namespace: "stub" }));
      b.onLoad({ filter: /.*/, namespace: "stub" }, () => ({ contents: "export default undefined; export const webcrypto = undefined;", loader: "js" }));
    },
  };
  const noXWing = {
    name: "no-x-wing",
    setup(b: import("esbuild").PluginBuild) {
      b.onResolve({ filter: /^@hpke\/hybridkem-x-wing$/ }, (a) => ({ path: a.path, namespace: "nox" }));
      b.onLoad({ filter: /.*/, namespace: "nox" }, () => ({ contents: 'export class XWing { constructor() { throw new Error("X-Wing is not in this bundle"); } }', loader: "js" }));
    },
  };
  const size = async (plugins: import("esbuild").Plugin[]) => {
    const r = await build({ ...common, plugins });
    const js = r.outputFiles?.[0]?.contents ?? new Uint8Array();
    return { bytes: js.length, gzip: gzipSync(js).length };
  };
  const withX = await size([stubNodeCrypto]);
  const without = await size([stubNodeCrypto, noXWing]);
  console.table([
    { bundle: "psimbols.js with X-Wing", ...withX },
    { bundle: "psimbols.js without X-Wing", ...without },
  ]);
  console.log(JSON.stringify({ bundle: { with_x_wing: withX, without_x_wing: without } }));
}

await rows();
await bundles();
