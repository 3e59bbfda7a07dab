/**
 * The server's per-connection state machine (server/connection.ts, PROTOCOL.md
 * §8.1) under any sequence of client frames: hellos (own key, someone else's,
 * malformed), proofs (valid, random, stale, from another connection),
 * resumes, requests (valid, forged, replayed, for another channel), garbage
 * and binary messages, in any order and in any state.
 *
 * Whatever the sequence:
 *   - every frame gets at most one answer, of a server frame type, with a
 *     documented error code and never `internal`; a close uses a documented code;
 *   - `established` comes only after a proof this peer made for the pending
 *     challenge of this socket; `response` only for a request sealed with the
 *     current (or just renewed) binding's keys; `resumed` only for a resume;
 *   - the node stays up and a fresh client is served afterwards.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import fc from "fast-check";
import { type SigningKey, generateSigningKey, randomBytes } from "../../shared/crypto.js";
import { b64u, fromUtf8 } from "../../shared/encoding.js";
import { CloseCode, ErrorCode } from "../../shared/errors.js";
import { type Challenge, type Established, decodeServerFrame } from "../../shared/frames.js";
import { type ClientHello, answerChallenge, createHello, openGrant } from "../../shared/handshake.js";
import { type Frame, Raw, type RawChannel, call, handshake, rawChannel, requestFrame } from "../helpers/raw.js";
import { documentedCodes, inProcessBroker, params } from "./support.js";

const Action = {
  helloOwn: "helloOwn",
  helloVictim: "helloVictim",
  helloBad: "helloBad",
  /** A hello of our own while one is pending (a protocol violation). */
  secondHello: "secondHello",
  proofValid: "proofValid",
  proofRandom: "proofRandom",
  proofStale: "proofStale",
  proofOtherConn: "proofOtherConn",
  resumeVictim: "resumeVictim",
  resumeOwn: "resumeOwn",
  resumeRandom: "resumeRandom",
  requestValid: "requestValid",
  requestForged: "requestForged",
  requestReplay: "requestReplay",
  requestVictim: "requestVictim",
  garbage: "garbage",
  binary: "binary",
} as const;
type Action = (typeof Action)[keyof typeof Action];

const SERVER_TYPES = new Set(["challenge", "established", "response", "push", "resumed", "error"]);
const CLOSE_CODES = new Set<number>([...Object.values(CloseCode).map((c) => c.code), 1005, 1006]);

interface Peer {
  key: SigningKey;
  raw: Raw;
  /** The pending hello and challenge on this socket, if any. */
  hello?: ClientHello;
  challenge?: Challenge;
  /** Proofs made earlier (stale once their handshake is over). */
  oldProofs: Frame[];
  ch?: RawChannel;
  /** Bindings whose requests the server may still answer (current, and the one a renewal replaced). */
  live: RawChannel[];
  sentRequests: Frame[];
  expect: "established" | "response" | "resumed" | "challenge" | "any";
}

const t = suite("server connection state machine");
let node: Awaited<ReturnType<typeof inProcessBroker>>;
let victim: { key: SigningKey; raw: Raw; ch: RawChannel };
let otherConn: { raw: Raw; proof: Frame };

t.before(async () => {
  node = await inProcessBroker();
  const key = await generateSigningKey();
  const raw = await Raw.open(node.url);
  victim = { key, raw, ch: await handshake(raw, key) };
  // A pending handshake on another connection, whose proof is offered to ours.
  const oraw = await Raw.open(node.url);
  const h = await createHello(await generateSigningKey());
  oraw.send(fromUtf8(h.bytes));
  const c = decodeServerFrame(JSON.stringify(await oraw.next())) as Challenge;
  otherConn = { raw: oraw, proof: (await answerChallenge(h, c, () => {})).proof };
});
t.after(async () => {
  victim.raw.close();
  otherConn.raw.close();
  await node.broker.close();
});

