/**
 * What ships in deploy/ and the compose files, checked without a Docker
 * engine (none runs here, and `docker compose` is not installed):
 * - every HAProxy configuration we ship passes `haproxy -c` (HAProxy 2.6,
 *   Debian's, the series the compose file pins), alone and in the
 *   combinations the compose overrides and the local cluster load;
 * - the compose files, parsed as YAML (Python's PyYAML, already on the
 *   machine: no YAML package added to the project) and merged as compose
 *   merges overrides, hold one scalable `node` service and agree with the
 *   files in deploy/ they mount.
 * What this cannot show: that Docker starts it. See docs/CLUSTER.md.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { HAPROXY_CONFIG, haproxyConfigFor } from "../../cli/cluster/local-cluster.js";
import { findOnPath } from "../../cli/cluster/net.js";
import { SENTINEL_CONFIG, SENTINEL_MASTER_NAME, sentinelConfigFor } from "../../cli/cluster/sentinel.js";
import { HAPROXY_TLS_CONFIG, selfSignedCertificate } from "../../cli/cluster/tls.js";
import { parseRedisAddress } from "../../server/store/redis-address.js";
import { ROOT } from "../helpers/broker.js";
import { skip } from "../helpers/skip.js";

const haproxy = findOnPath("haproxy");
const dir = mkdtempSync(join(tmpdir(), "psimbols-deploy-"));
process.on("exit", () => rmSync(dir, { recursive: true, force: true }));

/** `haproxy -c` on the files, with `env`: exit status and output. */
function check(files: string[], env: Record<string, string> = {}): { ok: boolean; out: string } {
  if (!haproxy) throw new Error("haproxy is not installed (bin/test_psimbols.sh installs it)");
  const r = spawnSync(haproxy, ["-c", ...files.flatMap((f) => ["-f", f])], { env: { ...process.env, ...env }, encoding: "utf8" });
  return { ok: r.status === 0, out: `${r.stdout}${r.stderr}` };
}

const h = suite("deploy: every shipped HAProxy config passes haproxy -c");

h("deploy/haproxy.cfg as compose mounts it: valid, and server-template over Docker DNS between the markers", () => {
  const r = check([HAPROXY_CONFIG]);
  assert.ok(r.ok, r.out);
  const cfg = readFileSync(HAPROXY_CONFIG, "utf8");
  const block = /# BEGIN SERVERS[^\n]*\n([\s\S]*?)\n[ \t]*# END SERVERS/.exec(cfg)?.[1] ?? "";
  assert.match(block, /^\s*server-template node \d+ node:9393$/m, "no server-template for the compose service `node`");
  assert.match(cfg, /default-server[^\n]*\binit-addr last,none\b/, "libc resolution at start: slow or failing where `node` has no DNS");
  assert.not.match(block, /^\s*server /m, "a fixed server line: --scale would need an edit");
  // The template's slots resolve through the resolvers section at run time.
  assert.match(cfg, /^resolvers dns$/m);
  assert.match(cfg, /default-server[^\n]*\bresolvers dns\b/);
});

h("the local cluster's copy (fixed 127.0.0.1 servers) is valid", () => {
  const file = join(dir, "local.cfg");
  const text = haproxyConfigFor([
    { name: "node1", address: "127.0.0.1:40001" },
    { name: "node2", address: "127.0.0.1:40002" },
  ]);
  writeFileSync(file, text);
  assert.not.match(text, /^\s*server-template/m);
  assert.match(text, /^\s*server node2 127\.0\.0\.1:40002$/m);
  const r = check([file], { PSIMBOLS_LB_BIND: "127.0.0.1:40000" });
  assert.ok(r.ok, r.out);
  assert.not.match(r.out, /could not resolve/);
});

