#!/usr/bin/env python3
"""A psimbols backend in Python, standard library only (docs/BACKEND.md).

Two endpoints, both POST, both verified as Standard Webhooks 1.0 says:

  /rpc        the upstream: `psimbols serve --upstream http://HOST:PORT/rpc`
              ops kv.put {"key", "value"} and kv.get {"key"}, one store per
              verified identity (its fingerprint), and app.whoami; also batches
              (`--upstream-batch '*'`, docs/BACKEND.md "Batches"): one line
              {"id", "data"|"error"} per request, each sent as a chunk when done
  /authorize  the authorize hook: `psimbols serve --authorize http://HOST:PORT/authorize`
              allows the fingerprints of the allow-list, refuses the others.

Each endpoint checks the signature with its own secret, and the body's
"kind" ("request" at /rpc, "authorize" at /authorize): a message signed for
another destination, or meant for another purpose, is refused.

Settings (environment), the broker's names (docs/BACKEND.md section 1):
  PSIMBOLS_UPSTREAM_SECRET_DEFAULT  the secret of /rpc (the broker's default route),
                            "whsec_..." (two, space-separated, during a rotation)
  PSIMBOLS_AUTHORIZE_SECRET the secret of /authorize
  PSIMBOLS_UPSTREAM_SECRET  the shared secret, used where the two above are not set
  APP_ALLOW                 comma-separated fingerprints allowed by /authorize,
                            or "*" for every key (default "*")
  APP_HOST, APP_PORT        where to listen (default 127.0.0.1:8080; port 0 = any free one)
  APP_REDIS_URL             optional: read the broker's lifecycle events from its Redis
                            stream (redis://[:password@]host:port[/db]) with a consumer
                            group, and keep each identity's latest ones (op app.events)
  APP_EVENTS_STREAM         the stream (default psimbols:events)
  APP_EVENTS_GROUP          the consumer group (default backend-python)
  APP_EVENTS_CONSUMER       this reader's name in the group (default the host name)

Prints "backend listening on http://HOST:PORT" once ready.
"""
import base64
import hashlib
import hmac
import json
import os
import socket
import sys
import threading
import time
from collections import deque
from urllib.parse import urlparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_S = 300          # Standard Webhooks: refuse timestamps older or newer than 5 minutes
MAX_BODY = 8 * 1024 * 1024 # the broker sends less (a batch: up to 64 requests); refuse more without reading it
SEEN_KEEP_S = 2 * TOLERANCE_S


def load_secrets(own):
    """The raw keys of the "whsec_<base64>" secrets (white-space separated) in the
    variable `own`, else in the shared PSIMBOLS_UPSTREAM_SECRET."""
    name = own if os.environ.get(own) else "PSIMBOLS_UPSTREAM_SECRET"
    keys = []
    for part in (os.environ.get(name) or "").split():
        if not part.startswith("whsec_"):
            raise SystemExit(name + ": expected whsec_ followed by base64")
        keys.append(base64.b64decode(part[len("whsec_"):], validate=True))
    if not keys:
        raise SystemExit(own + " (or the shared PSIMBOLS_UPSTREAM_SECRET) is required")
    return keys


RPC_SECRETS = load_secrets("PSIMBOLS_UPSTREAM_SECRET_DEFAULT")
AUTHORIZE_SECRETS = load_secrets("PSIMBOLS_AUTHORIZE_SECRET")
# path -> (the secrets that sign its calls, the kinds of body it takes)
ENDPOINTS = {"/rpc": (RPC_SECRETS, ("request", "batch")), "/authorize": (AUTHORIZE_SECRETS, ("authorize",))}
ALLOW = {f.strip() for f in os.environ.get("APP_ALLOW", "*").split(",") if f.strip()}

lock = threading.Lock()
stores = {}   # fingerprint -> {key: value}
events = {}   # fingerprint -> deque of its latest lifecycle events (from the Redis stream)
EVENTS_KEPT = 50
seen = {}     # webhook-id -> (time, answer): a repeated message id runs once


