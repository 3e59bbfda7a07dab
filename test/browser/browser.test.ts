/**
 * The browser bundle (dist/browser/psimbols.js) in Debian's Chromium against
 * real broker processes: key generation and storage, PKCS#8 import, the
 * handshake, requests, pushes and notices from an operator, renewal, resume
 * after a dropped socket, and server key pinning.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { type RSAPSSKeyPairKeyObjectOptions, generateKeyPairSync } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { KeyType, generateSigningKey } from "../../shared/crypto.js";
import { ChannelType } from "../../shared/frames.js";
import { sodiumLoaded } from "../../node/chacha.js";
import { nodeChannelTypes } from "../../node/engines.js";
import { type Client, connect, generateKeyFile, loadKey } from "../../client/node.js";
import { type RunningBroker, runCli, startBroker, tempDir } from "../helpers/broker.js";
import { type Proxy, startProxy } from "../helpers/proxy.js";
import { BUNDLE_DIR, type PageServer, collectErrors, countingProxy, launch, loud, preflight, servePage, until } from "./harness.js";

/* eslint-disable @typescript-eslint/no-explicit-any -- page code sees the bundle's module as `any` */

const t = suite("browser client (Chromium)");
let broker: RunningBroker;
let browser: Browser;
let context: BrowserContext;
let page: Page;
let pages: PageServer;
let operator: Client;
let errors: string[];
const dir = tempDir();

preflight();

t.before(
  loud(async () => {
    browser = await launch();
    pages = await servePage();
    const opKey = join(dir, "operator.pem");
    await generateKeyFile(KeyType.ed25519, opKey);
    const keys = join(dir, "keys.json");
    const added = await runCli(["keys", "add", opKey, "--role", "operator", "--file", keys]);
    assert.is(added.code, 0, added.stderr);
    // a short channel life, so the renewal test sees one in a few seconds
    broker = await startBroker(["--keys", keys, "--channel-ttl", "6", "--expiring-before", "2", "--hellos-per-address", "1000"]);
    operator = await connect(broker.url, { key: opKey, serverKey: broker.fingerprint });
  }),
);

t.before.each(async () => {
  context = await browser.newContext();
  page = await context.newPage();
  errors = collectErrors(page);
  await page.goto(pages.url);
  await page.waitForFunction(() => document.title === "ready");
});

t.after.each(async () => {
  await page?.evaluate(() => (window as any).c?.close()).catch(() => {});
  await context?.close();
});

t.after(async () => {
  await operator?.close();
  await browser?.close();
  await pages?.close();
  await broker?.stop();
});

/** Opens a client in the page as `window.c`, recording its events in `window.events`. */
async function connectInPage(url: string, options: { serverKey?: string; kem?: string; imported?: string } = {}): Promise<{ fp: string; channel: string; channelType: string }> {
  return page.evaluate(
    async ({ url, options }) => {
      const p = (window as any).psimbols;
      const key = options.imported ? await p.importKey(options.imported) : await p.loadOrCreateKey();
      const opts: any = {};
      if (options.serverKey) opts.serverKey = options.serverKey;
      if (options.kem) opts.kem = options.kem;
      const c = await p.connect(url, { key, ...opts });
      const ev = (window as any).events;
      c.on("push", (m: unknown) => ev.push({ type: "push", message: m }));
      c.on("notice", (n: any) => ev.push({ type: "notice", kind: n.kind, current: n.current }));
      c.on("established", (i: any) => ev.push({ type: "established", id: i.id, renewed: i.renewed }));
      c.on("resumed", (i: any) => ev.push({ type: "resumed", id: i.id }));
      c.on("close", (e: any) => ev.push({ type: "close", code: e.code, error: e.error?.code }));
      (window as any).c = c;
      return { fp: key.public.fingerprint, channel: c.channel.id, channelType: c.channel.channelType };
    },
    { url, options },
  );
}

/** RSA-PSS key options restricted to `hash`; @types/node types saltLength as a string, Node wants a number. */
function pssOptions(hash: string, saltLength: number): RSAPSSKeyPairKeyObjectOptions {
  return { modulusLength: 2048, hashAlgorithm: hash, mgf1HashAlgorithm: hash, saltLength } as unknown as RSAPSSKeyPairKeyObjectOptions;
}

const events = (): Promise<any[]> => page.evaluate(() => (window as any).events);

async function waitEvent(what: string, pred: (e: any) => boolean, ms = 10_000): Promise<any> {
  let found: any;
  await until(what, async () => (found = (await events()).find(pred)) !== undefined, ms);
  return found;
}