/** Sends one action's frame; returns what the server may legitimately answer with. */
async function act(p: Peer, a: Action): Promise<string> {
  switch (a) {
    case "helloOwn":
    case "secondHello":
    case "helloVictim": {
      // With a handshake pending, the productive next step is its proof (secondHello covers the other).
      if (a === "helloOwn" && p.hello && p.challenge) return act(p, "proofValid");
      const pending = p.hello !== undefined || p.challenge !== undefined;
      const h = await createHello(a === "helloVictim" ? victim.key : p.key);
      p.raw.send(fromUtf8(h.bytes));
      p.hello = a === "helloVictim" ? undefined : h; // we cannot prove the victim's key
      p.challenge = undefined;
      return pending ? "error" : "challenge";
    }
    case "helloBad":
      p.raw.send({ type: "hello", version: 1, public_key: { type: "Ed25519", data: "x" }, channel_types: [], kem: {}, nonce: "" });
      return "error";
    case "proofValid": {
      if (!p.hello || !p.challenge) {
        // Nothing pending: start a handshake of our own (a renewal if bound); the proof follows next time.
        return act(p, "helloOwn");
      }
      const { proof, state } = await answerChallenge(p.hello, p.challenge, () => {});
      p.oldProofs.push(proof);
      p.raw.send(proof);
      const e = await p.raw.next();
      if (e.type !== "established") return `unexpected:${JSON.stringify(e)}`;
      const { grant, channelKey } = await openGrant(state, e as Established);
      const ch = await rawChannel(grant, channelKey, p.hello.nonceC, state.nonceS);
      p.live = p.ch ? [ch, p.ch] : [ch];
      p.ch = ch;
      p.hello = p.challenge = undefined;
      return "done";
    }
    case "proofRandom":
      p.raw.send({ type: "proof", signature: b64u(randomBytes(64)) });
      p.hello = p.challenge = undefined;
      return "error";
    case "proofStale":
    case "proofOtherConn": {
      const f = a === "proofOtherConn" ? otherConn.proof : p.oldProofs.at(-1) ?? otherConn.proof;
      p.raw.send(f);
      p.hello = p.challenge = undefined;
      return "error";
    }
    case "resumeVictim":
    case "resumeOwn":
    case "resumeRandom": {
      const channel = a === "resumeVictim" ? victim.ch.grant.channel : a === "resumeOwn" && p.ch ? p.ch.grant.channel : b64u(randomBytes(16));
      p.raw.send({ type: "resume", channel, nonce: b64u(randomBytes(32)) });
      return "resumed|error";
    }
    case "requestValid": {
      if (!p.ch && !p.hello) {
        // No channel yet: get one first (hello now, proof and request on the next actions).
        return act(p, "helloOwn");
      }
      const b = p.ch;
      if (!b) return act(p, "proofValid");
      const f = await requestFrame(b, "echo", b.seq);
      p.sentRequests.push(f);
      p.raw.send(f);
      return "response|error|sealed-request";
    }
    case "requestForged":
      p.raw.send({ type: "request", channel: p.ch?.grant.channel ?? b64u(randomBytes(16)), seq: 1 + Math.floor(Math.random() * 100), request: b64u(randomBytes(40)) });
      return "error";
    case "requestReplay": {
      const f = p.sentRequests.at(0);
      p.raw.send(f ?? { type: "request", channel: b64u(randomBytes(16)), seq: 1, request: b64u(randomBytes(32)) });
      return "error";
    }
    case "requestVictim": {
      // A frame of the victim's binding sent on this socket: never acted on here.
      const f = await requestFrame({ ...victim.ch, seq: 1_000_000 }, "whoami");
      p.raw.send(f);
      return "error";
    }
    case "garbage":
      p.raw.send('{"type":');
      return "error";
    case "binary":
      p.raw.ws.send(new Uint8Array([1, 2]));
      return "error";
  }
}

