#!/bin/sh
# Starts a Redis server of a Sentinel setup so that it never comes back as a
# second, empty master. Usage:
#
#   redis-start.sh SELF_HOST SELF_PORT [redis-server options...]
#
# SELF_HOST SELF_PORT: this server as the sentinels name it (its announced
# address). Environment:
#   PSIMBOLS_SENTINELS       "host:port host:port ..." (default sentinel:26379)
#   PSIMBOLS_MASTER_NAME     the monitored name (default psimbols)
#   PSIMBOLS_INITIAL_MASTER  "host port" to follow when no sentinel answers
#                            (the first start, before the sentinels run);
#                            empty: start as the master
#   PSIMBOLS_FAILOVER_WAIT   seconds to wait, when the sentinels still name
#                            this server, for them to promote a replica
#                            (default 6: deploy/sentinel.conf's 2 s
#                            down-after plus the election)
#
# Why: a master that died and restarts at once (a container restart policy,
# a supervisor) holds no data here (no persistence). Started as a master, it
# wipes its replica when the sentinels had not yet noticed the death, or
# serves an empty dataset as master to any client that asked a sentinel
# which had not yet heard of the failover (lost channels, pushes numbered
# from 1 again). So: if any sentinel names another master, follow it; if
# they all still name this server, wait for them to fail over, then ask
# again; only then start as the master.
set -eu

self_host=$1
self_port=$2
shift 2
name=${PSIMBOLS_MASTER_NAME:-psimbols}
wait=${PSIMBOLS_FAILOVER_WAIT:-6}

# Prints the master most answering sentinels name, other than this server:
# "host port", or "self" when they all name this server, or "" when none answers.
ask() {
  answers=""
  for s in ${PSIMBOLS_SENTINELS:-sentinel:26379}; do
    a=$(redis-cli -h "${s%:*}" -p "${s##*:}" --raw SENTINEL get-master-addr-by-name "$name" 2>/dev/null | tr '\n' ' ' | sed 's/ *$//') || a=""
    if printf '%s' "$a" | grep -q -E '^[^ ]+ [0-9]+$'; then
      answers="$answers$a
"
    elif [ -n "$a" ]; then
      # Reachable but refusing (a password, not a sentinel): guessing "master" could wipe
      # the real one's replica, so stop; a restart policy tries again. (Sentinels with a
      # password: set REDISCLI_AUTH, which redis-cli reads.)
      echo "redis-start: $s answered \"$a\", not a master's address; not starting" >&2
      exit 1
    fi # no output: unreachable, or the name is unknown there
  done
  [ -n "$answers" ] || { echo ""; return; }
  other=$(printf '%s' "$answers" | grep -v -x -F "$self_host $self_port" | sort | uniq -c | sort -rn | head -n 1 | sed 's/^ *[0-9]* //')
  if [ -n "$other" ]; then echo "$other"; else echo self; fi
}

master=$(ask)
if [ "$master" = self ]; then
  echo "redis-start: the sentinels still name $self_host:$self_port as master; waiting $wait s for a failover" >&2
  sleep "$wait"
  master=$(ask)
fi
case "$master" in
  self)
    echo "redis-start: starting as the master (the sentinels name this server)" >&2
    exec redis-server "$@" ;;
  "")
    if [ -n "${PSIMBOLS_INITIAL_MASTER:-}" ]; then
      echo "redis-start: no sentinel answers; starting as a replica of $PSIMBOLS_INITIAL_MASTER" >&2
      # shellcheck disable=SC2086 # "host port": two arguments
      exec redis-server "$@" --replicaof $PSIMBOLS_INITIAL_MASTER
    fi
    echo "redis-start: no sentinel answers; starting as the master" >&2
    exec redis-server "$@" ;;
  *)
    echo "redis-start: starting as a replica of $master (named by the sentinels)" >&2
    # shellcheck disable=SC2086
    exec redis-server "$@" --replicaof $master ;;
esac
