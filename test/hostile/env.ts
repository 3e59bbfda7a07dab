/**
 * The harness of the hostile-frame matrix (test/hostile/matrix.ts): a real
 * broker process per kind, three well-behaved peers that every row must leave
 * alone, and the "nothing changed" check run after every row.
 *
 * Peers, each on its own source address so per-address limits never mix:
 *   - victim    (127.0.0.2): holds a channel; its `whoami` must be the same
 *                before and after the row and its socket must stay open;
 *   - bystander (127.0.0.3): its `echo` must keep working;
 *   - operator  (127.0.0.3): registered with `--role operator`; its
 *                `admin.channels` gives the node's bound channels and stats.
 * Attacks come from 127.0.0.1 or, on brokers with tight per-address limits,
 * from a fresh 127.0.1.N per row.
 *
 * After a row: its sockets are cut, the victim and the bystander are checked,
 * the bound-channel list must be back to the three peers' channels, and the
 * store-changing stats (`handshakes.established`, `resumes.ok`,
 * `handshakes.forbidden`) must have moved by exactly what the row declares
 * for its own legitimate handshakes (by default: nothing).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { type SigningKey, generateSigningKey } from "../../shared/crypto.js";
import { loadKey } from "../../client/node.js";
import { ROOT, type RunningBroker, operatorKeys, startBroker, tempDir } from "../helpers/broker.js";
import { type Frame, Raw, type RawChannel, call, handshake } from "../helpers/raw.js";
import { HOSTILE_APP_SECRET, hostileApp } from "./hostile-app.js";

/** The broker configurations rows run against. */
export const BrokerKind = {
  /** Default limits, hellos per address raised so rows never hit them. */
  main: "main",
  /** Channel ttl 2 s: expiry rows. */
  short: "short",
  /** Tight limits: 4 connections and 5 hellos per address, 1.5 s handshake timeout. */
  tight: "tight",
  /** A broker with a `sleep` op (test/hostile/slow-broker.ts): in-flight limit rows. */
  slow: "slow",
  /** Channel ttl of 26 days (over setTimeout's 2^31 − 1 ms): a pending row. */
  long: "long",
  /** Forwards unknown ops to, and asks, the hostile application of test/hostile/hostile-app.ts (docs/BACKEND.md). */
  app: "app",
} as const;
export type BrokerKind = (typeof BrokerKind)[keyof typeof BrokerKind];

/** Command-line flags of each kind (`slow` takes the same flags through its own entry point). */
const FLAGS: Record<BrokerKind, string[]> = {
  main: ["--hellos-per-address", "100000"],
  short: ["--hellos-per-address", "100000", "--channel-ttl", "2", "--expiring-before", "0"],
  tight: ["--max-connections-per-address", "4", "--hellos-per-address", "5", "--resumes-per-address", "5", "--handshake-timeout", "1500", "--failed-frames-per-address", "200"],
  slow: [],
  long: ["--hellos-per-address", "100000", "--channel-ttl", String(26 * 86400)],
  app: ["--hellos-per-address", "100000", "--upstream-timeout", "1000", "--authorize-timeout", "1000"],
};

/** Tight-broker limits, for rows that count up to them. */
export const TIGHT = { connectionsPerAddress: 4, hellosPerAddress: 5, resumesPerAddress: 5, handshakeTimeoutMs: 1500, failedFramesPerAddress: 200 } as const;

/** What a row observed on the attacker's side. `null` means "did not happen". */
export interface Outcome {
  /** Type of the first frame the attacker got (`error`, `challenge`, ...), or null for none. */
  reply: string | null;
  /** `error.code` of the first error frame the attacker got, or null. */
  error: string | null;
  /** Close code of the attacker's socket, or null when it stayed open. */
  close: number | null;
  /** HTTP status of a refused WebSocket upgrade. */
  http?: number;
}

/** What a row expects; fields left out are not checked. */
export type Expect = Partial<Outcome>;

/** Store-visible changes a row makes through its own legitimate handshakes and resumes. */
export interface Changes {
  established?: number;
  resumed?: number;
  forbidden?: number;
}

/** One row of the matrix. */
export interface Row {
  /** Reads as behaviour, e.g. "a hello whose nonce has 15 bytes gets bad_request and close 4000". */
  name: string;
  /** The frame or sequence sent, in words (the table of SECURITY.md quotes these). */
  sent: string;
  broker: BrokerKind;
  expect: Expect;
  changes?: Changes;
  run(x: Ctx): Promise<Outcome>;
}

/** A peer that holds a channel. */
export interface Peer {
  key: SigningKey;
  raw: Raw;
  ch: RawChannel;
}

