/**
 * Test hosts in Linux network namespaces, for partition tests: every host is
 * a namespace of its own, joined to one or two segments (Linux bridges inside
 * a "switch" namespace) by veth pairs, with addresses in one private /24
 * that exists only inside these namespaces. The root namespace gets no
 * interface and no route: test traffic stays between the namespaces the test
 * made. Names carry a per-run id, and everything is torn down by {@link Lab.destroy},
 * at process exit, and on SIGINT/SIGTERM, even when a test fails.
 *
 * A link is cut by setting the switch-side end of the host's veth down: the
 * host keeps its address and sockets but nothing passes (no RST, no ICMP), as
 * when a cable or a switch port fails.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";

/** Why namespaces cannot be made here, or undefined when they can. */
export function netnsUnavailable(): string | undefined {
  if (process.platform !== "linux") return "not Linux";
  if (process.getuid?.() !== 0) return "not root (ip netns needs CAP_SYS_ADMIN)";
  const probe = `psprobe${process.pid}`;
  const add = spawnSync("ip", ["netns", "add", probe], { encoding: "utf8" });
  if (add.error) return "the ip command (iproute2) is missing";
  if (add.status !== 0) return `ip netns add failed: ${add.stderr.trim()}`;
  spawnSync("ip", ["netns", "del", probe]);
  return undefined;
}

/** Runs `ip …args`; throws with its stderr on failure. */
export function ip(...args: string[]): string {
  const r = spawnSync("ip", args, { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`ip ${args.join(" ")}: ${r.stderr.trim() || r.error?.message}`);
  return r.stdout;
}

/** Runs `tc …args` inside namespace `ns`; returns its status and stderr. */
export function tc(ns: string, ...args: string[]): { ok: boolean; stderr: string } {
  const r = spawnSync("ip", ["netns", "exec", ns, "tc", ...args], { encoding: "utf8" });
  return { ok: r.status === 0, stderr: (r.stderr ?? "").trim() };
}

/** One host: a namespace and its interfaces. */
export interface Host {
  readonly name: string;
  /** Namespace name. */
  readonly ns: string;
  /** Address per segment. */
  readonly addr: Record<string, string>;
  /** The host-side interface per segment (inside `ns`). */
  readonly dev: Record<string, string>;
  /** The switch-side interface per segment (inside the switch namespace). */
  readonly port: Record<string, string>;
}

/** A segment: a bridge and the /25 of the lab's /24 it carries. */
interface Segment {
  bridge: string;
  prefix: string;
  base: number;
}

const labs = new Set<Lab>();
let hooked = false;
function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.on("exit", () => {
    for (const l of labs) l.destroySync();
  });
  for (const s of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(s, () => {
      for (const l of labs) l.destroySync();
      process.kill(process.pid, s);
    });
  }
}

/**
 * A set of test hosts. `segments` names the segments (each gets a /25 of
 * `net`, e.g. 10.213.77.0/24 → .0/25 and .128/25); hosts are added with the
 * segments they join.
 */
export class Lab {
  readonly id: string;
  readonly switchNs: string;
  readonly hosts = new Map<string, Host>();
  readonly #segments = new Map<string, Segment>();
  readonly #procs = new Set<ChildProcess>();
  #namespaces: string[] = [];
  #nextHost = 10;

  constructor(segments: string[], net = "10.213.77") {
    if (segments.length > 2) throw new RangeError("at most two segments (two /25s of one /24)");
    this.id = randomBytes(3).toString("hex").slice(0, 5);
    this.switchNs = `ps${this.id}sw`;
    hookExit();
    labs.add(this);
    this.#ns(this.switchNs);
    segments.forEach((s, i) => {
      const bridge = `br${i}`;
      ip("-n", this.switchNs, "link", "add", bridge, "type", "bridge");
      ip("-n", this.switchNs, "link", "set", bridge, "up");
      this.#segments.set(s, { bridge, prefix: net, base: i * 128 });
    });
  }

  #ns(name: string): void {
    ip("netns", "add", name);
    this.#namespaces.push(name);
    ip("-n", name, "link", "set", "lo", "up");
  }

  /** Adds a host joined to `segments`; its address in each is `<net>.<base + k>` for the k-th host. */
  host(name: string, segments: string[]): Host {
    if (!/^[a-z0-9]{1,4}$/.test(name)) throw new RangeError(`host name "${name}": 1-4 lowercase letters or digits`);
    const ns = `ps${this.id}${name}`;
    this.#ns(ns);
    const k = this.#nextHost++;
    const h: Host = { name, ns, addr: {}, dev: {}, port: {} };
    segments.forEach((s, i) => {
      const seg = this.#segments.get(s);
      if (!seg) throw new RangeError(`no segment ${s}`);
      const dev = `e${name}${i}`;
      const port = `p${name}${i}`;
      ip("link", "add", dev, "netns", ns, "type", "veth", "peer", "name", port, "netns", this.switchNs);
      ip("-n", this.switchNs, "link", "set", port, "master", seg.bridge);
      ip("-n", this.switchNs, "link", "set", port, "up");
      const addr = `${seg.prefix}.${seg.base + k}`;
      ip("-n", ns, "addr", "add", `${addr}/25`, "dev", dev);
      ip("-n", ns, "link", "set", dev, "up");
      h.addr[s] = addr;
      h.dev[s] = dev;
      h.port[s] = port;
    });
    this.hosts.set(name, h);
    return h;
  }

  /** Cuts (or restores) `host`'s link to `segment` at the switch. */
  link(host: Host, segment: string, up: boolean): void {
    ip("-n", this.switchNs, "link", "set", host.port[segment]!, up ? "up" : "down");
  }

  /** Spawns `cmd args` inside `host`'s namespace; killed by destroy(). */
  spawn(host: Host, cmd: string, args: string[], env: Record<string, string> = {}): ChildProcess {
    const p = spawn("ip", ["netns", "exec", host.ns, cmd, ...args], { env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] });
    this.#procs.add(p);
    p.once("exit", () => this.#procs.delete(p));
    return p;
  }

  /** Runs `cmd args` inside `host`'s namespace to completion. */
  run(host: Host, cmd: string, args: string[], env: Record<string, string> = {}, timeoutMs = 15_000): Promise<{ code: number | null; out: string }> {
    const p = this.spawn(host, cmd, args, env);
    let out = "";
    p.stdout!.setEncoding("utf8").on("data", (d: string) => (out += d));
    p.stderr!.setEncoding("utf8").on("data", (d: string) => (out += d));
    const t = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
    return new Promise((resolve) => p.once("exit", (code) => (clearTimeout(t), resolve({ code, out }))));
  }

  /** Kills every process started here and deletes every namespace (with its interfaces). Idempotent. */
  async destroy(): Promise<void> {
    const exits = [...this.#procs].map((p) => new Promise<void>((r) => (p.exitCode !== null || p.signalCode !== null ? r() : p.once("exit", () => r()))));
    for (const p of this.#procs) p.kill("SIGKILL");
    await Promise.race([Promise.all(exits), new Promise((r) => setTimeout(r, 3000))]);
    this.destroySync();
  }

  destroySync(): void {
    for (const p of this.#procs) p.kill("SIGKILL");
    for (const ns of this.#namespaces.reverse()) spawnSync("ip", ["netns", "del", ns]);
    this.#namespaces = [];
    labs.delete(this);
  }
}
