/**
 * Batches of requests to an upstream route whose operator opted in
 * (`--upstream-batch PREFIX`, docs/BACKEND.md "Batches"): the requests a node
 * forwards to that route in one turn of its event loop go out as one signed
 * POST, `{"kind":"batch","type":"batch","id":…,"requests":[…]}`, and the
 * answer is read as it streams in, one JSON object per line, `{"id": …,
 * "data": D}` or `{"id": …, "error": {…}}`, in any order: each request ends
 * when its own line arrives. So the node pays one write and one read system
 * call per batch instead of per request (docs/BACKEND.md "Cost"), and an
 * upstream that answers each line as soon as it is ready keeps "a slow answer
 * is unavailable for that request only".
 *
 * Each request keeps its own deadline (a sweep every 50 ms, as the client's);
 * a request whose line never comes, or whose line is malformed, fails alone;
 * a line that is not JSON with a known id is dropped (the request it was
 * meant for then ends as `bad_body` with the batch, or as `timeout`).
 */
import { randomBytes } from "node:crypto";
import { type AppClient, CallError, CallFailure, parseAnswer } from "./http.js";

/** Requests in one batch, at most; more go in the next one (docs/BACKEND.md "Batches"). */
export const MAX_BATCH_REQUESTS = 64;
/** How often requests past their deadline are looked for. */
const SWEEP_MS = 50;
/** Room on an answer line for its `"id"` beside the answer (ids are at most 128 characters). */
const ID_ROOM = 256;
const NL = 0x0a;

/** One request waiting for its line. */
interface Waiting {
  readonly id: string;
  /** The batch it went out in: a line of another batch's answer is not its (docs/BACKEND.md "Batches"). */
  batch?: string;
  readonly body: string;
  readonly deadline: number;
  readonly resolve: (answer: Record<string, unknown>) => void;
  readonly reject: (e: CallError) => void;
}

/** One route's batches. */
export class Batcher {
  readonly #client: AppClient;
  readonly #maxBytes: number;
  /** `bat_` + random per node + a counter: unique per batch message (its `webhook-id`). */
  readonly #idPrefix = `bat_${randomBytes(12).toString("base64url")}.`;
  #seq = 0;
  /** Requests not sent yet (the current turn's). */
  #next: Waiting[] = [];
  #flushing = false;
  /** Requests sent and not answered, by id. */
  readonly #sent = new Map<string, Waiting>();
  #sweeper: ReturnType<typeof setInterval> | undefined;
  /** Batches sent, and the requests they carried, since start (`/metrics`). */
  batches = 0;
  batchedRequests = 0;

  /** `maxBytes`: the largest answer of one request (its line, less the id). */
  constructor(client: AppClient, maxBytes: number) {
    this.#client = client;
    this.#maxBytes = maxBytes;
  }

  /**
   * Sends one request's body (requestBody's JSON) with the next batch.
   * @returns its answer line, parsed, without its `id`.
   * @throws CallError (never another error).
   */
  send(id: string, body: string, deadline: number): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const w: Waiting = { id, body, deadline, resolve, reject };
      if (this.#next.length >= MAX_BATCH_REQUESTS) this.#flush();
      this.#next.push(w);
      if (!this.#flushing) {
        this.#flushing = true;
        setImmediate(() => {
          this.#flushing = false;
          this.#flush();
        });
      }
    });
  }

  #flush(): void {
    const batch = this.#next;
    if (batch.length === 0) return;
    this.#next = [];
    const now = Date.now();
    const id = this.#idPrefix + (this.#seq++).toString(36);
    let latest = now + 1;
    const bodies: string[] = [];
    const ids: string[] = [];
    for (const w of batch) {
      if (w.deadline <= now) {
        w.reject(new CallError(CallFailure.timeout, "no answer within the timeout"));
        continue;
      }
      if (this.#sent.has(w.id)) {
        // Request ids are unique per request (docs/BACKEND.md "Request body"); a second one could not be told apart.
        w.reject(new CallError(CallFailure.refused, "a request with this id is already in flight"));
        continue;
      }
      w.batch = id;
      this.#sent.set(w.id, w);
      ids.push(w.id);
      bodies.push(w.body);
      if (w.deadline > latest) latest = w.deadline;
    }
    if (bodies.length === 0) return;
    this.batches++;
    this.batchedRequests += bodies.length;
    this.#sweep();
    // The pieces of a line not ended yet, joined once its newline comes: a line that trickles in
    // as many small pieces is copied once, not once per piece.
    let open: Buffer[] = [];
    const onBody = (piece: Buffer): void => {
      let b = piece;
      for (let nl = b.indexOf(NL); nl >= 0; nl = b.indexOf(NL)) {
        const end = b.subarray(0, nl);
        this.#line(id, open.length === 0 ? end : Buffer.concat([...open, end]));
        open = [];
        b = b.subarray(nl + 1);
      }
      if (b.length > 0) open.push(b);
    };
    this.#client
      .post({
        id,
        body: `{"kind":"batch","type":"batch","id":"${id}","requests":[${bodies.join(",")}]}`,
        timeoutMs: latest - now,
        maxBytes: bodies.length * (this.#maxBytes + ID_ROOM),
        onBody,
      })
      .then(
        () => {
          if (open.length > 0) this.#line(id, Buffer.concat(open));
          this.#end(ids, () => new CallError(CallFailure.badBody, "the batch answer has no line for this request"));
        },
        (e: CallError) => this.#end(ids, () => e),
      );
  }

  /** One answer line of batch `batch`: its request ends with it; a line for no request of this batch is dropped. */
  #line(batch: string, b: Buffer): void {
    if (b.length > 0 && b[b.length - 1] === 0x0d) b = b.subarray(0, b.length - 1);
    if (b.length === 0) return;
    let o: Record<string, unknown>;
    try {
      o = parseAnswer(UTF8.decode(b));
    } catch {
      return; // not UTF-8 or not a JSON object: whose it was is unknown
    }
    const id = o.id;
    const w = typeof id === "string" ? this.#sent.get(id) : undefined;
    // A request of another batch (even one in flight on this route) is not this answer's to end.
    if (w === undefined || w.batch !== batch) return;
    this.#sent.delete(w.id);
    if (b.length > this.#maxBytes + ID_ROOM) return w.reject(new CallError(CallFailure.tooLarge, `the answer is larger than ${this.#maxBytes} bytes`));
    delete o.id;
    w.resolve(o);
  }

  /** The batch's answer ended (or failed): its requests still waiting fail with `error()` (made only then: an Error's stack costs). */
  #end(ids: readonly string[], error: () => CallError): void {
    let e: CallError | undefined;
    for (const id of ids) {
      const w = this.#sent.get(id);
      if (w === undefined) continue;
      this.#sent.delete(id);
      w.reject((e ??= error()));
    }
  }

  #sweep(): void {
    if (this.#sweeper) return;
    this.#sweeper = setInterval(() => {
      const now = Date.now();
      for (const w of this.#sent.values()) {
        if (w.deadline > now) continue;
        this.#sent.delete(w.id);
        w.reject(new CallError(CallFailure.timeout, "no answer within the timeout"));
      }
      if (this.#sent.size === 0) {
        clearInterval(this.#sweeper);
        this.#sweeper = undefined;
      }
    }, SWEEP_MS);
    this.#sweeper.unref();
  }

  /** Requests not answered yet fail as `refused` (the client is closing). */
  close(): void {
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
    const e = new CallError(CallFailure.refused, "the client is closed");
    for (const w of [...this.#next, ...this.#sent.values()]) w.reject(e);
    this.#next = [];
    this.#sent.clear();
  }
}

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
