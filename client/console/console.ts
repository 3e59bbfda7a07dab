/**
 * The web console (docs/OPERATIONS.md, Web console), served by the broker at /console/. Plain DOM,
 * no framework. The page is a psimbols client: the operator's browser proves
 * its own key (generated here and kept non-extractable in IndexedDB, or an
 * imported PKCS#8 key) and calls the `admin.*` ops, which the broker grants
 * to keys registered with the operator role only (server/operator.ts).
 *
 * The Overview shows `admin.channels` (every live channel of the service,
 * the sockets of the node answering, its stats), polled once a second; the
 * Keys view lists `admin.keys` when opened and after each change it makes
 * (`admin.keys.add|block|unblock|remove`). Every value reaches the DOM
 * through textContent, never as HTML.
 */
import {
  type Client,
  ErrorCode,
  LocalStorageKnownServers,
  PsimbolsError,
  type StoredKey,
  connect,
  deleteStoredKey,
  detectAlgorithms,
  generateStoredKey,
  importStoredKey,
  loadStoredKey,
  publicKeyPem,
  sameOriginUrl,
} from "../browser.js";
import type { NodeStats } from "../../shared/frames.js";
import { commentProblem, escapeComment } from "../../shared/comment.js";

/** IndexedDB name of the console's key, apart from any key an app on the same origin keeps. */
const KEY_NAME = "console";
const POLL_MS = 1000;
const TICK_MS = 500;
const ADMIN_TIMEOUT_MS = 5000;
/** A two-step button stays armed this long. */
const ARM_MS = 4000;
const MAX_LOG = 500;
/** Expiry countdowns under this many seconds are highlighted. */
const SOON_S = 60;

// ------------------------------------------------------------------ admin.channels, decoded

type Stats = NodeStats;

/** A socket this node holds for a channel. */
interface Socket {
  connection: string;
  address: string;
}

/** A live channel of the service, with the sockets this node holds for it. */
interface ChannelRow {
  identity: string;
  channel: string;
  /** ms since the epoch, server clock. */
  validUntil: number;
  /** The node that issued it. */
  node: string;
  /** Where its socket is, as `psimbols channels list` says it: held by N, not connected (last on N), node gone (last on N). */
  where: string;
  /** Sockets bound to it on the node the console talks to (none: elsewhere, or away). */
  sockets: Socket[];
  /** The comment its identity was registered with (`keys add --comment`), if any. */
  comment?: string;
}

interface NodeView {
  node: string;
  stats: Stats;
  /** Open sockets, when the broker reports them; otherwise bound channels. */
  connections: number | undefined;
  channels: number;
  /** When the node last reported (ms since the epoch, its clock); undefined for the node answering. */
  at: number | undefined;
}

interface AdminChannels {
  node: string;
  nodes: NodeView[];
  channels: ChannelRow[];
  /** Sockets bound on the node answering. */
  connected: number;
}

class Malformed extends Error {}

function num(o: Record<string, unknown>, k: string): number {
  const v = o[k];
  return typeof v === "number" && Number.isFinite(v) ? v : 0;
}
function str(o: Record<string, unknown>, k: string): string {
  const v = o[k];
  if (typeof v !== "string") throw new Malformed(`"${k}" expected string`);
  return v;
}
function rec(x: unknown, what: string): Record<string, unknown> {
  if (typeof x !== "object" || x === null || Array.isArray(x)) throw new Malformed(`"${what}" expected object`);
  return x as Record<string, unknown>;
}

function decodeStats(x: unknown): Stats {
  const s = rec(x ?? {}, "stats");
  const h = rec(s.handshakes ?? {}, "stats.handshakes");
  const r = rec(s.resumes ?? {}, "stats.resumes");
  const q = rec(s.requests ?? {}, "stats.requests");
  return {
    handshakes: { started: num(h, "started"), established: num(h, "established"), rejected: num(h, "rejected"), forbidden: num(h, "forbidden"), rateLimited: num(h, "rateLimited") },
    resumes: { ok: num(r, "ok"), rejected: num(r, "rejected") },
    requests: { ok: num(q, "ok"), failed: num(q, "failed"), unauthorised: num(q, "unauthorised"), tooMany: num(q, "tooMany") },
    notices: num(s, "notices"),
    pushes: num(s, "pushes"),
    storeErrors: num(s, "storeErrors"),
  };
}

function time(o: Record<string, unknown>): number {
  if (typeof o.validUntil === "number") return o.validUntil;
  const t = typeof o.valid_until === "string" ? Date.parse(o.valid_until) : NaN;
  if (Number.isNaN(t)) throw new Malformed(`"valid_until" expected an RFC 3339 time`);
  return t;
}

/**
 * `admin.channels` answers `{node, stats, connected, channels}`: `connected`
 * lists the sockets bound on the node answering (`{identity, channel,
 * validUntil, node, connection, address}`), `channels` every live channel of
 * the service (`{channel, identity, node, valid_until}`, and `comment` when
 * the identity is registered with one). Older brokers sent
 * only `channels`, in the shape of `connected`. A cluster-wide answer may add
 * `nodes: [{node, stats, connections, channels, at}]`.
 */
function decodeAdminChannels(x: unknown): AdminChannels {
  const o = rec(x, "data");
  const node = str(o, "node");
  if (!Array.isArray(o.channels)) throw new Malformed(`"channels" expected array`);
  const connected = Array.isArray(o.connected) ? o.connected : o.channels.filter((c) => typeof rec(c, "channels[]").connection === "string");
  const byId = new Map<string, ChannelRow>();
  const add = (c: Record<string, unknown>): ChannelRow => {
    const id = str(c, "channel");
    let row = byId.get(id);
    if (!row) byId.set(id, (row = { identity: str(c, "identity"), channel: id, validUntil: time(c), node: str(c, "node"), where: whereOf(c), sockets: [] }));
    if (typeof c.comment === "string" && c.comment !== "") row.comment = c.comment;
    return row;
  };
  for (const c of o.channels) add(rec(c, "channels[]"));
  for (const x of connected) {
    const c = rec(x, "connected[]");
    add(c).sockets.push({ connection: str(c, "connection"), address: str(c, "address") });
  }
  const channels = [...byId.values()];
  let nodes: NodeView[];
  if (Array.isArray(o.nodes)) {
    nodes = o.nodes.map((n) => {
      const v = rec(n, "nodes[]");
      return {
        node: str(v, "node"),
        stats: decodeStats(v.stats),
        connections: typeof v.connections === "number" ? v.connections : undefined,
        channels: num(v, "channels"),
        at: typeof v.at === "number" ? v.at : undefined,
      };
    });
  } else {
    nodes = [
      {
        node,
        stats: decodeStats(o.stats),
        connections: typeof o.connections === "number" ? o.connections : undefined,
        channels: channels.filter((c) => c.node === node).length,
        at: undefined,
      },
    ];
  }
  return { node, nodes, channels, connected: connected.length };
}

