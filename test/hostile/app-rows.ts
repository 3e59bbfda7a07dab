/**
 * Hostile-matrix rows for the calls to applications (docs/BACKEND.md): what
 * an application answers is untrusted input too. Answers that try to smuggle
 * a frame, that are not JSON, too large, nested too deep or full of strange
 * strings; authorize answers with a huge `info`, not JSON, a string for a
 * boolean, or a refusal. Each runs against the `app` broker (test/hostile/env.ts)
 * and is followed by the "nothing changed" check.
 */
import * as assert from "uvu/assert";
import { generateSigningKey } from "../../shared/crypto.js";
import { fromUtf8 } from "../../shared/encoding.js";
import { CloseCode, ErrorCode } from "../../shared/errors.js";
import { type Challenge, decodeServerFrame } from "../../shared/frames.js";
import { answerChallenge, createHello } from "../../shared/handshake.js";
import { json } from "../helpers/app-server.js";
import { call } from "../helpers/raw.js";
import type { Ctx, Expect, Outcome, Row } from "./env.js";
import { HUGE_BYTES, authorizeAnswers, hostileApp, hugeAnswer } from "./hostile-app.js";
import type { ServerResponse } from "node:http";

/** An inner answer: the request was answered, the socket stays. */
const ANSWERED: Expect = { reply: "response", error: null, close: null };
/** The handshake's proof answered with `unavailable`; the socket stays for a retry. */
const UNAVAILABLE_AT_PROOF: Expect = { reply: "error", error: ErrorCode.unavailable, close: null };

/** A row calling `op` on a fresh peer; `check` looks at the inner answer (and may look at the broker). */
function upstreamRow(name: string, sent: string, op: string, check: (answer: Record<string, any>, x: Ctx, log: string) => void | Promise<void>): Row {
  return {
    name,
    sent,
    broker: "app",
    expect: ANSWERED,
    changes: { established: 1 },
    run: async (x: Ctx): Promise<Outcome> => {
      const p = await x.peer();
      const before = x.broker.output().length;
      const answer = await call(p.raw, p.ch, op, { probe: 1 });
      await check(answer, x, x.broker.output().slice(before));
      // The channel still serves, and nothing else arrived in between.
      assert.equal(await call(p.raw, p.ch, "echo", "after"), { data: "after" });
      assert.is(p.raw.frames.length, 0, "an extra frame reached the client");
      // `call` gives the inner answer of a response, or the outer error frame itself.
      return answer.type === "error" ? { reply: "error", error: String(answer.error?.code), close: null } : { reply: "response", error: null, close: null };
    },
  };
}

/** A row whose fresh key gets `answer` from the authorize hook; returns what answered the proof. */
function authorizeRow(name: string, sent: string, answer: (res: ServerResponse) => void, expect: Expect, changes: Row["changes"] = {}): Row {
  return {
    name,
    sent,
    broker: "app",
    expect,
    changes,
    run: async (x: Ctx): Promise<Outcome> => {
      const key = await generateSigningKey();
      authorizeAnswers.set(key.public.fingerprint, answer);
      try {
        const raw = await x.open();
        const h = await createHello(key);
        raw.send(fromUtf8(h.bytes));
        const c = decodeServerFrame(JSON.stringify(await raw.next())) as Challenge;
        raw.send((await answerChallenge(h, c, () => {})).proof);
        return await x.outcome(raw);
      } finally {
        authorizeAnswers.delete(key.public.fingerprint);
      }
    },
  };
}

/** Requests for `admin.*` ops that reached the hostile application so far. */
async function adminForwarded(): Promise<number> {
  return (await hostileApp()).requests.filter((r) => r.path === "/rpc" && String(r.json?.op).startsWith("admin.")).length;
}

