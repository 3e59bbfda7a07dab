/**
 * Throwaway PKI for the TLS baselines, made at run time with the `openssl`
 * CLI: one CA, a server certificate for IP 127.0.0.1 and a client
 * certificate (mutual TLS). Nothing is kept after the run.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** PEM texts of the run's CA, server and client certificates and keys. */
export interface Pki {
  ca: string;
  serverKey: string;
  serverCert: string;
  clientKey: string;
  clientCert: string;
  /** Key algorithm used for every certificate, e.g. `EC P-256`. */
  algorithm: string;
}

/** Key algorithms the baselines can use; P-256 is what most mutual-TLS deployments run. */
export type CertKeyType = "p256" | "ed25519";

function genKey(openssl: (args: string[]) => void, path: string, type: CertKeyType): void {
  if (type === "ed25519") openssl(["genpkey", "-algorithm", "ED25519", "-out", path]);
  else openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path]);
}

/**
 * Generates the PKI in a temporary directory and returns the PEMs.
 * @throws Error when `openssl` is missing or fails (its stderr is included).
 */
export function makePki(type: CertKeyType = "p256"): Pki {
  const dir = mkdtempSync(join(tmpdir(), "psimbols-bench-pki-"));
  const p = (f: string) => join(dir, f);
  const openssl = (args: string[]): void => {
    execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
  };
  try {
    genKey(openssl, p("ca.key"), type);
    openssl(["req", "-x509", "-new", "-key", p("ca.key"), "-subj", "/CN=psimbols bench CA", "-days", "2", "-out", p("ca.pem")]);
    writeFileSync(p("server.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n");
    writeFileSync(p("client.ext"), "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n");
    for (const who of ["server", "client"]) {
      genKey(openssl, p(`${who}.key`), type);
      openssl(["req", "-new", "-key", p(`${who}.key`), "-subj", `/CN=bench ${who}`, "-out", p(`${who}.csr`)]);
      openssl([
        "x509", "-req", "-in", p(`${who}.csr`), "-CA", p("ca.pem"), "-CAkey", p("ca.key"), "-CAcreateserial",
        "-days", "2", "-extfile", p(`${who}.ext`), "-out", p(`${who}.pem`),
      ]);
    }
    const r = (f: string) => readFileSync(p(f), "utf8");
    return {
      ca: r("ca.pem"),
      serverKey: r("server.key"),
      serverCert: r("server.pem"),
      clientKey: r("client.key"),
      clientCert: r("client.pem"),
      algorithm: type === "ed25519" ? "Ed25519" : "EC P-256",
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
