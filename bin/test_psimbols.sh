#!/usr/bin/env bash
# The project's test command: installs what is missing, type-checks, then runs
# every uvu test file (dist/test/**/*.test.js) in its own process (those that
# mostly wait in a second lane beside the others, see "background" below), and
# ends with one line "N passed, N failed, N skipped". Long runs (soak, bench) are
# npm scripts. A test that cannot run here is registered as skipped
# (test/helpers/skip.ts: uvu's "Skipped:" line), never counted as passed; a
# file that crashes, times out, or runs no test at all counts as one failure.
set -u
cd "$(dirname "$0")/.."
export NO_COLOR=1 FORCE_COLOR=0

need_apt() {
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "error: $1 is missing and cannot be installed here (needs root and apt-get)" >&2
    echo "hint: install the Debian package '$2' and run again" >&2
    exit 1
  fi
  echo "installing $2 through apt ..." >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null) || {
    echo "error: apt-get could not install $2" >&2
    exit 1
  }
}

# Dependencies: from the lock file, only when missing or stale. A node_modules that is a link to
# another checkout's folder is that checkout's to install: npm ci would empty the folder it points to.
if [ -L node_modules ]; then
  [ -f node_modules/.package-lock.json ] || echo "warning: node_modules links to a folder npm ci did not fill; not reinstalled here" >&2
elif [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "installing npm packages from package-lock.json ..." >&2
  [ -e dist ] || built_fresh=1 # npm ci's `prepare` builds dist/ (bin/prepare.mjs): from nothing, it is this checkout's build
  npm ci --no-audit --no-fund --loglevel=error || { echo "error: npm ci failed" >&2; echo "0 passed, 1 failed, 0 skipped"; exit 1; }
fi
command -v redis-server >/dev/null || need_apt redis-server redis-server
command -v haproxy >/dev/null || need_apt haproxy haproxy
for m in cryptography websockets; do /usr/bin/python3 -c "import $m" 2>/dev/null || need_apt "python3 module $m" "python3-$m"; done # python/ (test/python)
# Partition tests (test/partition/) make network namespaces with ip and tc; without root they skip.
if [ "$(id -u)" = 0 ] && ! command -v tc >/dev/null; then need_apt tc iproute2; fi
[ -x "${PSIMBOLS_CHROMIUM:-/usr/bin/chromium}" ] || need_apt chromium chromium

# Type-check and build (the browser config has no Node types: a Node import in shared/ or the client core fails here).
if [ -z "${built_fresh:-}" ] || [ ! -f dist/cli/main.js ] || [ ! -f dist/browser/psimbols.js ]; then
  rm -rf dist
  if ! npx tsc -p tsconfig.json; then echo "type-check failed" >&2; echo "0 passed, 1 failed, 0 skipped"; exit 1; fi
  if ! node bin/build-browser.mjs; then echo "browser build failed" >&2; echo "0 passed, 1 failed, 0 skipped"; exit 1; fi
fi
if ! npx tsc -p tsconfig.browser.json; then echo "browser type-check failed" >&2; echo "0 passed, 1 failed, 0 skipped"; exit 1; fi

# Files that mostly wait (on Sentinel failovers, Redis outages, network namespaces with delays, time
# windows of the server API, the hostile rows' closes and resets): at most half a core each, under
# four minutes in all, none with a latency bound. They run one after another beside the other files,
# which run one after another too.
background="deploy/redis-start deploy/scale-dns partition/partition server/api/api-limits server/api/failures server/store-loss server/store-sentinel server/store hostile/matrix hostile/matrix-chacha hostile/resets"
is_background() { case " $background " in *" ${1#dist/test/} "*) return 0 ;; esac; return 1; }

out_dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$out_dir"' EXIT
# Runs one file: its output in $out_dir/N.out, its "passed failed skipped" in $out_dir/N.sum.
run_one() {
  local f=$1 n=$2 out rc clean total ok skip bad
  out=$(timeout 300 node "$f" 2>&1)
  rc=$?
  clean=$(printf '%s\n' "$out" | sed 's/\x1b\[[0-9;]*m//g')
  total=$(printf '%s\n' "$clean" | sed -n 's/^ *Total: *\([0-9][0-9]*\).*/\1/p' | awk '{s+=$1} END {print s+0}')
  ok=$(printf '%s\n' "$clean" | sed -n 's/^ *Passed: *\([0-9][0-9]*\).*/\1/p' | awk '{s+=$1} END {print s+0}')
  skip=$(printf '%s\n' "$clean" | sed -n 's/^ *Skipped: *\([0-9][0-9]*\).*/\1/p' | awk '{s+=$1} END {print s+0}')
  bad=$((total - ok))
  if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then
    bad=1 # the file crashed or timed out outside any test
    out="$out
!!! ${f#dist/} exited with $rc"
  elif [ "$total" -eq 0 ] && [ "$skip" -eq 0 ]; then
    bad=1 # a file that runs no test says nothing
    out="$out
!!! ${f#dist/} ran no test"
  fi
  printf '%s\n' "$out" >"$out_dir/$n.out"
  echo "$ok $bad $skip" >"$out_dir/$n.sum"
}

pattern="${1:-}"
files=$(find dist/test -name '*.test.js' | sort | while read -r f; do case "$f" in *"$pattern"*) echo "$f" ;; esac; done)
n=0
bg_files=""
for f in $files; do
  n=$((n + 1))
  is_background "${f%.test.js}" && bg_files="$bg_files $n:$f"
done
(for e in $bg_files; do run_one "${e#*:}" "${e%%:*}"; done) &
bg=$!
passed=0
failed=0
skipped=0
tally() { # prints file $2's output (N $1) and adds its counts
  [ -n "${3:-}" ] || echo "=== ${2#dist/}"
  [ -f "$out_dir/$1.sum" ] || echo "0 1 0" >"$out_dir/$1.sum" # never finished: one failure
  touch "$out_dir/$1.out"
  cat "$out_dir/$1.out"
  grep '^!!! ' "$out_dir/$1.out" >&2
  read -r ok bad skip <"$out_dir/$1.sum"
  passed=$((passed + ok))
  failed=$((failed + bad))
  skipped=$((skipped + skip))
}
n=0
for f in $files; do
  n=$((n + 1))
  is_background "${f%.test.js}" && continue
  echo "=== ${f#dist/}"
  run_one "$f" "$n"
  tally "$n" "$f" headed
done
wait "$bg"
for e in $bg_files; do tally "${e%%:*}" "${e#*:}"; done
echo "${passed} passed, ${failed} failed, ${skipped} skipped"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
