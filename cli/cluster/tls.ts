/**
 * TLS at the balancer for the local cluster (`npm run cluster -- --tls`): a
 * self-signed certificate made here with the machine's `openssl` (nothing
 * downloaded), in the one-file form HAProxy's `crt` reads (certificate, then
 * key), and deploy/haproxy-tls.cfg, the wss:// frontend shared with
 * docker-compose.tls.yml.
 */
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { findOnPath } from "./net.js";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
/** The wss:// frontend, loaded after deploy/haproxy.cfg. */
export const HAPROXY_TLS_CONFIG = join(ROOT, "deploy", "haproxy-tls.cfg");

/** A certificate for HAProxy and what a client needs to trust it. */
export interface SelfSigned {
  /** Certificate and private key in one PEM (HAProxy `crt`), mode 0600. */
  readonly pemFile: string;
  /** The certificate alone: a client's trust anchor (`ca`, NODE_EXTRA_CA_CERTS). */
  readonly certFile: string;
}

/**
 * Makes (or reuses, when `dir` has one) a self-signed P-256 certificate for
 * `localhost` and 127.0.0.1, valid 30 days.
 * @throws Error when openssl is missing or fails.
 */
export function selfSignedCertificate(dir: string, names: string[] = ["localhost", "127.0.0.1", "::1"]): SelfSigned {
  const pemFile = join(dir, "haproxy-tls.pem");
  const certFile = join(dir, "tls-cert.pem");
  if (existsSync(pemFile) && existsSync(certFile)) return { pemFile, certFile };
  const openssl = findOnPath("openssl");
  if (!openssl) throw new Error("openssl is not installed: it makes the self-signed certificate of --tls\nhint: apt-get install openssl");
  const keyFile = join(dir, "tls-key.pem");
  const san = names.map((n) => (/^[\d.]+$|:/.test(n) ? `IP:${n}` : `DNS:${n}`)).join(",");
  const r = spawnSync(
    openssl,
    ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30", "-subj", "/CN=psimbols local cluster", "-addext", `subjectAltName=${san}`, "-keyout", keyFile, "-out", certFile],
    { encoding: "utf8" },
  );
  if (r.status !== 0) throw new Error(`openssl could not make a certificate:\n${r.stderr}`);
  writeFileSync(pemFile, readFileSync(certFile, "utf8") + readFileSync(keyFile, "utf8"), { mode: 0o600 });
  chmodSync(keyFile, 0o600);
  return { pemFile, certFile };
}
