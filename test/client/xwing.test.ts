/**
 * X-Wing end to end (PROTOCOL.md §5.3): the Node client offering it gets a
 * channel from a real broker process, which accepts it by default; the frame
 * sizes it costs are printed for the record.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { generateSigningKey } from "../../shared/crypto.js";
import { fromUtf8 } from "../../shared/encoding.js";
import { KemType } from "../../shared/frames.js";
import { connect } from "../../client/node.js";
import { type RunningBroker, startBroker } from "../helpers/broker.js";
import { Raw, call, handshake } from "../helpers/raw.js";
import { createHello } from "../../shared/handshake.js";

const t = suite("X-Wing against a broker");
let broker: RunningBroker;
t.before(async () => {
  broker = await startBroker(["--hellos-per-address", "1000"]);
});
t.after(async () => {
  await broker?.stop();
});

t("the broker lists X-Wing and grants a channel to a client that offers it", async () => {
  const wk = (await (await fetch(`http://127.0.0.1:${broker.port}/.well-known/psimbols`)).json()) as { kems: string[] };
  assert.ok(wk.kems.includes(KemType.xwing), JSON.stringify(wk.kems));
  const c = await connect(broker.url, { key: await generateSigningKey(), serverKey: broker.fingerprint, kem: KemType.xwing, reconnect: false });
  assert.equal(await c.request("echo", { pq: true }), { pq: true });
  await c.renew();
  assert.equal(await c.request("echo", 2), 2);
  await c.close();
});

t("frame sizes: an X-Wing hello and challenge against X25519's", async () => {
  const sizes: Record<string, { hello: number; challenge: number }> = {};
  for (const kem of [KemType.x25519, KemType.xwing]) {
    const id = await generateSigningKey();
    const h = await createHello(id, { kem });
    const raw = await Raw.open(broker.url);
    raw.send(fromUtf8(h.bytes));
    const challenge = JSON.stringify(await raw.next());
    sizes[kem] = { hello: h.bytes.length, challenge: challenge.length };
    raw.close();
    const r2 = await Raw.open(broker.url);
    const ch = await handshake(r2, id, { kem });
    assert.equal(await call(r2, ch, "echo", kem), { data: kem });
    r2.close();
  }
  console.log(`    frame bytes: ${JSON.stringify(sizes)}`);
  assert.ok(sizes[KemType.xwing]!.hello > sizes[KemType.x25519]!.hello + 1500);
  assert.ok(sizes[KemType.xwing]!.challenge > sizes[KemType.x25519]!.challenge + 1400);
});

t.run();