/** A channel row's holder (`holder`, `state`; docs/CLI.md, channels list) in words; the issuing node for a broker that sends none. */
function whereOf(c: Record<string, unknown>): string {
  const h = c.holder;
  if (typeof h !== "string") return `issued on ${str(c, "node")}`;
  if (c.state === "held") return `held by ${h}`;
  if (c.state === "not_connected") return `not connected (last on ${h})`;
  if (c.state === "node_gone") return `node gone (last on ${h})`;
  return `issued on ${str(c, "node")}`;
}

function errorsOf(s: Stats): number {
  const h = s.handshakes;
  return h.rejected + h.forbidden + h.rateLimited + s.resumes.rejected + s.requests.failed + s.requests.unauthorised + s.requests.tooMany + s.storeErrors;
}

function errorBreakdown(s: Stats): string {
  const h = s.handshakes;
  return [
    `handshakes rejected ${h.rejected}, forbidden ${h.forbidden}, rate-limited ${h.rateLimited}`,
    `resumes rejected ${s.resumes.rejected}`,
    `requests failed ${s.requests.failed}, unauthorised ${s.requests.unauthorised}, too many ${s.requests.tooMany}`,
    `store errors ${s.storeErrors}`,
  ].join("\n");
}

// ------------------------------------------------------------------ DOM helpers

function $<T extends HTMLElement = HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error(`the console page lacks #${id}`);
  return e as T;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, props: { className?: string; text?: string; title?: string } = {}, ...kids: Node[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (props.className) e.className = props.className;
  if (props.text !== undefined) e.textContent = props.text;
  if (props.title !== undefined) e.title = props.title;
  for (const k of kids) e.append(k);
  return e;
}

/**
 * A registered key's comment for a table cell: isolated from the text around it
 * (`<bdi>`), any control character escaped (an entry written before comments
 * were checked), cut by CSS when long, the whole in its title.
 */
function commentEl(comment: string): HTMLElement {
  const text = escapeComment(comment);
  return el("bdi", { className: "comment", text, title: text });
}

/** Shows a banner; `parts` are text, or `{code}` for a command to copy. */
function banner(kind: "error" | "warn" | "info", ...parts: (string | { code: string } | HTMLElement)[]): void {
  const b = $("banner");
  b.replaceChildren(...parts.map((p) => (typeof p === "string" ? document.createTextNode(p) : p instanceof HTMLElement ? p : el("code", { text: p.code }))));
  b.dataset.kind = kind;
  b.hidden = false;
}
function clearBanner(): void {
  $("banner").hidden = true;
}

/**
 * A button that acts on the second click within {@link ARM_MS}, so a slip of
 * the mouse cannot revoke anything.
 */
function armedButton(label: string, confirm: string, action: () => Promise<void>): HTMLButtonElement {
  const b = el("button", { className: "small danger", text: label });
  b.type = "button";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const disarm = () => {
    clearTimeout(timer);
    timer = undefined;
    b.classList.remove("armed");
    b.textContent = label;
  };
  b.addEventListener("click", () => {
    if (!b.classList.contains("armed")) {
      b.classList.add("armed");
      b.textContent = confirm;
      timer = setTimeout(disarm, ARM_MS);
      return;
    }
    disarm();
    b.disabled = true;
    void action().finally(() => (b.disabled = false));
  });
  return b;
}

function short(id: string, n = 12): string {
  return id.length > n + 1 ? id.slice(0, n) + "…" : id;
}

function duration(seconds: number): string {
  if (seconds <= 0) return "expired";
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  if (m > 0) return `${m}m ${String(r).padStart(2, "0")}s`;
  return `${r}s`;
}

function ago(seconds: number): string {
  return seconds < 1 ? "now" : `${duration(seconds)} ago`;
}

function describeError(e: unknown): string {
  if (e instanceof PsimbolsError) return `${e.message} (${e.code})`;
  return e instanceof Error ? e.message : String(e);
}

// ------------------------------------------------------------------ log

function log(level: "info" | "ok" | "warn" | "error", kind: string, message: string): void {
  const list = $("log");
  const t = new Date().toTimeString().slice(0, 8);
  const li = el("li", {}, el("span", { className: "t", text: t }), el("span", { className: "k", text: kind }), el("span", { className: "m", text: message }));
  li.dataset.level = level;
  li.dataset.kind = kind;
  list.prepend(li);
  while (list.childElementCount > MAX_LOG) list.lastElementChild?.remove();
}

// ------------------------------------------------------------------ state

let key: StoredKey | undefined;
let client: Client | undefined;
let pollTimer: ReturnType<typeof setTimeout> | undefined;
let polling = false;
let generation = 0;
/** serverNow ≈ Date.now() + skew, measured with `ping` at connect. */
let skewMs = 0;
let prevSample: { t: number; established: number } | undefined;
/** Table rows by channel id. */
const rows = new Map<string, { tr: HTMLTableRowElement; row: ChannelRow; expiry: HTMLTableCellElement; address: HTMLTableCellElement }>();

function setStatus(text: string, state: string): void {
  const s = $("status");
  s.textContent = text;
  s.dataset.state = state;
}

// ------------------------------------------------------------------ key panel