export interface Stats {
  handshakes: { started: number; established: number; rejected: number; forbidden: number; rateLimited: number };
  resumes: { ok: number; rejected: number };
  requests: { ok: number; failed: number; unauthorised: number; tooMany: number };
}
export interface Snapshot {
  /** Channels bound to sockets on this node. */
  bound: { identity: string; channel: string; connection: string }[];
  /** Every live channel in the store, when `admin.channels` lists them (`channels` beside `connected`). */
  store: { identity: string; channel: string; valid_until: string }[] | undefined;
  stats: Stats;
}

/** What a row gets to work with. */
export interface Ctx {
  readonly url: string;
  readonly port: number;
  readonly broker: RunningNode;
  readonly victim: Peer;
  readonly expect: Expect;
  /** A source address of its own for this row (127.0.1.N). */
  readonly address: string;
  /** Opens a socket (cut after the row). Defaults to the row's address on the tight broker, else 127.0.0.1. */
  open(options?: { localAddress?: string }): Promise<Raw>;
  /** Opens a socket and completes a handshake with a fresh (or the given) identity. */
  peer(key?: SigningKey, options?: { localAddress?: string }): Promise<Peer>;
  /** A request by the operator: `admin.revoke`, `admin.push`, `admin.channels`. */
  operator(op: string, data?: unknown): Promise<Frame>;
  /** Reads the outcome on `raw`: first frame, then whether (and how) it closes. */
  outcome(raw: Raw, options?: { closeWithinMs?: number }): Promise<Outcome>;
  /** Tracks a socket opened some other way, so it is cut after the row. */
  track(close: () => void): void;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Rate limits count in fixed windows aligned to the clock (server/limits.ts,
 * the store's `hit`). A row that counts up to a limit first waits, if needed,
 * so that at least `needMs` remain in the current window.
 */
export async function alignWindow(windowMs: number, needMs: number): Promise<void> {
  const left = windowMs - (Date.now() % windowMs);
  if (left < needMs) await sleep(left + 50);
}

/** Resolves with `p`, or rejects after `ms` naming `what`. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** A broker process, started by the CLI or by test/hostile/slow-broker.ts. */
export type RunningNode = Pick<RunningBroker, "url" | "port" | "fingerprint" | "proc" | "output" | "stop">;

/** Starts `node dist/test/hostile/slow-broker.js DATADIR KEYS`, a broker with a `sleep` op. */
async function startSlowBroker(keys: string): Promise<RunningNode> {
  const dataDir = tempDir();
  const script = join(ROOT, "dist", "test", "hostile", "slow-broker.js");
  const proc: ChildProcess = spawn(process.execPath, [script, dataDir, keys], { stdio: ["ignore", "pipe", "pipe"] });
  process.on("exit", () => proc.kill("SIGKILL"));
  let out = "";
  proc.stdout!.setEncoding("utf8").on("data", (d: string) => (out += d));
  proc.stderr!.setEncoding("utf8").on("data", (d: string) => (out += d));
  const exited = new Promise<number | null>((r) => proc.once("exit", (code) => r(code)));
  const m = await new Promise<RegExpMatchArray>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`slow broker did not start:\n${out}`)), 15_000);
    proc.stdout!.on("data", () => {
      const x = out.match(/listening on ws:\/\/[^:]+:(\d+)\/ fingerprint (SHA256:\S+)/);
      if (x) clearTimeout(t), resolve(x);
    });
    void exited.then((c) => (clearTimeout(t), reject(new Error(`slow broker exited with ${c}:\n${out}`))));
  });
  const port = Number(m[1]);
  return {
    url: `ws://127.0.0.1:${port}/`,
    port,
    fingerprint: m[2]!,
    proc,
    output: () => out,
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}

// Each broker and temporary directory adds an `exit` listener (test/helpers/broker.ts); a file runs several.
process.setMaxListeners(Math.max(process.getMaxListeners(), 50));

const VICTIM_ADDRESS = "127.0.0.2";
const BYSTANDER_ADDRESS = "127.0.0.3";

/** One broker with its peers. */
export class Env {
  readonly kind: BrokerKind;
  broker!: RunningNode;
  victim!: Peer;
  bystander!: Peer;
  operatorPeer!: Peer;
  #operatorKey!: SigningKey;
  #victimWho!: Frame;
  #rowCount = 0;
  /** Channels of this kind expire within a row: the peers renew, and the checks allow expiry on schedule. */
  readonly #expires: boolean;
  /** Handshakes the harness itself made between two snapshots (renewals of its peers). */
  #ownHandshakes = 0;

  constructor(kind: BrokerKind) {
    this.kind = kind;
    this.#expires = kind === "short";
  }