h("deploy/haproxy-tls.cfg beside haproxy.cfg is valid with a certificate, and refused without one", () => {
  const cert = selfSignedCertificate(dir);
  const ok = check([HAPROXY_CONFIG, HAPROXY_TLS_CONFIG], { PSIMBOLS_TLS_CERT: cert.pemFile });
  assert.ok(ok.ok, ok.out);
  const missing = check([HAPROXY_CONFIG, HAPROXY_TLS_CONFIG], { PSIMBOLS_TLS_CERT: join(dir, "absent.pem") });
  assert.not.ok(missing.ok, "haproxy -c accepted a missing certificate: this check could not fail");
  assert.match(missing.out, /absent\.pem/);
  // Its default bind is the port docker-compose.tls.yml publishes.
  assert.match(readFileSync(HAPROXY_TLS_CONFIG, "utf8"), /bind "\$\{PSIMBOLS_LB_TLS_BIND-:9443\}" ssl crt /);
});

h("a broken config is refused (the check can fail)", () => {
  const file = join(dir, "broken.cfg");
  writeFileSync(file, readFileSync(HAPROXY_CONFIG, "utf8").replace("balance roundrobin", "balance nonsense"));
  assert.not.ok(check([file]).ok);
});

h.run();

// ------------------------------------------------------------------ compose

type Obj = Record<string, unknown>;

/** Parses YAML with Python's PyYAML (safe_load: anchors and `<<` merges resolved), or undefined when unavailable. */
function yaml(file: string): Obj | undefined {
  const py = findOnPath("python3");
  if (!py) return undefined;
  const r = spawnSync(py, ["-c", "import sys, json, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)", file], { encoding: "utf8" });
  if (r.status !== 0) {
    if (/No module named 'yaml'/.test(r.stderr)) return undefined;
    throw new Error(`${file} is not valid YAML:\n${r.stderr}`);
  }
  return JSON.parse(r.stdout) as Obj;
}

/** Compose's override merge, as far as these files need it: maps merge, `command`/`entrypoint` replace, `volumes`/`ports` append (volumes unique by target). */
function merge(base: unknown, over: unknown, key = ""): unknown {
  if (Array.isArray(base) && Array.isArray(over)) {
    if (key === "command" || key === "entrypoint") return over;
    if (key === "volumes") {
      const target = (v: unknown) => (typeof v === "string" ? volumeTarget(v) : (v as Obj).target);
      return [...base.filter((b) => !over.some((o) => target(o) === target(b))), ...over];
    }
    return [...base, ...over];
  }
  if (isObj(base) && isObj(over)) {
    const out: Obj = { ...base };
    for (const [k, v] of Object.entries(over)) out[k] = k in out ? merge(out[k], v, k) : v;
    return out;
  }
  return over;
}
/** A short-syntax volume `source:target[:mode]`, the source maybe `${VAR:-default}`. */
const volumeParts = (v: string) => v.replace(/\$\{[^}]*\}/g, (x) => x.replace(/:/g, "\u0000")).split(":").map((p) => p.replace(/\u0000/g, ":"));
const volumeSource = (v: string) => volumeParts(v)[0]!;
const volumeTarget = (v: string) => volumeParts(v)[1]!;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const services = (c: Obj) => c.services as Record<string, Obj>;

const compose = yaml(join(ROOT, "docker-compose.yml"));
const c = suite("deploy: the compose files (parsed, merged as compose does)");