function showKey(): void {
  $("key-fp").textContent = key ? key.public.fingerprint : "none";
  $("key-type").textContent = key ? key.public.type : "–";
  $("key-origin").textContent = key
    ? `${key.origin === "imported" ? "imported" : "generated here"}, ${key.created.slice(0, 19).replace("T", " ")} UTC; non-extractable, in this browser's IndexedDB`
    : "–";
  const has = key !== undefined;
  ($("key-generate") as HTMLButtonElement).disabled = has;
  ($("key-paste") as HTMLButtonElement).disabled = has;
  $("key-file").toggleAttribute("disabled", has);
  document.querySelector("label[for=key-file]")?.classList.toggle("disabled", has);
  ($("key-download") as HTMLButtonElement).disabled = !has;
  ($("key-forget") as HTMLButtonElement).disabled = !has;
  ($("connect") as HTMLButtonElement).disabled = !has || client !== undefined;
  const hint = $("key-hint");
  hint.replaceChildren();
  if (has) {
    hint.append(
      "To make it an operator key: download the public key, then on the broker host run ",
      el("code", { text: `psimbols keys add ${pubFileName()} --role operator` }),
      " with --file set to the keys file the broker reads (its --keys; by default keys.json in its data directory), or --redis for a cluster; the broker picks up the change within a second.",
      " To use another key, forget this one first.",
    );
  } else {
    hint.append("Generate a key, or import a PKCS#8 key (for example one made with ", el("code", { text: "psimbols keygen" }), ").");
  }
}

function pubFileName(): string {
  const fp = key?.public.fingerprint ?? "";
  return `psimbols-console-${fp.slice(7, 15).replace(/[^A-Za-z0-9]/g, "_")}.pub.pem`;
}

async function withKeyAction(what: string, f: () => Promise<void>): Promise<void> {
  try {
    clearBanner();
    await f();
  } catch (e) {
    banner("error", `${what}: ${describeError(e)}`);
  }
  showKey();
}

function wireKeyPanel(): void {
  $("key-generate").addEventListener("click", () =>
    void withKeyAction("could not generate a key", async () => {
      key = await generateStoredKey({ name: KEY_NAME });
      log("ok", "key", `generated ${key.public.type} key ${key.public.fingerprint}`);
    }),
  );
  const file = $("key-file") as HTMLInputElement;
  file.addEventListener("change", () => {
    const f = file.files?.[0];
    file.value = "";
    if (!f) return;
    void withKeyAction(`could not import ${f.name}`, async () => {
      const bytes = new Uint8Array(await f.arrayBuffer());
      let input: string | Uint8Array = bytes;
      // PEM is ASCII text; DER starts with a SEQUENCE tag (0x30)
      if (bytes[0] !== 0x30) input = new TextDecoder().decode(bytes);
      try {
        key = await importStoredKey(input, { name: KEY_NAME });
      } finally {
        bytes.fill(0);
      }
      log("ok", "key", `imported ${key.public.type} key ${key.public.fingerprint}`);
    });
  });
  $("key-paste").addEventListener("click", () => {
    const ta = $("key-pem") as HTMLTextAreaElement;
    void withKeyAction("could not import the pasted key", async () => {
      key = await importStoredKey(ta.value, { name: KEY_NAME });
      ta.value = "";
      log("ok", "key", `imported ${key.public.type} key ${key.public.fingerprint}`);
    });
  });
  $("key-download").addEventListener("click", () => {
    if (!key) return;
    const url = URL.createObjectURL(new Blob([publicKeyPem(key)], { type: "application/x-pem-file" }));
    const a = el("a");
    a.href = url;
    a.download = pubFileName();
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  });
  const forget = $("key-forget") as HTMLButtonElement;
  let armed: ReturnType<typeof setTimeout> | undefined;
  forget.addEventListener("click", () => {
    if (armed === undefined) {
      forget.textContent = "Click again: the key is gone for good";
      forget.classList.add("armed");
      armed = setTimeout(() => {
        armed = undefined;
        forget.textContent = "Forget key";
        forget.classList.remove("armed");
      }, ARM_MS);
      return;
    }
    clearTimeout(armed);
    armed = undefined;
    forget.textContent = "Forget key";
    forget.classList.remove("armed");
    void withKeyAction("could not delete the key", async () => {
      await deleteStoredKey(KEY_NAME);
      log("info", "key", `forgot key ${key?.public.fingerprint ?? ""}`);
      key = undefined;
    });
  });
}

// ------------------------------------------------------------------ connect

function forbiddenBanner(lead = "forbidden: the broker does not list this key as an operator."): void {
  const imported = key?.origin === "imported";
  banner(
    "error",
    `${lead}\nKey ${key?.public.fingerprint ?? ""}.\n` +
      (imported
        ? "Take its public key (the .pub.pem beside the imported key file, or Download public key here) to the broker host and run\n"
        : "Download the public key and, on the broker host, run\n"),
    { code: `psimbols keys add ${imported ? "KEY.pub.pem" : pubFileName()} --role operator` },
    "\nwith --file set to the keys file the broker reads (its --keys; by default keys.json in its data directory, which this command also uses when given no --file), or --redis for a cluster, then connect again.",
  );
}

function mismatchBanner(e: PsimbolsError, url: string): void {
  const forgetKnown = el("button", { text: "Forget the recorded server key for this URL" });
  forgetKnown.type = "button";
  forgetKnown.addEventListener("click", () => {
    new LocalStorageKnownServers().delete(url);
    clearBanner();
    log("warn", "trust", `forgot the recorded server key of ${url}`);
  });
  banner("error", e.message, "\n\n", forgetKnown);
}

