"""podman-compose 1.0.3 with the Compose Specification's merge rule for
`command` and `entrypoint`: a later file replaces them. podman-compose 1.0.3
appends one list to the other instead, which turns the Sentinel override's
Redis command into `redis-server redis-server --save ...`. Everything else is
podman-compose itself (docs/COMPOSE.md)."""
import sys

import podman_compose

_merge = podman_compose.rec_merge_one


def rec_merge_one(target, source):
    for key in ("command", "entrypoint"):
        if key in source and isinstance(target, dict):
            target.pop(key, None)
    return _merge(target, source)


podman_compose.rec_merge_one = rec_merge_one
sys.exit(podman_compose.main())