if (!compose) {
  skip(c, "the compose files, parsed and merged as compose does", "python3 with PyYAML is not installed");
} else {
  const sentinelOverride = yaml(join(ROOT, "docker-compose.sentinel.yml"))!;
  const tlsOverride = yaml(join(ROOT, "docker-compose.tls.yml"))!;

  /** The checks every combination must pass: references resolve, mounted files exist. */
  function coherent(file: Obj, what: string): void {
    const s = services(file);
    for (const [name, svc] of Object.entries(s)) {
      const deps = isObj(svc.depends_on) ? Object.keys(svc.depends_on) : ((svc.depends_on as string[] | undefined) ?? []);
      for (const d of deps) assert.ok(d in s, `${what}: ${name} depends on ${d}, which is no service`);
      for (const v of (svc.volumes as string[] | undefined) ?? []) {
        const src = volumeSource(v);
        if (src.startsWith("./deploy/")) assert.ok(existsSync(join(ROOT, src)), `${what}: ${name} mounts ${src}, which does not exist`);
        else if (!src.startsWith("./") && !src.startsWith("$") && !src.startsWith("/")) assert.ok(src in ((file.volumes as Obj | undefined) ?? {}), `${what}: volume ${src} is not declared`);
      }
    }
  }

  c("one `node` service that --scale can multiply: no fixed name, port, or --node", () => {
    const s = services(compose);
    const psimbols = Object.entries(s).filter(([, v]) => v.image === "psimbols:local" && !String(v.entrypoint ?? "").includes("keygen"));
    assert.equal(psimbols.map(([k]) => k), ["node"]);
    const node = s.node!;
    assert.is(node.container_name, undefined, "container_name forbids --scale");
    assert.is(node.ports, undefined, "a published port collides between replicas");
    assert.is(node.hostname, undefined, "a fixed hostname would give every replica the same node name");
    const command = node.command as string[];
    assert.not.ok(command.some((a) => a.startsWith("--node")), "--node given: replicas would share a name");
    assert.ok(command.includes("--trust-proxy"));
    // The store address comes from the environment, so the Sentinel override can change it.
    const env = node.environment as Obj;
    assert.is(parseRedisAddress(String(env.PSIMBOLS_REDIS)).kind, "direct");
    assert.ok(!command.some((a) => a.startsWith("--redis")), "--redis on the command line would win over the override's PSIMBOLS_REDIS");
    // HAProxy waits for the service, and mounts the one config.
    const lb = s.haproxy!;
    assert.ok(isObj(lb.depends_on) && "node" in lb.depends_on);
    assert.ok((lb.volumes as string[]).includes("./deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"));
    assert.match(String(lb.image), /^haproxy:2\.6$/);
    coherent(compose, "docker-compose.yml");
  });

  c("docker-compose.sentinel.yml: a replica, three sentinels on deploy/sentinel.conf, nodes on a redis+sentinel:// address", () => {
    const m = merge(compose, sentinelOverride) as Obj;
    coherent(m, "with the Sentinel override");
    const s = services(m);
    const address = parseRedisAddress(String((s.node!.environment as Obj).PSIMBOLS_REDIS));
    assert.is(address.kind, "sentinel");
    if (address.kind !== "sentinel") return;
    assert.is(address.name, SENTINEL_MASTER_NAME);
    assert.equal(address.sentinels.map((x) => `${x.host}:${x.port}`), ["sentinel:26379"]);
    assert.ok("sentinel" in (s.node!.depends_on as Obj));
    assert.is((s.sentinel!.deploy as Obj).replicas, 3);
    assert.ok((s.sentinel!.volumes as string[]).some((v) => v.startsWith("./deploy/sentinel.conf:")));
    // Both Redis servers start through deploy/redis-start.sh (test/deploy/redis-start.test.ts runs it),
    // named as the sentinels announce them; the replica follows `redis` on the very first start.
    for (const name of ["redis", "redis-replica"]) {
      const svc = s[name]!;
      assert.equal(svc.entrypoint, ["sh", "/usr/local/bin/psimbols-redis-start", name, "6379"], `${name}: entrypoint`);
      assert.ok((svc.volumes as string[]).includes("./deploy/redis-start.sh:/usr/local/bin/psimbols-redis-start:ro"), `${name}: the script is mounted`);
      const command = (svc.command as string[]).join(" ");
      assert.not.match(command, /^redis-server|--replicaof/, `${name}: the script runs redis-server and chooses --replicaof`);
      assert.match(command, new RegExp(`--replica-announce-ip ${name}$`));
      const env = svc.environment as Obj;
      assert.is(env.PSIMBOLS_MASTER_NAME, SENTINEL_MASTER_NAME);
      assert.match(String(env.PSIMBOLS_SENTINELS), /^(sentinel:26379 ?)+$/);
    }
    assert.is((s["redis-replica"]!.environment as Obj).PSIMBOLS_INITIAL_MASTER, "redis 6379");
    assert.is((s.redis!.environment as Obj).PSIMBOLS_INITIAL_MASTER, undefined, "the first master starts as one");
    // The shipped sentinel.conf monitors the compose master by name, quorum 2 of 3.
    assert.match(readFileSync(SENTINEL_CONFIG, "utf8"), new RegExp(`^sentinel monitor ${SENTINEL_MASTER_NAME} redis 6379 2$`, "m"));
    // The base file is untouched by the merge where the override says nothing.
    assert.equal(s.haproxy, services(compose).haproxy);
  });

  c("docker-compose.tls.yml: haproxy loads both configs it mounts and publishes 9443", () => {
    const m = merge(compose, tlsOverride) as Obj;
    coherent(m, "with the TLS override");
    const lb = services(m).haproxy!;
    const files = (lb.command as string[]).filter((_, i, a) => a[i - 1] === "-f");
    const targets = (lb.volumes as string[]).map(volumeTarget);
    assert.equal(files, ["/usr/local/etc/haproxy/haproxy.cfg", "/usr/local/etc/haproxy/haproxy-tls.cfg"]);
    for (const f of files) assert.ok(targets.includes(f), `${f} is not mounted`);
    assert.ok(targets.includes("/usr/local/etc/haproxy/certs"), "no certificate volume where haproxy-tls.cfg looks");
    assert.ok((lb.ports as string[]).some((p) => p.endsWith(":9443")));
    assert.ok((lb.ports as string[]).some((p) => p.endsWith(":9393")), "the plain port was lost in the merge");
  });

  c("the merge used here is compose's (a check that could fail): a replaced command is not appended", () => {
    const m = merge({ services: { a: { command: ["x"], volumes: ["./a:/t"] } } }, { services: { a: { command: ["y"], volumes: ["./b:/t"] } } }) as Obj;
    assert.equal(services(m).a, { command: ["y"], volumes: ["./b:/t"] });
  });
}

