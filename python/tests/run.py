"""Runs the Python client's tests and prints uvu's totals (`  Total:`, `  Passed:`) for bin/test_psimbols.sh.

    PYTHONPATH=python python3 python/tests/run.py [substring]

Each `test_*` function of `test_*.py` here is one test (async ones get their own event loop and
a 90 s timeout); the vector runner's checks (psimbols.vectors) count one each.
"""
from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
TEST_TIMEOUT = 90.0

import helpers  # noqa: E402


def main() -> int:
    pattern = sys.argv[1] if len(sys.argv) > 1 else ""
    passed = failed = 0
    t0 = time.monotonic()
    if pattern == "" or pattern in "vectors":
        from psimbols import vectors

        r, n = vectors.run_folder(os.path.join(HERE, "..", "..", "test", "vectors"))
        print(f"  {'✓' if not r.failed else '✘'} vectors: {n} files, {r.passed} passed, {r.failed} failed", flush=True)
        passed += r.passed
        failed += r.failed
    for name in sorted(os.listdir(HERE)):
        if not (name.startswith("test_") and name.endswith(".py")):
            continue
        mod = importlib.import_module(name[:-3])
        for fname, fn in inspect.getmembers(mod, inspect.isfunction):
            if not fname.startswith("test_") or fn.__module__ != mod.__name__:
                continue
            full = f"{name[:-3]}.{fname}"
            if pattern and pattern not in full:
                continue
            start = time.monotonic()
            try:
                if inspect.iscoroutinefunction(fn):
                    asyncio.run(asyncio.wait_for(fn(), TEST_TIMEOUT))
                else:
                    fn()
                passed += 1
                print(f"  ✓ {full} ({time.monotonic() - start:.1f} s)", flush=True)
            except BaseException as e:  # a test that fails, times out or crashes
                if isinstance(e, KeyboardInterrupt):
                    raise
                failed += 1
                print(f"  ✘ {full}: {type(e).__name__}: {e}", flush=True)
                traceback.print_exc()
            finally:
                helpers.kill_all()
    print(f"\n  Total:     {passed + failed}\n  Passed:    {passed}\n  Skipped:   0\n  Duration:  {time.monotonic() - t0:.2f}s\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