/** Connects in the page and returns the error code and message it failed with. */
async function failingConnect(url: string, options: { serverKey?: string } = {}): Promise<{ code: string; message: string }> {
  return page.evaluate(
    async ({ url, options }) => {
      const p = (window as any).psimbols;
      try {
        await p.connect(url, { key: await p.loadOrCreateKey(), ...options });
        return { code: "connected", message: "" };
      } catch (e: any) {
        return { code: e.code, message: e.message };
      }
    },
    { url, options },
  );
}

t("against the same broker, the browser agrees on AES-256-GCM (WebCrypto) and the Node client on its first type, ChaCha20-Poly1305 where libsodium runs", async () => {
  const { channelType } = await connectInPage(broker.url, { serverKey: broker.fingerprint });
  assert.is(channelType, ChannelType.aes256gcm);
  assert.equal(await page.evaluate(() => (window as any).c.request("echo", { n: 1 })), { n: 1 });
  assert.is(operator.channel?.channelType, sodiumLoaded() ? ChannelType.chacha20poly1305 : ChannelType.aes256gcm);
  assert.ok(operator.channel?.channelType === nodeChannelTypes()[0]);
  assert.ok(await operator.request("echo", true));
  // A browser that asks for ChaCha20-Poly1305 is told, before any socket, that WebCrypto cannot run it.
  const refused = await page.evaluate(async (url) => {
    const p = (window as any).psimbols;
    try {
      await p.connect(url, { key: await p.loadOrCreateKey(), channelTypes: ["ChaCha20-Poly1305"] });
      return "connected";
    } catch (e: any) {
      return e.code;
    }
  }, broker.url);
  assert.is(refused, "unsupported");
});