c("deploy/sentinel.conf, as the local cluster rewrites it, points at the local master and keeps the rest", () => {
  const text = sentinelConfigFor(40100, 40200, "/tmp/x");
  assert.match(text, /^port 40100$/m);
  assert.match(text, /^bind 127\.0\.0\.1$/m);
  assert.match(text, new RegExp(`^sentinel monitor ${SENTINEL_MASTER_NAME} 127\\.0\\.0\\.1 40200 2$`, "m"));
  assert.match(text, new RegExp(`^sentinel down-after-milliseconds ${SENTINEL_MASTER_NAME} \\d+$`, "m"));
  assert.throws(() => sentinelConfigFor(1, 2, "/tmp", "port 1\n"), /sentinel monitor/);
});

c.run();

const d = suite("deploy: the Dockerfile's build context");

/**
 * .dockerignore is an allow-list (`*`, then `!path` lines): each `COPY` from
 * the build context must be allowed by it, or the build fails at that step
 * (docker and podman alike; `npm run compose:test` met it when the client's
 * workspace manifest was copied but not allowed).
 */
d("every COPY source of the Dockerfile is allowed by .dockerignore and exists", () => {
  const ignore = readFileSync(join(ROOT, ".dockerignore"), "utf8").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  assert.is(ignore[0], "*", "an allow-list starts by ignoring everything");
  const allowed = ignore.filter((l) => l.startsWith("!")).map((l) => l.slice(1).replace(/\/$/, ""));
  const sources = [...readFileSync(join(ROOT, "Dockerfile"), "utf8").matchAll(/^COPY (?!--from)(.+)$/gm)].flatMap((m) => m[1]!.trim().split(/\s+/).slice(0, -1));
  assert.ok(sources.length > 5, `COPY sources found: ${sources.join(" ")}`);
  for (const src of sources) {
    const path = src.replace(/\/$/, "").replace(/^\.\//, "");
    assert.ok(existsSync(join(ROOT, path)), `${src} (COPY) does not exist`);
    assert.ok(allowed.some((a) => path === a || path.startsWith(`${a}/`)), `${src} is copied by the Dockerfile but .dockerignore does not allow it (add !${path})`);
  }
});

d.run();
