#!/bin/sh
# As the official redis image's entrypoint: options alone run redis-server.
set -e
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then set -- redis-server "$@"; fi
exec "$@"
