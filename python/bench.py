"""Python client against the Node client, one broker, one run: handshake time and requests per second.

    PYTHONPATH=python python3 python/bench.py [--handshakes 50] [--requests 5000] [--concurrency 32]

Starts `node bin/psimbols.js serve` (built with `npx tsc -p tsconfig.json`), then for each client:
sequential handshakes (connect until the channel is established, then close; a fresh Ed25519
identity each, made beforehand) and echo requests from one channel, `concurrency` in flight,
AES-256-GCM, binary frames. Prints a Markdown table and the machine's load average.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "tests"))
from helpers import ROOT, start_broker  # noqa: E402

from psimbols import connect, generate  # noqa: E402

NODE = r"""
import { connect } from "./dist/client/node.js";
import { generateSigningKey } from "./dist/shared/crypto.js";
const [url, fp, H, R, C] = process.argv.slice(1);
const keys = [];
for (let i = 0; i < +H; i++) keys.push(await generateSigningKey());
const times = [];
for (const key of keys) {
  const t = performance.now();
  const c = await connect(url, { key, serverKey: fp, reconnect: false, renew: false, channelTypes: ["AES-256-GCM"], knownServersFile: false });
  times.push(performance.now() - t);
  await c.close();
}
const c = await connect(url, { key: await generateSigningKey(), serverKey: fp, reconnect: false, channelTypes: ["AES-256-GCM"], knownServersFile: false });
let next = 0;
const t0 = performance.now();
await Promise.all(Array.from({ length: +C }, async () => { while (next++ < +R) await c.request("echo", { n: 1 }); }));
const secs = (performance.now() - t0) / 1000;
await c.close();
console.log(JSON.stringify({ times, rps: +R / secs }));
"""


async def python_side(url: str, fp: str, handshakes: int, requests: int, conc: int) -> tuple[list[float], float]:
    keys = [generate() for _ in range(handshakes)]
    times = []
    for k in keys:
        t = time.perf_counter()
        c = await connect(url, k, server_key=fp, reconnect=False, renew=False, channel_types=["AES-256-GCM"])
        times.append((time.perf_counter() - t) * 1000)
        await c.close()
    c = await connect(url, generate(), server_key=fp, reconnect=False, channel_types=["AES-256-GCM"])
    left = [requests]

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await c.request("echo", {"n": 1})

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    rps = requests / (time.perf_counter() - t0)
    await c.close()
    return times, rps


async def main() -> None:
    a = argparse.ArgumentParser()
    a.add_argument("--handshakes", type=int, default=50)
    a.add_argument("--requests", type=int, default=5000)
    a.add_argument("--concurrency", type=int, default=32)
    o = a.parse_args()
    b = await start_broker(["--hellos-per-address", "1000000", "--hellos-per-second", "100000"])
    try:
        py_times, py_rps = await python_side(b.url, b.fingerprint, o.handshakes, o.requests, o.concurrency)
        p = await asyncio.create_subprocess_exec("node", "--input-type=module", "-e", NODE, b.url, b.fingerprint, str(o.handshakes), str(o.requests), str(o.concurrency), cwd=ROOT, stdout=asyncio.subprocess.PIPE)
        out, _ = await p.communicate()
        node = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        b.stop()
    import cryptography
    import websockets

    def row(name: str, times: list[float], rps: float) -> str:
        return f"| {name} | {statistics.median(times):.1f} ms | {statistics.quantiles(times, n=10)[-1]:.1f} ms | {rps:,.0f} |"

    print(f"{o.handshakes} handshakes each (X25519, Ed25519 identity, AES-256-GCM); {o.requests} echo requests on one channel, {o.concurrency} in flight")
    print("| client | handshake, median | handshake, p90 | requests/s |")
    print("|---|---|---|---|")
    print(row(f"Python {sys.version.split()[0]} (cryptography {cryptography.__version__}, websockets {websockets.__version__})", py_times, py_rps))
    print(row(f"Node {os.popen('node --version').read().strip()}", node["times"], node["rps"]))
    print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    asyncio.run(main())
