/**
 * Summarises a V8 `.cpuprofile` (from `node --cpu-prof` or the inspector's
 * Profiler domain): top functions by self time and by inclusive time, and
 * self time per area (ws, shared/, client/, node/, server/, node internals, GC, idle).
 *
 *   node dist/bench/profile.js FILE.cpuprofile [TOP]
 *   node dist/bench/profile.js FILE.cpuprofile --callers FUNCTION   (who calls a hot native frame)
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** One row of the summary: a function (or an area) and its share of the profile. */
export interface ProfileRow {
  name: string;
  selfMs: number;
  selfPct: number;
  totalMs?: number;
  totalPct?: number;
}

function shortUrl(url: string): string {
  if (!url) return "";
  const m = url.match(/node_modules\/(.+)$/) ?? url.match(/\/dist\/(.+)$/) ?? url.match(/^node:(.+)$/);
  return m ? m[1]! : url.replace(/^file:\/\//, "");
}

function keyOf(f: CallFrame): string {
  const u = shortUrl(f.url);
  return `${f.functionName || "(anonymous)"}${u ? ` ${u}:${f.lineNumber + 1}` : ""}`;
}

function areaOf(f: CallFrame): string {
  const u = f.url;
  if (!u) return f.functionName.startsWith("(") ? f.functionName : "(native)";
  if (u.includes("node_modules/ws/")) return "ws";
  if (u.includes("node_modules/@hpke/")) return "@hpke";
  if (u.includes("node_modules/")) return "other packages";
  if (u.includes("/shared/")) return "shared/";
  if (u.includes("/client/")) return "client/";
  if (u.includes("/node/")) return "node/";
  if (u.includes("/server/")) return "server/";
  if (u.includes("/bench/")) return "bench/";
  if (u.startsWith("node:")) return "node internals";
  return "other";
}

/** Computes the summary of a parsed profile. */
export function summarise(p: CpuProfile, top = 25): { totalMs: number; self: ProfileRow[]; inclusive: ProfileRow[]; areas: ProfileRow[] } {
  const byId = new Map<number, ProfileNode>();
  for (const n of p.nodes) byId.set(n.id, n);
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const selfUs = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + (p.timeDeltas[i] ?? 0));
  }
  const totalUs = [...selfUs.values()].reduce((a, b) => a + b, 0);
  const self = new Map<string, number>();
  const incl = new Map<string, number>();
  const areas = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const n = byId.get(id)!;
    const k = keyOf(n.callFrame);
    self.set(k, (self.get(k) ?? 0) + us);
    const a = areaOf(n.callFrame);
    areas.set(a, (areas.get(a) ?? 0) + us);
    // Inclusive: every distinct function on this sample's stack gets the time once.
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const kk = keyOf(byId.get(cur)!.callFrame);
      if (seen.has(kk)) continue;
      seen.add(kk);
      incl.set(kk, (incl.get(kk) ?? 0) + us);
    }
  }
  const pct = (us: number) => Math.round((1000 * us) / Math.max(totalUs, 1)) / 10;
  const ms = (us: number) => Math.round(us / 100) / 10;
  const rows = (m: Map<string, number>, n: number) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, us]) => ({ name, selfMs: ms(us), selfPct: pct(us) }));
  return {
    totalMs: ms(totalUs),
    self: rows(self, top).map((r) => ({ ...r, totalMs: ms(incl.get(r.name) ?? 0), totalPct: pct(incl.get(r.name) ?? 0) })),
    inclusive: [...incl.entries()]
      .filter(([k]) => !k.startsWith("(root)"))
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, selfMs: ms(self.get(name) ?? 0), selfPct: pct(self.get(name) ?? 0), totalMs: ms(us), totalPct: pct(us) })),
    areas: rows(areas, 20),
  };
}

/** Self time of the functions named `name`, split by the stack of callers above them (`depth` frames). */
export function callers(p: CpuProfile, name: string, depth = 4, top = 15): { stack: string; ms: number }[] {
  const byId = new Map<number, ProfileNode>();
  for (const n of p.nodes) byId.set(n.id, n);
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const out = new Map<string, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i]!;
    const n = byId.get(id)!;
    if (n.callFrame.functionName !== name) continue;
    const stack: string[] = [];
    for (let cur = parent.get(id); cur !== undefined && stack.length < depth; cur = parent.get(cur)) stack.push(keyOf(byId.get(cur)!.callFrame));
    const k = stack.join(" < ");
    out.set(k, (out.get(k) ?? 0) + (p.timeDeltas[i] ?? 0));
  }
  return [...out.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([stack, us]) => ({ stack, ms: Math.round(us / 100) / 10 }));
}

/** Renders a summary as text. */
export function formatSummary(s: ReturnType<typeof summarise>, title: string): string {
  const lines = [`${title}: ${s.totalMs} ms sampled`, "", "self %  incl %  function"];
  for (const r of s.self) lines.push(`${r.selfPct.toFixed(1).padStart(6)}  ${(r.totalPct ?? 0).toFixed(1).padStart(6)}  ${r.name}`);
  lines.push("", "incl %  self %  function (inclusive)");
  for (const r of s.inclusive) lines.push(`${(r.totalPct ?? 0).toFixed(1).padStart(6)}  ${r.selfPct.toFixed(1).padStart(6)}  ${r.name}`);
  lines.push("", "self %  area");
  for (const r of s.areas) lines.push(`${r.selfPct.toFixed(1).padStart(6)}  ${r.name}`);
  return lines.join("\n");
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const file = process.argv[2];
  if (!file) {
    console.error("usage: node dist/bench/profile.js FILE.cpuprofile [TOP]");
    process.exit(2);
  }
  const p = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const i = process.argv.indexOf("--callers");
  if (i >= 0) {
    for (const r of callers(p, process.argv[i + 1] ?? "")) console.log(`${String(r.ms).padStart(8)} ms  ${r.stack}`);
  } else {
    console.log(formatSummary(summarise(p, Number(process.argv[3] ?? 25)), file));
  }
}