t("the bundle is one self-contained ES module and finds Ed25519 and X25519 in this Chromium", async () => {
  const js = readFileSync(join(BUNDLE_DIR, "psimbols.js"), "utf8");
  assert.not.match(js, /^\s*import\s.*from\s/m, "the bundle imports another module");
  assert.not.match(js, /require\(["']/, "the bundle calls require");
  const algs = await page.evaluate(() => (window as any).psimbols.detectAlgorithms());
  console.log(`    chromium ${browser.version()}: identity key ${algs.keyType}, handshake KEM ${algs.kem}`);
  assert.equal(algs, { keyType: "Ed25519", kem: "X25519" });
});

t("a generated key is a non-extractable CryptoKey kept in IndexedDB, the same after a reload", async () => {
  const first = await page.evaluate(async () => {
    const p = (window as any).psimbols;
    const k = await p.loadOrCreateKey();
    const exported = await crypto.subtle.exportKey("pkcs8", k.privateKey).then(
      () => "exported",
      (e: Error) => e.name,
    );
    return { fp: k.public.fingerprint, type: k.public.type, extractable: k.privateKey.extractable, exported, origin: k.origin };
  });
  assert.is(first.type, "Ed25519");
  assert.is(first.extractable, false);
  assert.is(first.exported, "InvalidAccessError");
  assert.is(first.origin, "generated");
  await page.reload();
  await page.waitForFunction(() => document.title === "ready");
  const again = await page.evaluate(async () => {
    const p = (window as any).psimbols;
    const [stored, loaded] = await Promise.all([p.loadStoredKey(), p.loadOrCreateKey()]);
    return { stored: stored.public.fingerprint, loaded: loaded.public.fingerprint, extractable: stored.privateKey.extractable };
  });
  assert.equal(again, { stored: first.fp, loaded: first.fp, extractable: false });
  // and it is what signs: the broker sees that identity
  await connectInPage(broker.url, { serverKey: broker.fingerprint });
  const who = await page.evaluate(() => (window as any).c.request("whoami"));
  assert.is(who.identity, first.fp);
});

t("does the handshake with a pinned server key and makes requests", async () => {
  const { fp } = await connectInPage(broker.url, { serverKey: broker.fingerprint });
  const r = await page.evaluate(async () => {
    const c = (window as any).c;
    const echoes = await Promise.all(Array.from({ length: 20 }, (_, i) => c.request("echo", { i, s: "é\u{1F510}" })));
    return { echoes, who: await c.request("whoami"), serverKey: c.channel.serverKey, state: c.state };
  });
  assert.equal(r.echoes[7], { i: 7, s: "é\u{1F510}" });
  assert.is(r.echoes.length, 20);
  assert.is(r.who.identity, fp);
  assert.is(r.serverKey, broker.fingerprint);
  assert.is(r.state, "ready");
  assert.equal(errors, []);
});

t("receives a push and then a `revoked` notice sent by an operator from Node", async () => {
  const { fp } = await connectInPage(broker.url, { serverKey: broker.fingerprint });
  await operator.request("admin.push", { identity: fp, message: { hello: "from node", n: 1 } });
  const push = await waitEvent("the push", (e) => e.type === "push");
  assert.equal(push.message, { hello: "from node", n: 1 });

  const revoked = (await operator.request("admin.revoke", { identity: fp })) as { revoked: string[] };
  assert.is(revoked.revoked.length, 1);
  const notice = await waitEvent("the revoked notice", (e) => e.type === "notice" && e.kind === "revoked");
  assert.is(notice.current, true);
  const close = await waitEvent("the close", (e) => e.type === "close");
  assert.is(close.code, 4005); // revoked: the client does not reconnect
  const after = await page.evaluate(() => (window as any).c.request("echo", 1).then(() => "ok", (e: any) => e.code));
  assert.is(after, "closed");
});

t("renews its channel before expiry on the same socket while requests keep flowing", async () => {
  const { channel } = await connectInPage(broker.url, { serverKey: broker.fingerprint });
  // ttl 6 s: renewal at 0.6–0.7 of it, the `expiring` notice at 2 s before expiry as the backstop
  const r = await page.evaluate(async () => {
    const c = (window as any).c;
    const deadline = performance.now() + 5000;
    let sent = 0;
    let failed = 0;
    const worker = async () => {
      while (performance.now() < deadline) {
        const n = sent++;
        try {
          if ((await c.request("echo", n)) !== n) failed++;
        } catch {
          failed++;
        }
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    return { sent, failed, channel: c.channel.id, handshakes: c.stats.handshakes };
  });
  assert.is(r.failed, 0);
  assert.ok(r.sent > 50, `only ${r.sent} requests in 5 s`);
  assert.ok(r.handshakes >= 2, `handshakes ${r.handshakes}`);
  assert.is.not(r.channel, channel);
  const renewed = (await events()).filter((e) => e.type === "established" && e.renewed);
  assert.ok(renewed.length >= 1);
});

t("survives a dropped socket by resuming its channel without a new handshake", async () => {
  const proxy: Proxy = await startProxy(broker.port);
  try {
    const { channel } = await connectInPage(proxy.url, { serverKey: broker.fingerprint });
    const before = await page.evaluate(() => (window as any).c.stats);
    proxy.cut(); // the TCP connection dies under the page, as on a network fault
    await waitEvent("the resume", (e) => e.type === "resumed");
    const r = await page.evaluate(async () => {
      const c = (window as any).c;
      return { echo: await c.request("echo", "after"), channel: c.channel.id, stats: c.stats };
    });
    assert.is(r.echo, "after");
    assert.is(r.channel, channel);
    assert.is(r.stats.handshakes, before.handshakes);
    assert.ok(r.stats.resumes >= 1);
  } finally {
    proxy.close();
  }
});

t("refuses a server whose key differs from the pinned one, loudly, and does not retry", async () => {
  const wrong = (await generateSigningKey()).public.fingerprint;
  const counter = await countingProxy(broker.port);
  try {
    const r = await failingConnect(counter.url, { serverKey: wrong });
    assert.is(r.code, "server_key_mismatch");
    assert.match(r.message, "SERVER KEY MISMATCH");
    assert.match(r.message, wrong);
    assert.match(r.message, broker.fingerprint);
    assert.ok(errors.some((e) => e.includes("SERVER KEY MISMATCH")), "nothing on the page's console");
    await new Promise((r) => setTimeout(r, 1500));
    assert.is(counter.connections(), 1, "the page connected again after the mismatch");
  } finally {
    counter.close();
  }
});

t("learns the server key on first use in localStorage and refuses a different key there later", async () => {
  await connectInPage(broker.url);
  const stored = await page.evaluate((url) => localStorage.getItem(`psimbols.known_server ${url}`), broker.url);
  assert.is(stored, broker.fingerprint);
  await page.evaluate(() => (window as any).c.close());
  // as if an impostor now answered at that URL: the recorded key differs from the one presented
  const other = (await generateSigningKey()).public.fingerprint;
  await page.evaluate(([url, fp]) => localStorage.setItem(`psimbols.known_server ${url}`, fp!), [broker.url, other]);
  const r = await failingConnect(broker.url);
  assert.is(r.code, "server_key_mismatch");
  assert.match(r.message, "known-servers store");
  // a tampered entry is never read as "unknown"
  await page.evaluate((url) => localStorage.setItem(`psimbols.known_server ${url}`, "not a fingerprint"), broker.url);
  assert.is((await failingConnect(broker.url)).code, "unavailable");
});

t("imports PKCS#8 keys (PEM and DER) non-extractable, with the fingerprints Node computes; P-256 with a P-256 KEM connects", async () => {
  const ed = join(dir, "ed.pem");
  const p256 = join(dir, "p256.pem");
  await generateKeyFile(KeyType.ed25519, ed);
  await generateKeyFile(KeyType.p256, p256);
  // an RSA-PSS key as OpenSSL writes it (id-RSASSA-PSS with SHA-256 parameters), which WebCrypto cannot import as is
  const pss = join(dir, "pss.pem");
  const pair = generateKeyPairSync("rsa-pss", pssOptions("sha256", 32));
  writeFileSync(pss, pair.privateKey.export({ type: "pkcs8", format: "pem" }));
  const want = {
    ed: (await loadKey(ed)).public.fingerprint,
    p256: (await loadKey(p256)).public.fingerprint,
    pss: (await loadKey(pss)).public.fingerprint,
  };
  const pems = { ed: readFileSync(ed, "utf8"), p256: readFileSync(p256, "utf8"), pss: readFileSync(pss, "utf8") };
  const got = await page.evaluate(async (pems) => {
    const p = (window as any).psimbols;
    const out: Record<string, unknown> = {};
    for (const [name, pem] of Object.entries(pems)) {
      const k = await p.importKey(pem);
      out[name] = { fp: k.public.fingerprint, type: k.public.type, extractable: k.privateKey.extractable };
    }
    // DER bytes too
    const body = pems.ed.replace(/-----[^-]+-----|\s/g, "");
    const der = Uint8Array.from(atob(body), (ch) => ch.charCodeAt(0));
    out.der = (await p.importKey(der)).public.fingerprint;
    return out;
  }, pems);
  assert.equal(got.ed, { fp: want.ed, type: "Ed25519", extractable: false });
  assert.equal(got.p256, { fp: want.p256, type: "ECDSA-P256", extractable: false });
  assert.equal(got.pss, { fp: want.pss, type: "RSA", extractable: false });
  assert.is(got.der, want.ed);

  const { fp } = await connectInPage(broker.url, { serverKey: broker.fingerprint, kem: "P-256", imported: pems.p256 });
  assert.is(fp, want.p256);
  const who = await page.evaluate(() => (window as any).c.request("whoami"));
  assert.is(who.identity, want.p256);
});

t("refuses keys it cannot use, saying why", async () => {
  const sha1 = generateKeyPairSync("rsa-pss", pssOptions("sha1", 20));
  const ec384 = generateKeyPairSync("ec", { namedCurve: "secp384r1" });
  const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const inputs: Record<string, string> = {
    pssSha1: sha1.privateKey.export({ type: "pkcs8", format: "pem" }) as string,
    p384: ec384.privateKey.export({ type: "pkcs8", format: "pem" }) as string,
    encrypted: rsa.privateKey.export({ type: "pkcs8", format: "pem", cipher: "aes-256-cbc", passphrase: "x" }) as string,
    traditional: rsa.privateKey.export({ type: "pkcs1", format: "pem" }) as string,
    public: rsa.publicKey.export({ type: "spki", format: "pem" }) as string,
    garbage: "-----BEGIN PRIVATE KEY-----\nMIIBVgIBADANBgkqhkiG9w0BAQEFAASCAUAwggE8AgEAAkEA\n-----END PRIVATE KEY-----\n",
    empty: "",
  };
  const got = await page.evaluate(async (inputs) => {
    const p = (window as any).psimbols;
    const out: Record<string, string> = {};
    for (const [name, pem] of Object.entries(inputs)) {
      out[name] = await p.importKey(pem).then(
        () => "imported",
        (e: any) => `${e.code}: ${e.message}`,
      );
    }
    out.bytes = await p.importKey(new Uint8Array([0x30, 0x82, 0xff, 0xff, 0])).then(
      () => "imported",
      (e: any) => `${e.code}: ${e.message}`,
    );
    return out;
  }, inputs);
  assert.match(got.pssSha1!, /^unsupported: .*SHA-256/);
  assert.match(got.p384!, /^unsupported: .*P-256/);
  assert.match(got.encrypted!, /^bad_request: .*encrypted.*openssl pkcs8 -topk8 -nocrypt/);
  assert.match(got.traditional!, /^bad_request: .*traditional.*openssl pkcs8/);
  assert.match(got.public!, /^bad_request: expected one "-----BEGIN PRIVATE KEY-----" block, found 0/);
  assert.match(got.garbage!, /^bad_request: /);
  assert.match(got.empty!, /^bad_request: /);
  assert.match(got.bytes!, /^bad_request: .*malformed DER/);
});

t.run();
