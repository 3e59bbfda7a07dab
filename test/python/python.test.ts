/**
 * The Python client (python/, PROTOCOL.md's second implementation): python/tests/run.py runs its
 * vector runner over test/vectors/, its offline tests and its live tests against real brokers and
 * Redis, and prints uvu's totals, which bin/test_psimbols.sh counts like any other file's.
 * Python: $PSIMBOLS_PYTHON, else /usr/bin/python3 (Debian's, with python3-cryptography and
 * python3-websockets, which bin/test_psimbols.sh installs through apt when missing).
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const python = process.env.PSIMBOLS_PYTHON ?? "/usr/bin/python3";
const r = spawnSync(python, ["python/tests/run.py", ...process.argv.slice(2)], {
  cwd: ROOT,
  env: { ...process.env, PYTHONPATH: "python", PYTHONDONTWRITEBYTECODE: "1" },
  stdio: "inherit",
});
if (r.error) console.error(`error: cannot run ${python}: ${r.error.message}`);
process.exit(r.status ?? 1);
