/**
 * The API's refusal log (server/api/refusal-log.ts, docs/BACKEND.md "Logs"):
 * a bounded number of lines per interval whatever the rate and the number of
 * addresses, counts that add up, and addresses forgotten after a quiet
 * interval. A real winston logger writing JSON lines to a stream.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { Writable } from "node:stream";
import winston from "winston";
import { RefusalLog } from "../../../server/api/refusal-log.js";

const t = suite("API refusal log");

function capture(): { lines: Record<string, any>[]; logger: winston.Logger } {
  const lines: Record<string, any>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString("utf8").split("\n")) if (l) lines.push(JSON.parse(l) as Record<string, any>);
      done();
    },
  });
  return { lines, logger: winston.createLogger({ level: "warn", format: winston.format.json(), transports: [new winston.transports.Stream({ stream })] }) };
}

const tick = () => new Promise((r) => setImmediate(r));

t("100 000 refusals from 50 addresses, 5 tracked: 5 lines at once, then 5 summed lines and one for the rest; the counts add up", async () => {
  const { lines, logger } = capture();
  const log = new RefusalLog(logger, { intervalMs: 60_000, maxAddresses: 5 });
  for (let i = 0; i < 100_000; i++) log.refused(`10.0.0.${i % 50}`, i % 3 === 0 ? "rate" : "token");
  await tick();
  assert.is(lines.length, 5, "first refusals of the tracked addresses");
  log.flush();
  await tick();
  assert.is(lines.length, 11);
  const others = lines.find((l) => l.addresses !== undefined)!;
  assert.is(others.addresses, 45);
  const total = lines.reduce((n, l) => n + (l.count ?? 1), 0);
  assert.is(total, 100_000);
  assert.is(lines.filter((l) => l.address === "10.0.0.0").length, 2, "one line at once, one summed");
  log.close();
});

t("an address quiet for an interval is forgotten: its next refusal is logged at once again", async () => {
  const { lines, logger } = capture();
  const log = new RefusalLog(logger, { intervalMs: 60_000 });
  log.refused("10.0.0.1", "token");
  log.refused("10.0.0.1", "token");
  log.flush(); // one summed line
  log.flush(); // quiet: forgotten
  log.refused("10.0.0.1", "token");
  await tick();
  assert.equal(lines.map((l) => [l.message, l.count]), [["API call refused", undefined], ["API calls refused", 1], ["API call refused", undefined]]);
  log.close();
});

t.run();