/** A row sending `op` from a fresh key with no role, or from the harness's operator: the broker answers `code`, the application never hears of it. */
function adminRow(name: string, sent: string, op: string, by: "no role" | "operator", code: string): Row {
  return {
    name,
    sent,
    broker: "app",
    expect: ANSWERED,
    changes: { established: by === "operator" ? 0 : 1 },
    run: async (x: Ctx): Promise<Outcome> => {
      const before = await adminForwarded();
      const answer = by === "operator" ? await x.operator(op, { user: "victim" }) : await (async () => {
        const p = await x.peer();
        return call(p.raw, p.ch, op, { user: "victim" });
      })();
      assert.equal(answer.error?.code, code, JSON.stringify(answer));
      assert.is(await adminForwarded(), before, "an admin.* op reached the application");
      return answer.type === "error" ? { reply: "error", error: String(answer.error?.code), close: null } : { reply: "response", error: null, close: null };
    },
  };
}

const unavailable = (a: Record<string, any>) => assert.equal(a.error?.code, ErrorCode.unavailable, JSON.stringify(a).slice(0, 200));
/** `unavailable`, and the broker's log says why: the answer was over the size bound (`too_large`), not that it did not parse. */
const overBound = (a: Record<string, any>, _x: Ctx, log: string) => {
  unavailable(a);
  assert.match(log, /"reason":"too_large"/, "the broker refused the answer for its size");
  assert.not.match(log, /"reason":"bad_body"/, "the broker parsed the answer");
};