def verify(headers, body, now=None, secrets=None):
    """True when the headers carry a valid, fresh signature of body under one of
    `secrets` (default: the /rpc ones), as Standard Webhooks 1.0 says."""
    msg_id = headers.get("webhook-id")
    ts = headers.get("webhook-timestamp")
    sigs = headers.get("webhook-signature")
    if not msg_id or not ts or not sigs or not ts.isdigit():
        return False
    now = int(time.time()) if now is None else now
    if abs(now - int(ts)) > TOLERANCE_S:
        return False
    signed = msg_id.encode() + b"." + ts.encode() + b"." + body
    for key in RPC_SECRETS if secrets is None else secrets:
        want = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for sig in sigs.split(" "):
            version, _, value = sig.partition(",")
            if version == "v1" and hmac.compare_digest(value, want):
                return True
    return False


def once(msg_id, run):
    """Runs run() once per message id and answers a repeat with the first answer:
    a request the broker gave up on (timeout) may arrive again under the same id."""
    now = time.time()
    with lock:
        for k in [k for k, (t, _) in seen.items() if now - t > SEEN_KEEP_S]:
            del seen[k]
        if msg_id in seen:
            return seen[msg_id][1]
    answer = run()
    with lock:
        seen[msg_id] = (now, answer)
    return answer


def rpc(req):
    """The upstream: one request body in, one answer out."""
    who = req["identity"]["fingerprint"]
    op, data = req["op"], req.get("data") or {}
    with lock:
        store = stores.setdefault(who, {})
        if op == "kv.put":
            if not isinstance(data, dict) or not isinstance(data.get("key"), str):
                return {"error": {"code": "bad_request", "message": "kv.put needs {key: string, value}"}}
            store[data["key"]] = data.get("value")
            return {"data": {"ok": True, "identity": who}}
        if op == "kv.get":
            if not isinstance(data, dict) or not isinstance(data.get("key"), str):
                return {"error": {"code": "bad_request", "message": "kv.get needs {key: string}"}}
            return {"data": {"value": store.get(data["key"]), "identity": who}}
        if op == "app.events":
            return {"data": list(events.get(who, ()))}
        if op == "app.whoami":
            return {"data": {"identity": who, "channel": req["channel"], "node": req["node"], "info": req.get("info")}}
    return {"error": {"code": "not_found", "message": "no such op"}}


def authorize(req):
    who = req["identity"]["fingerprint"]
    if "*" in ALLOW or who in ALLOW:
        return {"allow": True, "info": {"allowed_by": "allow-list"}}
    return {"allow": False}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive: the broker pools its connections
    # TCP_NODELAY: an answer is two writes (headers, then body); without it the
    # second waits for the broker's delayed ACK, about 40 ms per call (docs/BACKEND.md).
    disable_nagle_algorithm = True

    def do_POST(self):
        length = self.headers.get("content-length")
        if length is None or not length.isdigit() or int(length) > MAX_BODY:
            return self.answer(413, {"error": "body missing or too large"})
        body = self.rfile.read(int(length))
        headers = {k.lower(): v for k, v in self.headers.items()}
        if self.path not in ENDPOINTS:
            return self.answer(404, {"error": "not found"})
        secrets, kinds = ENDPOINTS[self.path]
        # The bytes as read: the broker sends non-ASCII text as raw UTF-8, and a
        # re-serialisation (json.dumps escapes it) would not match the signature.
        if not verify(headers, body, secrets=secrets):
            return self.answer(401, {"error": "bad or stale signature"})
        req = json.loads(body)
        if not isinstance(req, dict) or req.get("kind") not in kinds:
            return self.answer(400, {"error": "this endpoint takes kind " + " or ".join(kinds)})
        if req["kind"] == "batch":
            return self.batch(req)
        if self.path == "/rpc":
            return self.answer(200, once(headers["webhook-id"], lambda: rpc(req)))
        return self.answer(200, authorize(req))

    def batch(self, msg):
        """A batch (its signature verified over the whole body): one line per request, each
        sent as its own chunk as soon as it is done. These ops are instant, so they run in
        turn; an upstream with slow ops runs them concurrently, so that one slow request
        holds up no other line (docs/BACKEND.md "Batches")."""
        self.send_response(200)
        self.send_header("content-type", "application/x-ndjson")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for req in msg.get("requests") or []:
            if not isinstance(req, dict) or req.get("kind") != "request" or not isinstance(req.get("id"), str):
                continue  # no line: that request alone is unavailable
            answer = once(req["id"], lambda: rpc(req))
            line = (json.dumps(dict(id=req["id"], **answer)) + "\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
        self.wfile.write(b"0\r\n\r\n")

    def answer(self, status, obj):
        # ensure_ascii (the default): non-ASCII text goes out as \u escapes, which the
        # broker decodes, so every string reaches the client exactly, a lone surrogate
        # too (ensure_ascii=False makes .encode() raise on one). Each escaped character
        # counts 6 bytes (an emoji 12) of the answer bound (docs/BACKEND.md "Answer").
        out = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, fmt, *args):
        if os.environ.get("APP_VERBOSE"):
            sys.stderr.write("backend: " + (fmt % args) + "\n")


