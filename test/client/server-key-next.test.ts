/**
 * The client's side of server key rotation (PROTOCOL.md §5.6): a server that
 * sends a forged statement, or one made for another source, over a real
 * socket, is refused and nothing is recorded; the known-servers stores keep
 * the next key beside the current one and read files of the older format.
 */
import { rejectsWith } from "../helpers/refusal.js";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { WebSocketServer } from "ws";
import { generateSigningKey, type SigningKey } from "../../shared/crypto.js";
import { ErrorCode, PsimbolsError } from "../../shared/errors.js";
import { decodeClientFrame, type Hello, type NextKeyWire } from "../../shared/frames.js";
import { acceptHello } from "../../shared/handshake.js";
import { signNextKey } from "../../shared/server-key-next.js";
import { FileKnownServers, connect } from "../../client/node.js";
import { LocalStorageKnownServers } from "../../client/browser.js";
import { tempDir } from "../helpers/broker.js";

const t = suite("client: server key rotation statements");

/** A server that answers a hello with a genuine challenge of `key` carrying `next` (whatever it is), then waits. */
async function statementServer(key: SigningKey, next: (url: string) => Promise<NextKeyWire>) {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1" });
  await new Promise((r) => wss.once("listening", r));
  const url = `ws://127.0.0.1:${(wss.address() as { port: number }).port}/`;
  const statement = await next(url);
  const proofs: string[] = [];
  wss.on("connection", (ws) => {
    ws.on("message", (data) => {
      const text = data.toString();
      const f = decodeClientFrame(text);
      if (f.type === "proof") return void proofs.push(text);
      void acceptHello(new TextEncoder().encode(text), f as Hello, { key, source: url, next: statement }).then(({ challenge }) => ws.send(JSON.stringify(challenge)));
    });
  });
  return { url, proofs, close: () => new Promise((r) => wss.close(r)) };
}


const cases: [string, (current: SigningKey, next: SigningKey) => (url: string) => Promise<NextKeyWire>][] = [
  ["a forged statement (signed by another key)", (_c, n) => async (url) => signNextKey(await generateSigningKey(), n.public, url, "2027-01-31T00:00:00Z")],
  ["a statement made for another source", (c, n) => async () => signNextKey(c, n.public, "ws://other.example/", "2027-01-31T00:00:00Z")],
];
for (const [name, make] of cases) {
  t(`${name} is refused with protocol before any proof, and nothing is recorded`, async () => {
    const current = await generateSigningKey();
    const next = await generateSigningKey();
    const srv = await statementServer(current, make(current, next));
    const file = join(tempDir(), "known_servers");
    writeFileSync(file, `${srv.url} ${current.public.fingerprint}\n`);
    try {
      await rejectsWith(connect(srv.url, { key: await generateSigningKey(), knownServersFile: file, reconnect: false }), ErrorCode.protocol, /next-server-key statement does not verify/);
      assert.equal(srv.proofs, []);
      assert.is(readFileSync(file, "utf8"), `${srv.url} ${current.public.fingerprint}\n`);
    } finally {
      await srv.close();
    }
  });
}

t("a client with followServerKey false does not offer server-key-next, so a forged statement is never looked at", async () => {
  const current = await generateSigningKey();
  const srv = await statementServer(current, async (url) => signNextKey(await generateSigningKey(), (await generateSigningKey()).public, url, "2027-01-31T00:00:00Z"));
  try {
    // the challenge is genuine and carries no statement for this client: it gets as far as its proof
    const c = connect(srv.url, { key: await generateSigningKey(), serverKey: current.public.fingerprint, followServerKey: false, reconnect: false, handshakeTimeoutMs: 300 });
    const e = await c.then(() => undefined, (x: unknown) => x);
    assert.instance(e, PsimbolsError); // this server never grants: the handshake times out
    assert.is(srv.proofs.length, 1);
  } finally {
    await srv.close();
  }
});

// ---------------------------------------------------------------- stores

const FP1 = `SHA256:${"A".repeat(43)}`;
const FP2 = `SHA256:${"B".repeat(43)}`;
const FP3 = `SHA256:${"C".repeat(43)}`;

t("FileKnownServers keeps the next key beside the current one; set forgets it", async () => {
  const path = join(tempDir(), "known_servers");
  writeFileSync(path, `# old-format file\nws://a/ ${FP1}\nws://b/ ${FP3}\n`);
  const ks = new FileKnownServers(path);
  assert.is(await ks.get("ws://a/"), FP1);
  assert.is(await ks.getNext("ws://a/"), undefined);
  await ks.setNext("ws://a/", FP2);
  assert.is(readFileSync(path, "utf8"), `# old-format file\nws://a/ ${FP1} next=${FP2}\nws://b/ ${FP3}\n`);
  assert.is(await ks.get("ws://a/"), FP1);
  assert.is(await ks.getNext("ws://a/"), FP2);
  await ks.setNext("ws://unknown/", FP2); // nothing to put it beside
  assert.is(await ks.get("ws://unknown/"), undefined);
  await ks.set("ws://a/", FP2); // the switch
  assert.is(readFileSync(path, "utf8"), `# old-format file\nws://a/ ${FP2}\nws://b/ ${FP3}\n`);
  assert.is(await ks.getNext("ws://a/"), undefined);
});

t("FileKnownServers refuses a malformed next entry, naming the line", async () => {
  for (const bad of [`ws://a/ ${FP1} next=SHA256:short`, `ws://a/ ${FP1} nxt=${FP2}`, `ws://a/ ${FP1} next=${FP2} extra`]) {
    const path = join(tempDir(), "known_servers");
    writeFileSync(path, `ws://ok/ ${FP3}\n${bad}\n`);
    await rejectsWith(new FileKnownServers(path).get("ws://ok/"), ErrorCode.badRequest, /known_servers:2: expected/);
  }
});

t("LocalStorageKnownServers keeps the next key in its own entry, cleared by set and delete, not listed", () => {
  const m = new Map<string, string>();
  const storage = {
    get length() {
      return m.size;
    },
    key: (i: number) => [...m.keys()][i] ?? null,
    getItem: (k: string) => m.get(k) ?? null,
    setItem: (k: string, v: string) => void m.set(k, v),
    removeItem: (k: string) => void m.delete(k),
    clear: () => m.clear(),
  } as Storage;
  const ks = new LocalStorageKnownServers(storage);
  ks.set("ws://a/", FP1);
  ks.setNext("ws://a/", FP2);
  assert.is(m.get("psimbols.known_server_next ws://a/"), FP2);
  assert.equal(ks.entries(), [["ws://a/", FP1]]);
  ks.set("ws://a/", FP2);
  assert.is(ks.getNext("ws://a/"), undefined);
  ks.setNext("ws://a/", FP3);
  assert.ok(ks.delete("ws://a/"));
  assert.is(m.size, 0);
  m.set("psimbols.known_server_next ws://a/", "tampered");
  try {
    ks.getNext("ws://a/");
    assert.unreachable();
  } catch (e) {
    assert.is((e as PsimbolsError).code, ErrorCode.badRequest);
  }
});

t.run();
