/**
 * The broker's one-timer schedule (server/schedule.ts): time order, cancel,
 * re-entrant adds, long delays in steps, a failing callback, and the heap
 * against a sorted list under random adds and cancels.
 */
import { suite } from "uvu";
import * as assert from "uvu/assert";
import { MAX_TIMER_MS, Schedule, type Slot, type Timers } from "../../server/schedule.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Timers under the test's hand: records each armed delay; `fire()` runs the armed one. */
function manualTimers(): Timers & { armed: { f: () => void; ms: number } | undefined; delays: number[]; fire(): void } {
  const t = {
    armed: undefined as { f: () => void; ms: number } | undefined,
    delays: [] as number[],
    set(f: () => void, ms: number) {
      const h = { f, ms };
      t.armed = h;
      t.delays.push(ms);
      return h;
    },
    clear(h: unknown) {
      if (t.armed === h) t.armed = undefined;
    },
    fire() {
      const a = t.armed;
      t.armed = undefined;
      a?.f();
    },
  };
  return t;
}

const s = suite("schedule");

s("fires in time order on a real timer, not before its time", async () => {
  const fired: [string, number][] = [];
  const sched = new Schedule<string>((item, slot) => fired.push([item, Date.now() - slot.at]));
  const t0 = Date.now();
  sched.add(t0 + 60, "c");
  sched.add(t0 + 20, "a");
  sched.add(t0 + 40, "b");
  assert.is(sched.size, 3);
  assert.is(sched.next, t0 + 20);
  await sleep(150);
  assert.equal(
    fired.map(([i]) => i),
    ["a", "b", "c"],
  );
  for (const [, late] of fired) assert.ok(late >= 0, `fired ${-late} ms early`);
  assert.is(sched.size, 0);
});

s("a time already past fires on the next turn; ties fire in the order added", async () => {
  const fired: string[] = [];
  const sched = new Schedule<string>((item) => fired.push(item));
  const t = Date.now() - 1000;
  sched.add(t, "first");
  sched.add(t, "second");
  sched.add(t - 5, "earlier");
  assert.equal(fired, []);
  await sleep(20);
  assert.equal(fired, ["earlier", "first", "second"]);
});

s("cancel: a cancelled slot never fires, the others do; cancelling twice or after firing is a no-op", async () => {
  const fired: string[] = [];
  const sched = new Schedule<string>((item) => fired.push(item));
  const t0 = Date.now();
  const a = sched.add(t0 + 10, "a");
  const b = sched.add(t0 + 20, "b");
  sched.add(t0 + 30, "c");
  sched.cancel(a); // the earliest: the armed timer finds nothing due and re-arms
  sched.cancel(a);
  sched.cancel(undefined);
  assert.is(a.i, -1);
  assert.is(sched.size, 2);
  await sleep(80);
  assert.equal(fired, ["b", "c"]);
  sched.cancel(b);
  assert.is(sched.size, 0);
});

s("cancelling the last slot disarms the timer", () => {
  const timers = manualTimers();
  const sched = new Schedule<number>(() => assert.unreachable("fired"), { timers, now: () => 0 });
  const x = sched.add(100, 1);
  assert.ok(timers.armed);
  sched.cancel(x);
  assert.is(timers.armed, undefined);
});

s("an earlier slot re-arms the timer for itself; a later one does not", () => {
  const timers = manualTimers();
  let now = 1000;
  const fired: number[] = [];
  const sched = new Schedule<number>((i) => fired.push(i), { timers, now: () => now });
  sched.add(1500, 1);
  sched.add(1800, 2);
  sched.add(1200, 3);
  assert.equal(timers.delays, [500, 200]);
  now = 1200;
  timers.fire();
  assert.equal(fired, [3]);
  assert.is(timers.armed?.ms, 300);
});