async function doConnect(): Promise<void> {
  if (!key || client) return;
  const url = ($("url") as HTMLInputElement).value.trim();
  const pin = ($("pin") as HTMLInputElement).value.trim();
  const my = ++generation;
  clearBanner();
  ($("connect") as HTMLButtonElement).disabled = true;
  setStatus("connecting", "connecting");
  let c: Client;
  try {
    c = await connect(url, { key, ...(pin ? { serverKey: pin } : {}), requestTimeoutMs: ADMIN_TIMEOUT_MS, reconnect: { maxMs: 5000 } });
  } catch (e) {
    setStatus("not connected", "failed");
    ($("connect") as HTMLButtonElement).disabled = false;
    if (e instanceof PsimbolsError && e.code === ErrorCode.forbidden) forbiddenBanner();
    else if (e instanceof PsimbolsError && e.code === ErrorCode.serverKeyMismatch) mismatchBanner(e, url);
    else banner("error", `could not connect to ${url}: ${describeError(e)}`);
    log("error", "connect", describeError(e));
    return;
  }
  if (my !== generation) return void c.close();
  client = c;
  wireClient(c, url);
  try {
    const t0 = Date.now();
    const pong = (await c.request("ping")) as { time?: unknown };
    const t1 = Date.now();
    if (typeof pong?.time === "string" && !Number.isNaN(Date.parse(pong.time))) skewMs = Date.parse(pong.time) - (t0 + t1) / 2;
    const first = decodeAdminChannels(await c.request("admin.channels"));
    if (my !== generation) return;
    $("login").hidden = true;
    $("dash").hidden = false;
    $("keys-status").hidden = true;
    showView("overview");
    $("disconnect").hidden = false;
    $("where").textContent = `${url}  ·  server ${c.channel?.serverKey ?? ""}  ·  as ${key.public.fingerprint}`;
    void showServerKeyRotation(url);
    setStatus("connected as operator", "ready");
    log("ok", "connect", `connected to ${url} (node ${first.node}); server key ${c.channel?.serverKey ?? "?"}`);
    render(first);
    schedulePoll();
  } catch (e) {
    if (e instanceof PsimbolsError && e.code === ErrorCode.forbidden) forbiddenBanner();
    else banner("error", `the broker refused the console: ${describeError(e)}`);
    log("error", "admin", describeError(e));
    await disconnect();
  }
}

/**
 * Shows a server key rollover (PROTOCOL.md §5.6) from the node's
 * `/.well-known/psimbols`: the next key and its not-before time. Best effort:
 * informational, the client's own handshake is what checks keys.
 */
async function showServerKeyRotation(url: string): Promise<void> {
  try {
    const res = await fetch(new URL(".well-known/psimbols", url.replace(/^ws/i, "http")), { cache: "no-store" });
    const wk = (await res.json()) as { next_server_key?: { fingerprint?: unknown; not_before?: unknown } };
    const n = wk.next_server_key;
    if (n && typeof n.fingerprint === "string" && typeof n.not_before === "string") {
      $("where").textContent += `  ·  next server key ${n.fingerprint} (not before ${n.not_before})`;
      log("info", "server-key", `server key rollover under way: next ${n.fingerprint}, not before ${n.not_before}`);
    }
  } catch {
    // no well-known (a proxy in front): nothing to show
  }
}

function wireClient(c: Client, url: string): void {
  c.on("serverKey", (e) => {
    if (client !== c) return;
    if (e.rotated) log("warn", "server-key", `the broker switched to its next server key ${e.current} (was ${e.previous ?? "?"})`);
    else if (e.next) log("info", "server-key", `the server key announced its successor ${e.next}, not before ${e.notBefore ?? "?"}`);
  });
  c.on("state", (next) => {
    if (client !== c) return;
    if (next === "ready") setStatus("connected as operator", "ready");
    else if (next !== "closed") setStatus(next, next);
  });
  c.on("established", (info) => {
    if (info.renewed) log("ok", "renewed", `this console's channel renewed: ${short(info.id)}, valid for ${info.ttl}s`);
  });
  c.on("resumed", (info) => log("ok", "resumed", `this console resumed channel ${short(info.id)} after a dropped socket`));
  c.on("notice", (n) => {
    const level = n.kind === "expiring" ? "info" : "warn";
    log(level, `notice`, `${n.kind}${n.current ? "" : " (old channel)"} for this console's channel ${short(n.channel)}${n.reason ? ": " + n.reason : ""}`);
  });
  c.on("push", (m) => log("info", "push", `to this console: ${safeJson(m)}`));
  c.on("error", (e) => log("warn", "client", describeError(e)));
  c.on("close", (ev) => {
    if (client !== c) return;
    log(ev.error ? "error" : "info", "closed", ev.error ? describeError(ev.error) : `closed (${ev.code} ${ev.reason})`);
    if (ev.error instanceof PsimbolsError && ev.error.code === ErrorCode.serverKeyMismatch) mismatchBanner(ev.error, url);
    else if (ev.error) banner("warn", `the console's connection closed: ${describeError(ev.error)}`);
    void disconnect();
  });
}

async function disconnect(): Promise<void> {
  generation++;
  clearTimeout(pollTimer);
  pollTimer = undefined;
  const c = client;
  client = undefined;
  prevSample = undefined;
  setStatus("not connected", "idle");
  $("login").hidden = false;
  $("disconnect").hidden = true;
  $("where").textContent = "";
  showKey();
  if (c) await c.close().catch(() => {});
}

function safeJson(x: unknown): string {
  try {
    const s = JSON.stringify(x);
    return s.length > 500 ? s.slice(0, 500) + "…" : s;
  } catch {
    return String(x);
  }
}

// ------------------------------------------------------------------ polling and rendering

function schedulePoll(): void {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(() => void poll(), POLL_MS);
}

async function poll(): Promise<void> {
  const c = client;
  if (!c || polling) return;
  polling = true;
  const my = generation;
  try {
    const data = decodeAdminChannels(await c.request("admin.channels"));
    if (my === generation) render(data);
  } catch (e) {
    if (my === generation && !lostOperator(e)) log("warn", "poll", describeError(e));
  } finally {
    polling = false;
    if (my === generation && client) schedulePoll();
  }
}