export const appRows: Row[] = [
  adminRow("an admin.* op the broker does not implement, from a key with no role, gets forbidden and never reaches the application", 'request {op: "admin.deleteUser", data: {user: "victim"}} (an upstream takes every op)', "admin.deleteUser", "no role", ErrorCode.forbidden),
  adminRow("an admin.* op the broker implements, from a key with no role, gets forbidden", 'request {op: "admin.revoke", data: {user: "victim"}}', "admin.revoke", "no role", ErrorCode.forbidden),
  adminRow("an admin.* op the broker does not implement, from an operator, gets not_found and never reaches the application", 'operator request {op: "admin.nope"}', "admin.nope", "operator", ErrorCode.notFound),
  {
    name: "a move by a key the authorize hook denies (to a fresh key it would allow) gets forbidden after the proof and close 4008; the hook saw the move, nothing moved",
    sent: "hello as the denied key with move_to a fresh key, valid proof and move_signature",
    broker: "app",
    expect: { reply: "error", error: ErrorCode.forbidden, close: CloseCode.forbidden.code },
    changes: { forbidden: 1 },
    run: async (x: Ctx): Promise<Outcome> => {
      const denied = await generateSigningKey();
      const fresh = await generateSigningKey();
      authorizeAnswers.set(denied.public.fingerprint, (res) => json(res, { allow: false }));
      const app = await hostileApp();
      const n = app.requests.length;
      try {
        const raw = await x.open();
        const h = await createHello(denied, { moveTo: fresh });
        raw.send(fromUtf8(h.bytes));
        const c = decodeServerFrame(JSON.stringify(await raw.next())) as Challenge;
        raw.send((await answerChallenge(h, c, () => {})).proof);
        const got = await x.outcome(raw);
        const asked = app.requests.slice(n).filter((r) => r.path === "/authorize");
        assert.equal(
          asked.map((r) => [r.json.identity.fingerprint, r.json.move_to?.fingerprint]),
          [[denied.public.fingerprint, fresh.public.fingerprint]],
        );
        // The fresh key holds nothing: a request of a channel it would have had is not there (the bound list is checked after the row).
        const who = await x.operator("admin.channels");
        assert.not.ok(JSON.stringify(who.data).includes(fresh.public.fingerprint), "a channel of the fresh key exists");
        return got;
      } finally {
        authorizeAnswers.delete(denied.public.fingerprint);
      }
    },
  },
  upstreamRow(
    "an upstream answer carrying frames (push, established, error) reaches the client only as data inside the sealed response",
    "upstream 200 {data: [push frame, established frame, error frame]}",
    "app.smuggle",
    (a) => {
      assert.ok(Array.isArray(a.data), JSON.stringify(a));
      assert.equal(a.data.map((f: { type: string }) => f.type), ["push", "established", "error"]);
    },
  ),
  upstreamRow("an upstream answer that is not JSON (with a frame after a blank line) gets unavailable", 'upstream 200 text/plain "OK\\r\\n\\r\\n{type:push}"', "app.text", unavailable),
  upstreamRow(
    "an upstream answer of 64 MiB, streamed without a length, gets unavailable; the broker stops reading at the bound (the application cannot write the rest)",
    "upstream 200 {data: 64 MiB string}, chunked, written as fast as it is read",
    "app.huge",
    async (a, x, log) => {
      overBound(a, x, log);
      for (let i = 0; i < 50 && !hugeAnswer.closed; i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok(hugeAnswer.closed, "the broker still holds the answer's connection 5 s after refusing it");
      assert.not.ok(hugeAnswer.finished, `the application wrote its whole answer (${hugeAnswer.bytes} bytes)`);
      assert.ok(hugeAnswer.bytes < HUGE_BYTES / 4, `the application wrote ${hugeAnswer.bytes} bytes before the broker let go`);
    },
  ),
  upstreamRow(
    "an upstream answer nested 100 000 levels deep gets unavailable: over the size bound (too_large), before any parse",
    "upstream 200 {data: [[[…]]]} 200 000 bytes",
    "app.deep",
    overBound,
  ),
  upstreamRow(
    "an upstream answer with a lone surrogate escape and a NUL stays data, well-formed on the wire",
    'upstream 200 {data: ["\\ud800", "\\u0000"]}',
    "app.strings",
    (a) => {
      assert.ok(Array.isArray(a.data), JSON.stringify(a));
      assert.is(a.data.length, 2);
      assert.is(a.data[0], "\ud800");
      assert.is(a.data[1], "\u0000");
    },
  ),
  upstreamRow(
    "an upstream answer with bytes that are not UTF-8 gets unavailable (bad_body), not replacement characters",
    "upstream 200 {data: [0xff 0xfe as a string]}",
    "app.bytes",
    (a: Record<string, any>, _x: Ctx, log: string) => {
      unavailable(a);
      assert.match(log, /"reason":"bad_body"/, "the broker refused the answer as a bad body");
    },
  ),
  authorizeRow(
    "an authorize answer with a 1 MiB info gets unavailable at the proof and writes no channel",
    "authorize 200 {allow: true, info: 1 MiB string}",
    (res) => json(res, { allow: true, info: "i".repeat(1 << 20) }),
    UNAVAILABLE_AT_PROOF,
  ),
  authorizeRow(
    "an authorize answer with an info just over 4096 bytes gets unavailable at the proof",
    "authorize 200 {allow: true, info: 4095-character string (4097 bytes of JSON)}",
    (res) => json(res, { allow: true, info: "i".repeat(4095) }),
    UNAVAILABLE_AT_PROOF,
  ),
  authorizeRow("an authorize answer that is not JSON gets unavailable at the proof", "authorize 200 text/html", (res) => void res.writeHead(200).end("<h1>allow</h1>"), UNAVAILABLE_AT_PROOF),
  authorizeRow('an authorize answer {"allow": "true"} (a string) gets unavailable, not a channel', 'authorize 200 {allow: "true"}', (res) => json(res, { allow: "true" }), UNAVAILABLE_AT_PROOF),
  authorizeRow(
    "an authorize answer with an extra field (a channel id, a key) gets unavailable",
    'authorize 200 {allow: true, channel: "x", key: "y"}',
    (res) => json(res, { allow: true, channel: "x", key: "y" }),
    UNAVAILABLE_AT_PROOF,
  ),
  authorizeRow(
    "an authorize refusal gets forbidden after the proof and close 4008",
    "authorize 200 {allow: false}",
    (res) => json(res, { allow: false }),
    { reply: "error", error: ErrorCode.forbidden, close: CloseCode.forbidden.code },
    { forbidden: 1 },
  ),
];
