/**
 * The server key: generated on first start into the data directory
 * (`server-key.pem`, PKCS#8, mode 0600; directory 0700) and loaded after.
 * All nodes of one service share it (copy the file or mount it as a secret).
 */
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { KeyType, type SigningKey } from "../shared/crypto.js";
import { generateKeyFile, loadKey } from "../node/key-files.js";
import type { Logger } from "./log.js";

export const SERVER_KEY_FILE = "server-key.pem";

export async function loadOrCreateServerKey(dataDir: string, log: Logger): Promise<SigningKey> {
  const path = join(dataDir, SERVER_KEY_FILE);
  if (existsSync(path)) {
    const key = await loadKey(path);
    log.info("server key loaded", { component: "server-key", path, fingerprint: key.public.fingerprint });
    return key;
  }
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const key = await generateKeyFile(KeyType.ed25519, path);
  log.info("server key generated", { component: "server-key", path, fingerprint: key.public.fingerprint });
  return key;
}