function render(d: AdminChannels): void {
  const now = Date.now();
  const total = d.nodes.reduce(
    (a, n) => ({
      connections: n.connections === undefined || a.connections === undefined ? undefined : a.connections + n.connections,
      established: a.established + n.stats.handshakes.established,
      errors: a.errors + errorsOf(n.stats),
    }),
    { connections: 0 as number | undefined, established: 0, errors: 0 },
  );
  $("s-connections").textContent = String(total.connections ?? d.connected);
  $("s-connections").title = total.connections === undefined ? "sockets bound to a channel on this node" : "open WebSocket connections";
  $("s-channels").textContent = String(new Set(d.channels.map((c) => c.channel)).size);
  if (prevSample && now > prevSample.t) {
    const rate = ((total.established - prevSample.established) * 1000) / (now - prevSample.t);
    $("s-rate").textContent = Math.max(0, rate).toFixed(1);
  }
  prevSample = { t: now, established: total.established };
  const errs = $("s-errors");
  errs.textContent = String(total.errors);
  errs.classList.toggle("nonzero", total.errors > 0);
  errs.title = d.nodes.map((n) => `${n.node}:\n${errorBreakdown(n.stats)}`).join("\n\n");

  // Nodes that issued live channels but report no stats here (other nodes on the same Redis)
  const reported = new Set(d.nodes.map((n) => n.node));
  const others = new Map<string, number>();
  for (const c of d.channels) if (!reported.has(c.node)) others.set(c.node, (others.get(c.node) ?? 0) + 1);
  const dash = () => el("td", { text: "–", title: "this node's stats are not reported to the node the console talks to" });
  const nodes = $("nodes").querySelector("tbody")!;
  nodes.replaceChildren(
    ...d.nodes.map((n) =>
      el(
        "tr",
        {},
        el("td", { className: "mono", text: n.node + (n.node === d.node ? "  (this node)" : "") }),
        el("td", { text: n.connections === undefined ? "–" : String(n.connections) }),
        el("td", { text: String(n.channels) }),
        el("td", { text: `${n.stats.handshakes.established} ok / ${n.stats.handshakes.started} started`, title: `resumes ${n.stats.resumes.ok}` }),
        el("td", { text: `${n.stats.requests.ok} ok`, title: `pushes ${n.stats.pushes}, notices ${n.stats.notices}` }),
        el("td", { text: String(errorsOf(n.stats)), title: errorBreakdown(n.stats) }),
        el("td", { text: n.at === undefined || n.node === d.node ? "now" : ago((Date.now() + skewMs - n.at) / 1000) }),
      ),
    ),
    ...[...others].map(([node, count]) =>
      el("tr", {}, el("td", { className: "mono", text: node }), dash(), el("td", { text: String(count) }), dash(), dash(), dash(), el("td", { text: "via its channels" })),
    ),
  );
  $("nodes-note").textContent =
    others.size > 0
      ? "Other nodes are known here by the channels they issued (shared through Redis); their counters show on their own consoles."
      : d.nodes.length === 1
        ? "The node the console is connected to. Nodes sharing its Redis store appear here as their channels do."
        : "";

  renderChannels(d.channels);
}

function addresses(row: ChannelRow): string {
  return row.sockets.length === 0 ? "–" : [...new Set(row.sockets.map((x) => x.address))].join(", ");
}

function renderChannels(list: ChannelRow[]): void {
  const body = $("channels").querySelector("tbody")!;
  const self = client?.channel?.id;
  const seen = new Set<string>();
  for (const row of list) {
    seen.add(row.channel);
    const have = rows.get(row.channel);
    if (have) {
      have.row = row;
      have.address.textContent = addresses(row);
      continue;
    }
    const expiry = el("td", { className: "expiry" });
    const address = el("td", { className: "mono", text: addresses(row), title: "socket on this node (–: on another node, or away)" });
    const tr = el(
      "tr",
      {},
      el("td", { className: "mono ident", text: row.identity, title: row.identity }, ...(row.comment ? [commentEl(row.comment)] : [])),
      el("td", { className: "mono", text: short(row.channel, 10), title: row.channel }),
      el("td", { className: "mono", text: row.where, title: `issued on ${row.node}` }),
      address,
      expiry,
      actionsCell(row, row.channel === self),
    );
    tr.dataset.identity = row.identity;
    tr.dataset.channel = row.channel;
    if (row.channel === self) tr.classList.add("self");
    body.append(tr);
    rows.set(row.channel, { tr, row, expiry, address });
    if (row.channel !== self) {
      const from = row.sockets.length > 0 ? ` from ${addresses(row)}` : "";
      log("info", "connected", `${row.identity} channel ${short(row.channel, 10)} ${row.where}${from}`);
    }
  }
  for (const [k, r] of rows) {
    if (seen.has(k)) continue;
    rows.delete(k);
    r.tr.remove();
    if (r.row.channel !== self) log("info", "gone", `${r.row.identity} channel ${short(r.row.channel, 10)} (${r.row.node}) is no longer live`);
  }
  $("channels-empty").hidden = rows.size > 0;
  tick();
}

function actionsCell(row: ChannelRow, isSelf: boolean): HTMLTableCellElement {
  const pushBtn = el("button", { className: "small", text: "push…", title: "fill the push form with this identity" });
  pushBtn.type = "button";
  pushBtn.addEventListener("click", () => {
    ($("push-kind") as HTMLSelectElement).value = "identity";
    ($("push-target") as HTMLInputElement).value = row.identity;
    ($("push-message") as HTMLTextAreaElement).focus();
  });
  const revokeChannel = armedButton("revoke channel", "confirm?", () => revoke({ channel: row.channel }));
  revokeChannel.dataset.action = "revoke-channel";
  const revokeIdentity = armedButton("revoke identity", "confirm?", () => revoke({ identity: row.identity }));
  revokeIdentity.dataset.action = "revoke-identity";
  if (isSelf) {
    for (const b of [revokeChannel, revokeIdentity]) {
      b.disabled = true;
      b.title = "this console's own channel";
    }
  }
  return el("td", { className: "actions" }, pushBtn, revokeChannel, revokeIdentity);
}

async function revoke(target: { channel: string } | { identity: string }): Promise<void> {
  const c = client;
  if (!c) return;
  const what = "channel" in target ? `channel ${short(target.channel, 10)}` : `identity ${target.identity}`;
  try {
    const r = rec(await c.request("admin.revoke", target), "data");
    const ids = Array.isArray(r.revoked) ? r.revoked.filter((x): x is string => typeof x === "string") : [];
    log(ids.length > 0 ? "ok" : "warn", "revoke", ids.length > 0 ? `${what}: revoked ${ids.map((i) => short(i, 10)).join(", ")}` : `${what}: nothing to revoke`);
  } catch (e) {
    log("error", "revoke", `${what}: ${describeError(e)}`);
  }
  void poll();
}

