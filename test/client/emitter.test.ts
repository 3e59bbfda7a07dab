import { test } from "uvu";
import * as assert from "uvu/assert";
import { Emitter } from "../../client/emitter.js";

interface Events {
  state: [next: string, prev: string];
  tick: [];
  data: [value: number];
}

test("calls listeners in order with the emitted arguments", () => {
  const e = new Emitter<Events>();
  const seen: string[] = [];
  e.on("state", (n, p) => seen.push(`a:${p}->${n}`));
  e.on("state", (n, p) => seen.push(`b:${p}->${n}`));
  assert.ok(e.emit("state", "ready", "connecting"));
  assert.equal(seen, ["a:connecting->ready", "b:connecting->ready"]);
});

test("emit without listeners returns false and does not throw, even for 'error'-like events", () => {
  const e = new Emitter<Events & { error: [Error] }>();
  assert.not.ok(e.emit("tick"));
  assert.not.ok(e.emit("error", new Error("x")));
});

test("the function returned by on() removes the listener", () => {
  const e = new Emitter<Events>();
  let n = 0;
  const off = e.on("tick", () => n++);
  e.emit("tick");
  off();
  e.emit("tick");
  assert.is(n, 1);
  assert.is(e.listenerCount("tick"), 0);
});

test("off() removes one listener and ignores unknown ones", () => {
  const e = new Emitter<Events>();
  const got: number[] = [];
  const a = (v: number) => got.push(v);
  const b = (v: number) => got.push(-v);
  e.on("data", a);
  e.on("data", b);
  e.off("data", a);
  e.off("data", () => {});
  e.off("tick", () => {});
  e.emit("data", 2);
  assert.equal(got, [-2]);
});

test("adding the same function twice registers it once", () => {
  const e = new Emitter<Events>();
  let n = 0;
  const f = () => n++;
  e.on("tick", f);
  e.on("tick", f);
  e.emit("tick");
  assert.is(n, 1);
  assert.is(e.listenerCount("tick"), 1);
});

test("once() fires a single time", () => {
  const e = new Emitter<Events>();
  const got: number[] = [];
  e.once("data", (v) => got.push(v));
  e.emit("data", 1);
  e.emit("data", 2);
  assert.equal(got, [1]);
  assert.is(e.listenerCount("data"), 0);
});

test("once() can be cancelled before it fires", () => {
  const e = new Emitter<Events>();
  let n = 0;
  const off = e.once("tick", () => n++);
  off();
  e.emit("tick");
  assert.is(n, 0);
});

test("listeners added or removed during an emit take effect on the next emit", () => {
  const e = new Emitter<Events>();
  const seen: string[] = [];
  const late = () => seen.push("late");
  const second = () => seen.push("second");
  e.on("tick", () => {
    seen.push("first");
    e.on("tick", late);
    e.off("tick", second);
  });
  e.on("tick", second);
  e.emit("tick");
  assert.equal(seen, ["first", "second"]);
  seen.length = 0;
  e.emit("tick");
  assert.equal(seen, ["first", "late"]);
});

test("a throwing listener does not stop the others and is reported with its event", () => {
  const reported: [unknown, PropertyKey][] = [];
  const e = new Emitter<Events>((err, event) => reported.push([err, event]));
  const boom = new Error("boom");
  let after = 0;
  e.on("tick", () => {
    throw boom;
  });
  e.on("tick", () => after++);
  e.emit("tick");
  assert.is(after, 1);
  assert.equal(reported, [[boom, "tick"]]);
});

test("removeAllListeners clears one event or all", () => {
  const e = new Emitter<Events>();
  e.on("tick", () => {});
  e.on("data", () => {});
  e.removeAllListeners("tick");
  assert.is(e.listenerCount("tick"), 0);
  assert.is(e.listenerCount("data"), 1);
  e.removeAllListeners();
  assert.is(e.listenerCount("data"), 0);
});

test("rejects a listener that is not a function", () => {
  const e = new Emitter<Events>();
  assert.throws(() => e.on("tick", "nope" as unknown as () => void), TypeError);
});

test.run();