s("a timer that fires early (clock behind) fires nothing and re-arms for the rest", () => {
  const timers = manualTimers();
  let now = 0;
  const fired: number[] = [];
  const sched = new Schedule<number>((i) => fired.push(i), { timers, now: () => now });
  sched.add(100, 1);
  now = 98;
  timers.fire();
  assert.equal(fired, []);
  assert.is(timers.armed?.ms, 2);
  now = 100;
  timers.fire();
  assert.equal(fired, [1]);
  assert.is(timers.armed, undefined);
});

s("delays longer than a Node timer holds are waited for in steps", () => {
  const timers = manualTimers();
  let now = 0;
  const fired: number[] = [];
  const sched = new Schedule<number>((i) => fired.push(i), { timers, now: () => now });
  const year = 366 * 86_400_000;
  sched.add(year, 1);
  assert.is(timers.armed?.ms, MAX_TIMER_MS);
  now = MAX_TIMER_MS;
  timers.fire();
  assert.equal(fired, []);
  assert.is(timers.armed?.ms, Math.min(MAX_TIMER_MS, year - MAX_TIMER_MS));
  while (now < year) {
    now += timers.armed!.ms;
    timers.fire();
  }
  assert.equal(fired, [1]);
});

s("a callback may add (due now: fires in the same turn, after the others due) and cancel", () => {
  const timers = manualTimers();
  let now = 0;
  const fired: string[] = [];
  let later: Slot<string> | undefined;
  const sched = new Schedule<string>(
    (item) => {
      fired.push(item);
      if (item === "a") sched.add(now, "from a");
      if (item === "b") sched.cancel(later);
    },
    { timers, now: () => now },
  );
  sched.add(10, "a");
  sched.add(10, "b");
  later = sched.add(20, "never");
  sched.add(30, "c");
  now = 25;
  timers.fire();
  assert.equal(fired, ["a", "b", "from a"]);
  assert.is(timers.armed?.ms, 5);
  now = 30;
  timers.fire();
  assert.equal(fired, ["a", "b", "from a", "c"]);
});

s("a callback that throws: the error goes to onError, the other due slots still fire", () => {
  const timers = manualTimers();
  const errors: unknown[] = [];
  const fired: number[] = [];
  const sched = new Schedule<number>(
    (i) => {
      if (i === 2) throw new Error("boom");
      fired.push(i);
    },
    { timers, now: () => 10, onError: (e) => errors.push(e) },
  );
  for (const i of [1, 2, 3]) sched.add(i, i);
  timers.fire();
  assert.equal(fired, [1, 3]);
  assert.is(errors.length, 1);
  assert.is((errors[0] as Error).message, "boom");
});

s("close drops every slot and the timer", () => {
  const timers = manualTimers();
  const sched = new Schedule<number>(() => assert.unreachable("fired"), { timers, now: () => 0 });
  const a = sched.add(5, 1);
  sched.add(6, 2);
  sched.close();
  assert.is(sched.size, 0);
  assert.is(a.i, -1);
  assert.is(timers.armed, undefined);
});

s("random adds and cancels: fires exactly the live slots, in (time, insertion) order", () => {
  let seed = 12345;
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  for (let round = 0; round < 20; round++) {
    const timers = manualTimers();
    let now = 0;
    const fired: number[] = [];
    const sched = new Schedule<number>((i) => fired.push(i), { timers, now: () => now });
    const live = new Map<number, { at: number; n: number; slot: Slot<number> }>();
    let n = 0;
    for (let k = 0; k < 400; k++) {
      if (live.size > 0 && rand() < 0.35) {
        const keys = [...live.keys()];
        const victim = keys[Math.floor(rand() * keys.length)]!;
        sched.cancel(live.get(victim)!.slot);
        live.delete(victim);
      } else {
        const at = Math.floor(rand() * 50); // many ties
        live.set(n, { at, n, slot: sched.add(at, n) });
        n++;
      }
      assert.is(sched.size, live.size);
    }
    const expected = [...live.values()].sort((a, b) => a.at - b.at || a.n - b.n).map((x) => x.n);
    now = 100;
    timers.fire();
    assert.equal(fired, expected);
    assert.is(sched.size, 0);
  }
});

s.run();