async function sendPush(): Promise<void> {
  const c = client;
  if (!c) return;
  const kind = ($("push-kind") as HTMLSelectElement).value === "channel" ? "channel" : "identity";
  const target = ($("push-target") as HTMLInputElement).value.trim();
  const text = ($("push-message") as HTMLTextAreaElement).value;
  if (!target) return log("warn", "push", `enter the ${kind === "channel" ? "channel id" : "identity fingerprint"} to push to`);
  let message: unknown;
  try {
    message = JSON.parse(text);
  } catch {
    message = text; // plain text goes as a string
  }
  try {
    const r = rec(await c.request("admin.push", { [kind]: target, message }), "data");
    if (typeof r.seq === "number") {
      // kept in the identity's push window and published to every node: a client that is away gets it on resume
      log("ok", "push", `${kind} ${short(target, 20)}: sent as push #${r.seq}`);
    } else {
      const n = typeof r.delivered === "number" ? r.delivered : 0;
      log(n > 0 ? "ok" : "warn", "push", `${kind} ${short(target, 20)}: delivered to ${n} socket${n === 1 ? "" : "s"} on this node`);
    }
  } catch (e) {
    log("error", "push", describeError(e));
  }
}

// ------------------------------------------------------------------ keys view (admin.keys*, PROTOCOL.md §6.6)

/** Pages of `admin.keys` read at most for one listing (each holds about a hundred keys). */
const MAX_KEY_PAGES = 50;
const FINGERPRINT = /^SHA256:[A-Za-z0-9+/]{43}$/;

/** A registered key, as `admin.keys` shows it (never the key bytes). */
interface KeyRow {
  fingerprint: string;
  type: string | null;
  role: string;
  comment: string;
  /** When the key was first registered. */
  added: string;
  /** When its role or comment last changed, if they did. */
  updated?: string;
}

interface KeysPage {
  node: string;
  registry: { kind: string; path?: string };
  store: string;
  /** The fingerprint this console is connected with. */
  self: string;
  total: number;
  next: number | null;
  keys: KeyRow[];
}

function decodeKeysPage(x: unknown): KeysPage {
  const o = rec(x, "data");
  const reg = rec(o.registry, "registry");
  if (!Array.isArray(o.keys)) throw new Malformed(`"keys" expected array`);
  return {
    node: str(o, "node"),
    registry: { kind: str(reg, "kind"), ...(typeof reg.path === "string" ? { path: reg.path } : {}) },
    store: str(o, "store"),
    self: str(o, "self"),
    total: num(o, "total"),
    next: typeof o.next === "number" ? o.next : null,
    keys: o.keys.map((k) => {
      const r = rec(k, "keys[]");
      return {
        fingerprint: str(r, "fingerprint"),
        type: typeof r.type === "string" ? r.type : null,
        role: str(r, "role"),
        comment: str(r, "comment"),
        added: str(r, "added"),
        ...(typeof r.updated === "string" ? { updated: r.updated } : {}),
      };
    }),
  };
}

/** What persists where, said in words (docs/OPERATIONS.md, Web console). */
function whereKeysLive(p: KeysPage): string {
  const keys =
    p.registry.kind === "file"
      ? `Keys are kept in the keys file ${p.registry.path ?? "?"} of node ${p.node}: they persist across restarts, and every node reading that file applies a change within a second (a node that reads another file does not see it).`
      : p.registry.kind === "redis"
        ? "Keys are kept in Redis and shared by every node at once; they last as long as Redis keeps its data (its persistence settings)."
        : `Node ${p.node} reads its keys from the program that started it: the console can neither list nor change them; that program keeps them (or not).`;
  const channels =
    p.store === "memory"
      ? " Channels and kept pushes live in this node's memory only: a restart ends every channel (clients make new ones), while registered keys stay where they are kept."
      : " Channels and kept pushes live in Redis.";
  return `${keys}${channels} Blocking a key also revokes its channels; removing one does not (revoke them in Overview).`;
}

/** Shows the outcome of a key operation beside the list, and logs it. */
function keysStatus(level: "ok" | "error" | "warn", message: string): void {
  const s = $("keys-status");
  s.textContent = message;
  s.dataset.level = level;
  s.hidden = false;
  log(level, "keys", message);
}

function showView(view: "overview" | "keys"): void {
  $("view-overview").hidden = view !== "overview";
  $("view-keys").hidden = view !== "keys";
  for (const tab of [$("tab-overview"), $("tab-keys")]) tab.setAttribute("aria-selected", String(tab.dataset.view === view));
  if (view === "keys") void refreshKeys();
}

let keysLoading = false;

/** Reads every page of `admin.keys` and shows the list. */
async function refreshKeys(): Promise<void> {
  const c = client;
  if (!c || keysLoading) return;
  keysLoading = true;
  const my = generation;
  try {
    let page = decodeKeysPage(await c.request("admin.keys"));
    const first = page;
    const all = [...page.keys];
    for (let i = 1; page.next !== null && i < MAX_KEY_PAGES; i++) {
      page = decodeKeysPage(await c.request("admin.keys", { offset: page.next }));
      all.push(...page.keys);
    }
    if (my !== generation) return;
    renderKeys(first, all);
  } catch (e) {
    if (my === generation && !lostOperator(e)) keysStatus("error", `could not list the keys: ${describeError(e)}`);
  } finally {
    keysLoading = false;
  }
}

function renderKeys(p: KeysPage, list: KeyRow[]): void {
  $("keys-where").textContent = whereKeysLive(p);
  const managed = p.registry.kind === "file" || p.registry.kind === "redis";
  $("keys-add-panel").hidden = !managed;
  $("keys-count").textContent = !managed
    ? ""
    : list.length < p.total
      ? `Showing ${list.length} of ${p.total} keys.`
      : `${p.total} key${p.total === 1 ? "" : "s"} registered.`;
  $("keys").querySelector("tbody")!.replaceChildren(
    ...list.map((k) => {
      const self = k.fingerprint === p.self;
      const tr = el(
        "tr",
        {},
        el("td", { className: "mono ident", text: k.fingerprint, title: k.fingerprint }, ...(k.comment ? [commentEl(k.comment)] : [])),
        el("td", { text: k.type ?? "–", title: k.type ? "" : "blocked by its fingerprint alone: the service has no public key for it" }),
        el("td", { className: `role role-${k.role}`, text: k.role }),
        el("td", { className: "when", text: k.added ? k.added.slice(0, 19).replace("T", " ") : "–", title: "when the key was first registered" }),
        el("td", { className: "when", text: k.updated ? k.updated.slice(0, 19).replace("T", " ") : "–", title: k.updated ? "when its role or comment last changed (add, block, unblock)" : "unchanged since it was added" }),
        keyActions(k, self),
      );
      tr.dataset.fingerprint = k.fingerprint;
      tr.dataset.role = k.role;
      if (self) tr.classList.add("self");
      return tr;
    }),
  );
}