const seen = new Map<string, number>();
t.after(() => {
  if (process.env.PSIMBOLS_FUZZ_STATS) console.log(Object.fromEntries(seen));
});
t("any sequence of client frames gets only documented answers, and nothing is granted or answered without the keys", async () => {
  // Weighted so that sequences get somewhere: most frames keep the socket open; the ones that end it are rarer.
  const w = (weight: number, a: Action) => ({ weight, arbitrary: fc.constant(a) });
  const action = fc.oneof(
    w(8, "helloOwn"),
    w(8, "proofValid"),
    w(10, "requestValid"),
    w(3, "requestForged"),
    w(3, "requestReplay"),
    w(3, "requestVictim"),
    w(2, "resumeRandom"),
    w(2, "resumeOwn"),
    w(2, "resumeVictim"),
    w(2, "helloVictim"),
    w(1, "helloBad"),
    w(1, "secondHello"),
    w(1, "proofRandom"),
    w(1, "proofStale"),
    w(1, "proofOtherConn"),
    w(1, "garbage"),
    w(1, "binary"),
  );
  await fc.assert(
    fc.asyncProperty(fc.array(action, { minLength: 1, maxLength: 24 }), async (actions) => {
      const p: Peer = { key: await generateSigningKey(), raw: await Raw.open(node.url), oldProofs: [], live: [], sentRequests: [], expect: "any" };
      let closed: number | undefined;
      void p.raw.closed.then((c) => (closed = c.code));
      try {
        for (const a of actions) {
          if (closed !== undefined || p.raw.ws.readyState !== 1) break;
          const allowed = await act(p, a);
          seen.set(allowed === "done" ? "established" : a, (seen.get(allowed === "done" ? "established" : a) ?? 0) + 1);
          if (allowed.startsWith("unexpected:")) assert.unreachable(`${a}: ${allowed}`);
          if (allowed === "done") continue;
          const f = await p.raw.next(2000).catch(() => undefined);
          if (!f) {
            assert.ok(closed !== undefined || p.raw.ws.readyState !== 1, `${a}: no answer and the socket is still open`);
            break;
          }
          assert.ok(SERVER_TYPES.has(String(f.type)), `${a}: frame type ${String(f.type)}`);
          if (f.type === "error") {
            assert.ok(documentedCodes.has(f.error.code), `${a}: code ${f.error.code}`);
            assert.is.not(f.error.code, ErrorCode.internal, `${a}: internal error`);
            // A request sealed with our keys is answered, or refused as unauthorised (its binding was replaced) or too_many.
            if (allowed.includes("sealed-request") && f.error.code !== ErrorCode.unauthorised && f.error.code !== ErrorCode.tooMany) assert.unreachable(`${a}: ${f.error.code}`);
          } else {
            assert.ok(allowed.split("|").includes(String(f.type)) || f.type === "push", `${a}: got ${String(f.type)}, allowed ${allowed}`);
          }
          if (f.type === "challenge") p.challenge = decodeServerFrame(JSON.stringify(f)) as Challenge;
          if (f.type === "response") {
            seen.set("response", (seen.get("response") ?? 0) + 1);
            // Only a request sealed by us on a live binding, answered once, under that binding's keys.
            const req = p.sentRequests.at(-1)!;
            assert.is(f.seq, req.seq);
            assert.ok(p.live.some((b) => b.grant.channel === f.channel));
          }
          if (f.type === "resumed") {
            // Resumed is not a grant: without the channel key no request can follow; forget the binding.
            p.ch = undefined;
            p.live = [];
          }
        }
        if (closed === undefined) await Promise.race([p.raw.closed, new Promise((r) => setTimeout(r, 20))]);
        if (closed !== undefined) assert.ok(CLOSE_CODES.has(closed), `close code ${closed}`);
      } catch (e) {
        if (process.env.PSIMBOLS_FUZZ_STATS) console.error(actions, e);
        throw e;
      } finally {
        p.raw.close();
      }
    }),
    params(120),
  );
  // The node is up and serves: the victim's channel is intact and a newcomer gets one.
  assert.is((await call(victim.raw, victim.ch, "whoami")).data?.channel, victim.ch.grant.channel);
  const raw = await Raw.open(node.url);
  const ch = await handshake(raw, await generateSigningKey());
  assert.equal(await call(raw, ch, "echo", "after"), { data: "after" });
  raw.close();
});

t.run();

