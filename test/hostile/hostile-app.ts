/**
 * The hostile application of the matrix's `app` broker (docs/BACKEND.md): a real
 * HTTP server in the test process that the broker forwards every unknown op
 * to (`/rpc`) and asks after every proof (`/authorize`). Its upstream answer
 * is chosen by the op; its authorize answer by the identity's fingerprint
 * (rows register theirs; everyone else, the harness's peers included, is allowed).
 */
import type { ServerResponse } from "node:http";
import { AppServer, type AppRequest, json } from "../helpers/app-server.js";
import { WebhookSecret } from "../../server/app/signature.js";

/** The secret the `app` broker signs with. */
export const HOSTILE_APP_SECRET = WebhookSecret.generate();

/** Authorize answers per fingerprint, set by rows before their handshake. */
export const authorizeAnswers = new Map<string, (res: ServerResponse) => void>();

/** How far `app.huge` got: bytes handed to its socket, and whether the answer was finished when the socket closed. */
export const hugeAnswer = { bytes: 0, finished: false, closed: false };
/** What `app.huge` streams (chunked, no length declared): far more than the broker's bound and its socket buffers. */
export const HUGE_BYTES = 64 << 20;

/** Upstream answers per op. */
export const upstreamAnswers: Record<string, (r: AppRequest, res: ServerResponse) => void> = {
  "app.echo": (r, res) => json(res, { data: r.json.data }),
  "app.smuggle": (r, res) =>
    json(res, {
      data: [
        { type: "push", channel: r.json.channel, seq: 1, push: "AAAA" },
        { type: "established", source: "ws://evil/", channel: r.json.channel },
        { type: "error", error: { code: "unauthorised", message: "unknown channel or bad ciphertext" } },
      ],
    }),
  "app.text": (_r, res) => void res.writeHead(200, { "content-type": "text/plain" }).end("OK\r\n\r\n{\"type\":\"push\"}"),
  "app.huge": (_r, res) => {
    // Streamed as fast as the broker reads: one that kept reading past its bound would take all of it.
    Object.assign(hugeAnswer, { bytes: 0, finished: false, closed: false });
    const chunk = Buffer.alloc(64 << 10, 0x68);
    res.writeHead(200, { "content-type": "application/json" });
    res.once("close", () => Object.assign(hugeAnswer, { finished: res.writableFinished, closed: true }));
    res.on("error", () => {});
    const pump = (): void => {
      let ok = true;
      if (hugeAnswer.bytes === 0) ok = res.write('{"data":"');
      while (ok && hugeAnswer.bytes < HUGE_BYTES && !res.destroyed) {
        ok = res.write(chunk);
        hugeAnswer.bytes += chunk.length;
      }
      if (res.destroyed) return;
      if (hugeAnswer.bytes >= HUGE_BYTES) res.end('"}');
      else res.once("drain", pump);
    };
    pump();
  },
  "app.strings": (_r, res) => {
    // A lone surrogate escape and a NUL, in well-formed UTF-8: the answer stays data.
    const body = Buffer.from('{"data":["\\ud800","\\u0000"]}');
    res.writeHead(200, { "content-type": "application/json", "content-length": body.length }).end(body);
  },
  "app.bytes": (_r, res) => {
    // Raw bytes that are not UTF-8 inside a string: a broken answer (docs/BACKEND.md "Errors and limits").
    const body = Buffer.concat([Buffer.from('{"data":['), Buffer.from([0x22, 0xff, 0xfe, 0x22]), Buffer.from("]}")]);
    res.writeHead(200, { "content-type": "application/json", "content-length": body.length }).end(body);
  },
  "app.deep": (_r, res) => json(res, `{"data":${"[".repeat(100_000)}${"]".repeat(100_000)}}`),
  // An application that would carry out an `admin.*` op: the broker must never forward one (PROTOCOL.md §6.6).
  "admin.deleteUser": (r, res) => json(res, { data: { deleted: r.json.data?.user ?? null } }),
  "admin.nope": (_r, res) => json(res, { data: { done: true } }),
};

let started: Promise<AppServer> | undefined;

/** The server, started once per test process. */
export function hostileApp(): Promise<AppServer> {
  // Unref'd: the matrix's suites end on their own; the server must not keep the process alive.
  return (started ??= AppServer.start().then((app) => {
    app.unref();
    app.on("/rpc", (r, res) => {
      const answer = upstreamAnswers[String(r.json?.op)];
      if (answer) answer(r, res);
      else json(res, { error: { code: "not_found", message: "no such op" } });
    });
    app.on("/authorize", (r, res) => {
      const answer = authorizeAnswers.get(String(r.json?.identity?.fingerprint));
      if (answer) answer(res);
      else json(res, { allow: true });
    });
    return app;
  }));
}