function keyActions(k: KeyRow, self: boolean): HTMLTableCellElement {
  const buttons: HTMLButtonElement[] = [];
  const extra: HTMLElement[] = [];
  if (k.role === "blocked") {
    // A key blocked with its public key gets back the role chosen here; one blocked by fingerprint alone is removed.
    const role = el("select", { className: "small", title: "the role unblocking gives the key" }, el("option", { text: "client" }), el("option", { text: "operator" }));
    role.dataset.action = "unblock-role";
    const unblock = el("button", { className: "small", text: k.type ? "unblock as" : "unblock", title: k.type ? "give it back the role chosen beside" : "blocked by fingerprint alone: unblocking removes the entry" });
    unblock.type = "button";
    unblock.dataset.action = "unblock";
    unblock.addEventListener("click", () => {
      unblock.disabled = true;
      void keyOp("admin.keys.unblock", k, k.type ? role.value : undefined).finally(() => (unblock.disabled = false));
    });
    buttons.push(unblock);
    if (k.type) extra.push(role);
  } else {
    const block = armedButton("block", "confirm block?", () => keyOp("admin.keys.block", k));
    block.dataset.action = "block";
    block.title = "refuse this key from now on and revoke its channels";
    buttons.push(block);
  }
  const remove = armedButton("remove", "confirm remove?", () => keyOp("admin.keys.remove", k));
  remove.dataset.action = "remove";
  remove.title = "unregister this key (its channels stay until revoked)";
  buttons.push(remove);
  if (self) {
    for (const b of buttons) {
      b.disabled = true;
      b.title = "the key this console is connected with";
    }
  }
  return el("td", { className: "actions" }, ...buttons.slice(0, 1), ...extra, ...buttons.slice(1));
}

async function keyOp(op: "admin.keys.block" | "admin.keys.unblock" | "admin.keys.remove", k: KeyRow, role?: string): Promise<void> {
  const c = client;
  if (!c) return;
  const verb = op.slice("admin.keys.".length);
  const done = { block: "blocked", unblock: "unblocked", remove: "removed" }[verb as "block" | "unblock" | "remove"];
  const who = `${k.fingerprint}${k.comment ? ` (${escapeComment(k.comment)})` : ""}`;
  try {
    const r = rec(await c.request(op, { fingerprint: k.fingerprint, ...(role !== undefined ? { role } : {}) }), "data");
    const revoked = Array.isArray(r.revoked) ? r.revoked.length : 0;
    const now = op === "admin.keys.unblock" ? (r.key ? ` (now ${str(rec(r.key, "key"), "role")})` : " (the entry is removed: it was blocked by fingerprint alone)") : "";
    keysStatus("ok", `${done} ${who}${now}${op === "admin.keys.block" ? `; ${revoked} channel${revoked === 1 ? "" : "s"} revoked` : ""}`);
  } catch (e) {
    if (lostOperator(e)) return;
    keysStatus("error", `${verb} ${who}: ${describeError(e)}`);
  }
  await refreshKeys();
}

/**
 * Content octets of the DER OIDs of the public keys psimbols accepts (SubjectPublicKeyInfo
 * algorithm): Ed25519 (1.3.101.112), id-ecPublicKey (1.2.840.10045.2.1, on P-256
 * 1.2.840.10045.3.1.7 only), rsaEncryption (1.2.840.113549.1.1.1), RSASSA-PSS (1.2.840.113549.1.1.10).
 */
const SPKI_ALGORITHMS: Readonly<Record<string, string>> = {
  "2b6570": "Ed25519",
  "2a8648ce3d0201": "EC",
  "2a864886f70d010101": "RSA",
  "2a864886f70d01010a": "RSA-PSS",
};
const P256_OID = "2a8648ce3d030107";
const PUBLIC_PEM = /^-----BEGIN PUBLIC KEY-----\r?\n([A-Za-z0-9+/=\r\n]+)-----END PUBLIC KEY-----$/;

/** One DER element (tag, definite length) at `at`, within `end`; undefined when it does not fit. */
function derAt(b: Uint8Array, at: number, end: number): { tag: number; start: number; end: number } | undefined {
  if (at + 2 > end) return undefined;
  const tag = b[at]!;
  let len = b[at + 1]!;
  let start = at + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n < 1 || n > 3 || start + n > end) return undefined;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + b[start + i]!;
    start += n;
  }
  return start + len > end ? undefined : { tag, start, end: start + len };
}

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

/**
 * Why `text` is not a public key the page may send, or undefined when it is one: exactly
 * one `-----BEGIN PUBLIC KEY-----` block whose DER is a SubjectPublicKeyInfo (RFC 5280
 * §4.1: SEQUENCE { AlgorithmIdentifier SEQUENCE, BIT STRING }, not PKCS#8's SEQUENCE {
 * version INTEGER, …}) of a type psimbols accepts. The broker checks the key itself.
 */
