#!/bin/sh
# The official redis image builds Redis with protected mode off by default, so
# that other containers may connect without a password; Debian's build keeps
# it on. This wrapper, first on PATH, gives Debian's redis-server the image's
# default (an explicit --protected-mode later on the line still wins).
case "${1:-}" in -v|--version|-h|--help|--test-memory) exec /usr/bin/redis-server "$@" ;; esac
case "${1:-}" in
  ""|-*) exec /usr/bin/redis-server --protected-mode no "$@" ;;
  *) conf=$1; shift; exec /usr/bin/redis-server "$conf" --protected-mode no "$@" ;;
esac