  async start(): Promise<void> {
    const { keyFile: opFile, keysFile: keys } = await operatorKeys();
    this.#operatorKey = await loadKey(opFile);
    // Warnings are part of what rows observe (the slow-consumer row reads the cut from the log).
    const app = this.kind === "app" ? await hostileApp() : undefined;
    const appFlags = app ? ["--upstream", app.url("/rpc"), "--authorize", app.url("/authorize")] : [];
    this.broker =
      this.kind === "slow"
        ? await startSlowBroker(keys)
        : await startBroker(["--keys", keys, ...FLAGS[this.kind], ...appFlags], { env: { PSIMBOLS_LOG_LEVEL: "warn", PSIMBOLS_UPSTREAM_SECRET: HOSTILE_APP_SECRET } });
    await this.#peers();
  }

  async #peers(): Promise<void> {
    const mk = async (key: SigningKey, localAddress: string): Promise<Peer> => {
      const raw = await Raw.open(this.broker.url, { localAddress });
      return { key, raw, ch: await handshake(raw, key) };
    };
    this.victim = await mk(await generateSigningKey(), VICTIM_ADDRESS);
    this.bystander = await mk(await generateSigningKey(), BYSTANDER_ADDRESS);
    this.operatorPeer = await mk(this.#operatorKey, BYSTANDER_ADDRESS);
    this.#victimWho = await call(this.victim.raw, this.victim.ch, "whoami");
    assert.ok(this.#victimWho.data?.channel, "victim whoami");
  }

  async stop(): Promise<void> {
    for (const p of [this.victim, this.bystander, this.operatorPeer]) p?.raw.close();
    await this.broker?.stop();
  }

  async snapshot(): Promise<Snapshot> {
    const r = await this.#callPeer(this.operatorPeer, "admin.channels");
    if (!r.data) throw new Error(`admin.channels failed: ${JSON.stringify(r)}`);
    // Two shapes: {channels: bound sockets}, or {connected: bound sockets, channels: the store's live channels}.
    const d = r.data as { connected?: Snapshot["bound"]; channels: unknown[]; stats: Stats };
    return d.connected
      ? { bound: d.connected, store: d.channels as NonNullable<Snapshot["store"]>, stats: d.stats }
      : { bound: d.channels as Snapshot["bound"], store: undefined, stats: d.stats };
  }

  /** Renews a peer's channel by a new handshake on its socket (counted as the harness's own). */
  async #renew(p: Peer): Promise<void> {
    p.ch = await handshake(p.raw, p.key);
    this.#ownHandshakes++;
  }