# ---------------------------------------------------------------- events reader
# The broker appends every lifecycle event to a Redis Stream (docs/BACKEND.md
# "Events"): XADD psimbols:events ... type <type> identity <fingerprint> event <JSON>.
# A consumer group reads it across all nodes and after this process's restarts:
# what was read but not acknowledged is read again first (at least once).

class Redis:
    """Just enough RESP2 over a socket for XGROUP, XREADGROUP and XACK."""

    def __init__(self, url):
        u = urlparse(url)
        self.sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=30)
        self.buf = self.sock.makefile("rb")
        if u.password:
            self.call("AUTH", u.password)
        if u.path and u.path.strip("/"):
            self.call("SELECT", u.path.strip("/"))

    def call(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))
        return self.read()

    def read(self):
        line = self.buf.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.buf.read(n + 2)[:-2]
            return data.decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RuntimeError("unexpected reply from redis")


def handle_event(fields):
    """One stream entry: fields type, identity, event (the JSON of the event)."""
    ev = json.loads(fields["event"])
    with lock:
        kept = events.setdefault(fields["identity"], deque(maxlen=EVENTS_KEPT))
        kept.append({"id": ev["id"], "type": ev["type"], "time": ev["time"], "node": ev["node"], "data": ev.get("data", {})})
    if os.environ.get("APP_VERBOSE"):
        sys.stderr.write(f"backend: event {ev['type']} {fields['identity']} {ev['id']}\n")


def read_events(url, stream, group, consumer):
    backoff = 0.2
    while True:
        try:
            r = Redis(url)
            try:
                r.call("XGROUP", "CREATE", stream, group, "0", "MKSTREAM")
            except RuntimeError as e:
                if "BUSYGROUP" not in str(e):
                    raise
            start = "0"   # first what this consumer read before but did not acknowledge, then new entries
            backoff = 0.2
            while True:
                reply = r.call("XREADGROUP", "GROUP", group, consumer, "COUNT", 100, "BLOCK", 5000, "STREAMS", stream, start)
                entries = reply[0][1] if reply else []
                if start == "0" and not entries:
                    start = ">"
                    continue
                for entry_id, flat in entries:
                    if flat is not None:   # None: trimmed out of the stream meanwhile
                        handle_event(dict(zip(flat[0::2], flat[1::2])))
                    r.call("XACK", stream, group, entry_id)
        except (OSError, ConnectionError, RuntimeError, ValueError, KeyError) as e:
            sys.stderr.write(f"backend: events reader: {e}; again in {backoff:.1f} s\n")
            time.sleep(backoff)
            backoff = min(backoff * 2, 10)


def main():
    host = os.environ.get("APP_HOST", "127.0.0.1")
    port = int(os.environ.get("APP_PORT", "8080"))
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    redis_url = os.environ.get("APP_REDIS_URL")
    if redis_url:
        stream = os.environ.get("APP_EVENTS_STREAM", "psimbols:events")
        group = os.environ.get("APP_EVENTS_GROUP", "backend-python")
        # A stable name: after a restart this consumer first reads again what it had not acknowledged.
        consumer = os.environ.get("APP_EVENTS_CONSUMER", socket.gethostname())
        threading.Thread(target=read_events, args=(redis_url, stream, group, consumer), daemon=True).start()
        print(f"backend reading events from {stream} (group {group})", flush=True)
    print(f"backend listening on http://{host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