function publicPemProblem(text: string): string | undefined {
  const privateKey = "this is a private key: it never leaves its owner. Paste the public key (the .pub.pem file psimbols keygen writes, or the console's Download public key)";
  if (/PRIVATE KEY/.test(text)) return privateKey;
  const m = PUBLIC_PEM.exec(text);
  if (!m) {
    const what = text.startsWith("{") ? "this looks like the wire form {type, data}, which the page does not send" : "this is not a PEM public key";
    return `${what}: paste the key's public PEM, -----BEGIN PUBLIC KEY----- … -----END PUBLIC KEY----- (or a fingerprint SHA256:… with the role blocked)`;
  }
  let der: Uint8Array;
  try {
    der = Uint8Array.from(atob(m[1]!.replace(/[\r\n]/g, "")), (c) => c.charCodeAt(0));
  } catch {
    return "the PEM public key is not valid base64";
  }
  try {
    const outer = derAt(der, 0, der.length);
    if (!outer || outer.tag !== 0x30 || outer.end !== der.length) return "the PEM public key does not hold a SubjectPublicKeyInfo";
    const alg = derAt(der, outer.start, outer.end);
    // PKCS#8 (a private key) starts with its version INTEGER where SPKI has the AlgorithmIdentifier
    if (alg?.tag === 0x02) return privateKey.replace("this is a private key", "this is a private key (PKCS#8) under a PUBLIC KEY label");
    if (!alg || alg.tag !== 0x30) return "the PEM public key does not hold a SubjectPublicKeyInfo";
    const oid = derAt(der, alg.start, alg.end);
    const name = oid?.tag === 0x06 ? SPKI_ALGORITHMS[hex(der.subarray(oid.start, oid.end))] : undefined;
    if (!oid || !name) return "the public key is of a type psimbols does not accept (Ed25519, ECDSA P-256, RSA)";
    if (name === "EC") {
      const curve = derAt(der, oid.end, alg.end);
      if (curve?.tag !== 0x06 || hex(der.subarray(curve.start, curve.end)) !== P256_OID) return "the EC public key is not on P-256, the one curve psimbols accepts";
    }
    const bits = derAt(der, alg.end, outer.end);
    if (!bits || bits.tag !== 0x03 || bits.end !== outer.end) return "the PEM public key does not hold a SubjectPublicKeyInfo";
    return undefined;
  } finally {
    der.fill(0);
  }
}

/**
 * On `forbidden` from an `admin.keys*` request, this console's key has lost the operator role
 * (demoted or removed elsewhere, `psimbols keys`): drop to the logged-out view and say so.
 * @returns whether it did.
 */
function lostOperator(e: unknown): boolean {
  if (!(e instanceof PsimbolsError && e.code === ErrorCode.forbidden)) return false;
  log("error", "keys", `refused: ${describeError(e)}`);
  void disconnect().then(() => {
    // nothing of the operator's view stays on screen: the list may be stale, and this key may no longer see it
    $("dash").hidden = true;
    $("keys").querySelector("tbody")!.replaceChildren();
    forbiddenBanner("forbidden: this key no longer has the operator role (it changed since the console connected), so the console disconnected.");
  });
  return true;
}

async function addKeyFromForm(): Promise<void> {
  const c = client;
  if (!c) return;
  const text = ($("key-add-pem") as HTMLTextAreaElement).value.trim();
  const comment = ($("key-add-comment") as HTMLInputElement).value;
  const role = ($("key-add-role") as HTMLSelectElement).value;
  if (!text) return keysStatus("warn", "paste the key's public PEM (or, with the role blocked, its fingerprint)");
  // Only what the page has checked is a public key, or a fingerprint to block, is sent: anything else
  // (a private key in any form) is refused here, before anything leaves the page.
  const byFingerprint = FINGERPRINT.test(text);
  if (byFingerprint && role !== "blocked") return keysStatus("error", "a fingerprint alone only blocks: choose the role blocked, or paste the key's public PEM; nothing was sent");
  const refused = byFingerprint ? undefined : publicPemProblem(text);
  if (refused) return keysStatus("error", `${refused}; nothing was sent`);
  const problem = commentProblem(comment);
  if (problem) return keysStatus("error", `comment: ${problem}; nothing was sent`);
  // An empty comment on a block by fingerprint keeps the comment the key is registered with.
  const data = byFingerprint ? { fingerprint: text, role, ...(comment ? { comment } : {}) } : { public_key: text, role, comment };
  const button = $("key-add") as HTMLButtonElement;
  button.disabled = true;
  try {
    const r = rec(await c.request("admin.keys.add", data), "data");
    const k = rec(r.key, "key");
    const revoked = Array.isArray(r.revoked) ? r.revoked.length : 0;
    keysStatus("ok", `added ${str(k, "fingerprint")} (${str(k, "role")})${revoked > 0 ? `; ${revoked} channel${revoked === 1 ? "" : "s"} revoked` : ""}`);
    ($("key-add-pem") as HTMLTextAreaElement).value = "";
    ($("key-add-comment") as HTMLInputElement).value = "";
  } catch (e) {
    if (lostOperator(e)) return;
    keysStatus("error", `add: ${describeError(e)}`);
  } finally {
    button.disabled = false;
  }
  await refreshKeys();
}

/** Updates the expiry countdowns, on the server's clock. */
function tick(): void {
  const serverNow = Date.now() + skewMs;
  for (const { row, expiry } of rows.values()) {
    const left = (row.validUntil - serverNow) / 1000;
    expiry.textContent = duration(left);
    expiry.title = new Date(row.validUntil).toISOString();
    expiry.classList.toggle("soon", left > 0 && left < SOON_S);
    expiry.classList.toggle("past", left <= 0);
  }
}

// ------------------------------------------------------------------ start

async function start(): Promise<void> {
  ($("url") as HTMLInputElement).value = sameOriginUrl("/");
  wireKeyPanel();
  $("connect").addEventListener("click", () => void doConnect());
  $("disconnect").addEventListener("click", () => {
    log("info", "connect", "disconnected by the operator");
    void disconnect();
  });
  $("push-send").addEventListener("click", () => void sendPush());
  $("tab-overview").addEventListener("click", () => showView("overview"));
  $("tab-keys").addEventListener("click", () => showView("keys"));
  $("keys-refresh").addEventListener("click", () => void refreshKeys());
  $("key-add").addEventListener("click", () => void addKeyFromForm());
  setInterval(tick, TICK_MS);
  if (!globalThis.isSecureContext || !globalThis.crypto?.subtle) {
    banner(
      "error",
      "This page is not a secure context, so the browser offers no WebCrypto and the console cannot hold a key.\n" +
        "Open it over https:// (the broker behind a TLS proxy), or through localhost, for example ",
      { code: "ssh -L 9393:127.0.0.1:9393 broker-host" },
      " then http://localhost:9393/console/.",
    );
    showKey();
    return;
  }
  try {
    const algs = await detectAlgorithms();
    $("key-type").title = `this browser: new keys ${algs.keyType}, handshake KEM ${algs.kem}`;
    key = await loadStoredKey(KEY_NAME);
  } catch (e) {
    banner("error", `cannot read the key store: ${describeError(e)}`);
  }
  showKey();
  document.body.dataset.ready = "true";
}

void start();
