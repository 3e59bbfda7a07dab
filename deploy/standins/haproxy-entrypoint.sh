#!/bin/sh
# As the official haproxy image's entrypoint: `haproxy ...` runs in the
# foreground in master-worker mode (-W -db), logging to stdout.
set -e
if [ "${1#-}" != "$1" ]; then set -- haproxy "$@"; fi
if [ "$1" = haproxy ]; then shift; set -- haproxy -W -db "$@"; fi
exec "$@"