  /**
   * A request by one of the harness's peers. Where channels expire within a
   * row, a channel that answers `unauthorised` after its `valid_until` has
   * expired on schedule (nothing the row did): the peer renews and asks again.
   */
  async #callPeer(p: Peer, op: string, data?: unknown): Promise<Frame> {
    const r = await call(p.raw, p.ch, op, data);
    if (this.#expires && r.error?.code === "unauthorised" && Date.now() >= Date.parse(p.ch.grant.valid_until) - 20) {
      await this.#renew(p);
      return { ...(await call(p.raw, p.ch, op, data)), expiredOnSchedule: true };
    }
    return r;
  }

  /** Runs one row with the before/after checks. */
  async runRow(row: Row): Promise<void> {
    const n = ++this.#rowCount;
    const address = `127.0.1.${n % 250 + 1}`;
    const closers: (() => void)[] = [];
    const defaultAddress = this.kind === "tight" ? address : "127.0.0.1";
    if (this.#expires) {
      // Fresh channels for the peers, so they outlive the row's own wait for expiry as far as possible.
      for (const p of [this.operatorPeer, this.victim, this.bystander]) await this.#renew(p);
      this.#victimWho = await call(this.victim.raw, this.victim.ch, "whoami");
    }
    const before = await this.snapshot();
    this.#ownHandshakes = 0;
    const ctx: Ctx = {
      url: this.broker.url,
      port: this.broker.port,
      broker: this.broker,
      victim: this.victim,
      expect: row.expect,
      address,
      open: async (o = {}) => {
        const raw = await Raw.open(this.broker.url, { localAddress: o.localAddress ?? defaultAddress });
        closers.push(() => raw.close());
        return raw;
      },
      peer: async (key, o = {}) => {
        const raw = await ctx.open(o);
        const k = key ?? (await generateSigningKey());
        return { key: k, raw, ch: await handshake(raw, k) };
      },
      operator: (op, data) => call(this.operatorPeer.raw, this.operatorPeer.ch, op, data),
      outcome: (raw, o = {}) => outcome(raw, o.closeWithinMs ?? (row.expect.close === null ? 150 : 4000)),
      track: (c) => closers.push(c),
    };
    let got: Outcome;
    try {
      got = await within(row.run(ctx), 20_000, row.name);
    } finally {
      for (const c of closers) c();
    }
    for (const k of Object.keys(row.expect) as (keyof Outcome)[]) {
      assert.equal(got[k], row.expect[k], `${k}: got ${JSON.stringify(got)}`);
    }
    await this.checkNothingChanged(before, row.changes ?? {});
  }

  /** The broker lives, the victim's channel and socket are the same, the bystander is served, the store moved only as declared. */
  async checkNothingChanged(before: Snapshot, changes: Changes): Promise<void> {
    assert.is(this.broker.proc.exitCode, null, `the broker process died:\n${this.broker.output().slice(-2000)}`);
    assert.is(this.broker.proc.signalCode, null, "the broker process was killed");
    const victimChannel = this.victim.ch.grant.channel;
    const who = await this.#callPeer(this.victim, "whoami");
    if (who.expiredOnSchedule) {
      // It expired on schedule and was renewed: the same identity, and it was still the same channel until then.
      assert.is(who.data?.identity, this.#victimWho.data.identity, "the victim's identity changed");
      assert.is(victimChannel, this.#victimWho.data.channel, "the victim's channel changed");
      this.#victimWho = await call(this.victim.raw, this.victim.ch, "whoami");
    } else {
      assert.equal(who, this.#victimWho, "the victim's channel changed");
    }
    const echo = await this.#callPeer(this.bystander, "echo", "still served");
    assert.equal(echo.data, "still served", "the bystander was not served");
    // The row's sockets were cut: their connections leave the broker's list shortly.
    // Where channels expire within a row the peers renew: their channel ids change, their sockets do not.
    const key = (s: Snapshot) => s.bound.map((c) => `${c.identity} ${this.#expires ? "" : c.channel} ${c.connection}`).sort();
    let after = await this.snapshot();
    for (let i = 0; i < 40 && JSON.stringify(key(after)) !== JSON.stringify(key(before)); i++) {
      await sleep(50);
      after = await this.snapshot();
    }
    assert.equal(key(after), key(before), "bound channels differ from before the row");
    const d = (f: (s: Stats) => number) => f(after.stats) - f(before.stats);
    assert.is(d((s) => s.handshakes.established) - this.#ownHandshakes, changes.established ?? 0, "handshakes established during the row");
    assert.is(d((s) => s.resumes.ok), changes.resumed ?? 0, "resumes during the row");
    assert.is(d((s) => s.handshakes.forbidden), changes.forbidden ?? 0, "forbidden handshakes during the row");
    if (before.store && after.store) {
      // The store: every channel live before is live after (a row retires only channels it made itself),
      // unless it expired on schedule; and no more channels appeared than handshakes were counted.
      const now = Date.now();
      const afterIds = new Set(after.store.map((c) => c.channel));
      const lost = before.store.filter((c) => !afterIds.has(c.channel) && Date.parse(c.valid_until) > now + 50);
      assert.equal(lost, [], "channels disappeared from the store");
      const beforeIds = new Set(before.store.map((c) => c.channel));
      const added = after.store.filter((c) => !beforeIds.has(c.channel)).length;
      assert.ok(added <= d((s) => s.handshakes.established), `${added} channels appeared in the store`);
    }
  }

  /** After a failed row: make sure the peers exist again, so one failure does not cascade. */
  async repair(): Promise<void> {
    if (this.broker.proc.exitCode !== null || this.broker.proc.signalCode !== null) return;
    for (const p of [this.victim, this.bystander, this.operatorPeer]) p.raw.close();
    await sleep(100);
    await this.#peers();
  }
}

/** First frame (if any within the wait) and the close code (if it closes within `closeWithinMs`). */
export async function outcome(raw: Raw, closeWithinMs: number): Promise<Outcome> {
  const f = await raw.next(Math.max(closeWithinMs, 1000)).catch(() => undefined);
  const closed = await Promise.race([raw.closed, sleep(closeWithinMs).then(() => undefined)]);
  return { reply: f ? String(f.type) : null, error: f?.type === "error" ? String(f.error?.code) : null, close: closed?.code ?? null };
}

/** Registers one uvu test per row of `kind` and runs the suite. */
export function runMatrix(title: string, kinds: readonly BrokerKind[], rows: readonly Row[]): void {
  for (const kind of kinds) {
    const mine = rows.filter((r) => r.broker === kind);
    if (mine.length === 0) continue;
    const t = suite(`${title} (${kind} broker)`);
    const env = new Env(kind);
    t.before(() => env.start());
    t.after(() => env.stop());
    for (const row of mine) {
      t(row.name, async () => {
        try {
          await env.runRow(row);
        } catch (e) {
          await env.repair().catch(() => {});
          throw e;
        }
      });
    }
    t.run();
  }
}
