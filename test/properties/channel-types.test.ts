/**
 * The property tests that run the protocol against a real broker or the real
 * client (server-machine, replay-window, client-machine) again, each on a
 * ChaCha20-Poly1305 channel (PROTOCOL.md §6.3): a child process per file with
 * PSIMBOLS_TEST_CHANNEL_TYPE set, which test/helpers/raw.ts and the client
 * machine's fake server honour. (channel.test.ts covers both types itself.)
 */
import { test } from "uvu";
import * as assert from "uvu/assert";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";

const FILES = ["server-machine", "replay-window", "client-machine"];

for (const name of FILES) {
  test(`${name} properties hold on ChaCha20-Poly1305 channels`, async () => {
    const file = fileURLToPath(new URL(`./${name}.test.js`, import.meta.url));
    const r = await new Promise<{ code: number; out: string }>((resolve) =>
      execFile(
        process.execPath,
        [file],
        { env: { ...process.env, PSIMBOLS_TEST_CHANNEL_TYPE: "ChaCha20-Poly1305", FORCE_COLOR: "0" }, maxBuffer: 1 << 24 },
        (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr }),
      ),
    );
    assert.is(r.code, 0, r.out.slice(-3000));
    const passed = /Passed:\s+(\d+)/.exec(r.out);
    assert.ok(passed && Number(passed[1]) > 0, `no test passed:\n${r.out.slice(-2000)}`);
    assert.not.match(r.out, /Skipped:\s+[1-9]/);
  });
}

test.run();
