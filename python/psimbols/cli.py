"""`python3 -m psimbols keygen|fingerprint|call`: the Node CLI's commands, output shapes, `error:`/`hint:` lines and exit codes."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any, NoReturn

from .encoding import dumps
from .errors import ErrorCode, PsimbolsError
from .keys import KEY_TYPE_NAMES, generate_key_file, load_key, load_public_key, public_key_path
from .known_servers import ServerKeyLearnt, default_known_servers_path

HINTS = {
    ErrorCode.SERVER_KEY_MISMATCH: "the server's key differs from the pinned or known one; a rotation announced in advance (`psimbols server-key next`) is followed by clients that connected during it; otherwise, if the key was replaced on purpose, remove its line from the known-servers file",
    ErrorCode.CONNECTION_LOST: "is the broker running at that URL? start one with `psimbols serve`",
    ErrorCode.FORBIDDEN: "the service refused this key: a closed service serves only registered keys (ask its operator to run `psimbols keys add` with your public key), and any service refuses keys its operator blocked",
    ErrorCode.UNSUPPORTED: "the server does not accept what this client offered",
    ErrorCode.TOO_MANY: "rate limited: wait a little and try again",
    ErrorCode.UNAVAILABLE: "the broker answered that its store (Redis) is down: try again shortly",
}


class CliError(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # exit 1 with an error: line, as commander does
        print(f"error: {message}", file=sys.stderr)
        print("hint: add --help for usage", file=sys.stderr)
        sys.exit(1)


def _required(value: str | None, flag: str) -> str:
    if value is None:
        raise CliError(f"required option '{flag}' not specified", "add --help for usage")
    return value


def cmd_keygen(o: argparse.Namespace) -> None:
    out = _required(o.out, "-o, --out <file>")
    try:
        key = generate_key_file(o.type, out, force=o.force, public_file=not o.no_public)
    except PsimbolsError as e:
        if " exists; " in e.message and e.hint is None:
            e.hint = "pass --force to overwrite it, or choose another file with -o"
        raise
    public_file = None if o.no_public else public_key_path(out)
    line = {"public_key": key.public.wire(), "fingerprint": key.fingerprint, **({"public_file": public_file} if public_file else {})}
    print(dumps(line))
    print(f"private key: {out} (mode 0600, keep it secret)" + (f"\npublic key:  {public_file} (give this one to `psimbols keys add`)" if public_file else ""), file=sys.stderr)


def cmd_fingerprint(o: argparse.Namespace) -> None:
    print(load_public_key(o.file).fingerprint)


def _load_identity(file: str, flag: str):  # type: ignore[no-untyped-def]
    try:
        return load_key(file)
    except PsimbolsError as e:
        if e.code in (ErrorCode.UNSUPPORTED, ErrorCode.BAD_REQUEST) and e.hint is None:
            e.hint = f"{flag} takes a PKCS#8 PEM private key of type Ed25519, ECDSA P-256 or RSA; make one with `psimbols keygen -o FILE`"
        raise


async def _call(o: argparse.Namespace) -> None:
    from .client import KNOWN_SERVERS_UNREADABLE, connect

    key_file = _required(o.key, "--key <file>")
    try:
        data = json.loads(o.json, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    except ValueError:
        raise PsimbolsError(ErrorCode.BAD_REQUEST, "request data is not valid JSON") from None
    key = _load_identity(key_file, "--key")
    known = o.known_servers or default_known_servers_path()
    timeout = o.timeout / 1000

    def learnt(l: ServerKeyLearnt) -> None:
        print(f"psimbols: learnt the key of {l.url}: {l.fingerprint}\npsimbols: recorded in {l.path}; a different key from this server will be refused", file=sys.stderr)

    try:
        # A busy node's refusal carries how long to wait (PROTOCOL.md §11.4): wait it and try again
        # while the wait fits in --timeout, as the Node CLI; a refusal without the hint is final.
        deadline = time.monotonic() + timeout
        while True:
            try:
                client = await connect(
                    o.url, key, server_key=o.server_key, known_servers_file=known, on_server_key_learnt=learnt,
                    request_timeout=timeout, kem=o.kem, reconnect=False, renew=False,
                )
                break
            except PsimbolsError as e:
                wait = e.retry_after_ms / 1000 if e.code == ErrorCode.TOO_MANY and e.retry_after_ms is not None else None
                if wait is None or time.monotonic() + wait > deadline:
                    raise
                print(f"psimbols: {e.message}; trying again in {e.retry_after_ms} ms", file=sys.stderr)
                await asyncio.sleep(wait)
    except PsimbolsError as e:
        if e.code == ErrorCode.UNSUPPORTED and o.kem == "X-Wing":
            e.hint = "this client has no X-Wing: it does not implement it, whatever cryptography is installed; use --kem X25519 or P-256, or the Node CLI for X-Wing"
        if e.code == ErrorCode.UNAVAILABLE and e.message.startswith(KNOWN_SERVERS_UNREADABLE):
            e.hint = f"fix or remove {known} (one `<url> SHA256:<fingerprint>` a line); this is a local file, not the broker"
        if e.code == ErrorCode.SERVER_KEY_MISMATCH:
            e.hint = (
                "the server's key is not the one --server-key pins: check the fingerprint the broker printed (also at GET /.well-known/psimbols)"
                if o.server_key
                else f"the server's key is not the one recorded in {known}; if the server key was rotated on purpose, remove that server's line from the file"
            )
        raise
    try:
        print(dumps(await client.request(o.op, data, timeout)))
    finally:
        try:
            await client.close()
        except PsimbolsError:
            pass


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python3 -m psimbols", description="psimbols client: a key pair and a URL are all a client needs.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    k = sub.add_parser("keygen", help="generate an identity key (PKCS#8 PEM, mode 0600) and print its public key and fingerprint")
    k.add_argument("--type", choices=list(KEY_TYPE_NAMES), default="ed25519")
    k.add_argument("-o", "--out", help="where to write the private key (required); the public key goes beside it, k.pem -> k.pub.pem")
    k.add_argument("--no-public", action="store_true", help="do not write the public key file")
    k.add_argument("--force", action="store_true", help="overwrite existing files")
    f = sub.add_parser("fingerprint", help="print the fingerprint of a key file (private or public PEM)")
    f.add_argument("file")
    c = sub.add_parser("call", help="make one request and print the response data as JSON")
    c.add_argument("url", help="broker URL, e.g. ws://127.0.0.1:9393/")
    c.add_argument("op", help="operation, e.g. echo")
    c.add_argument("json", nargs="?", default="null", help="request data as JSON")
    c.add_argument("--key", help="identity key (PKCS#8 PEM; required)")
    c.add_argument("--server-key", help="pin the server key (otherwise trust on first use, kept in the known-servers file)")
    c.add_argument("--known-servers", help="known-servers file")
    c.add_argument("--timeout", type=int, default=10_000, help="timeout of the request in ms (the request only: connecting has its own 30 s)")
    c.add_argument("--kem", choices=["X25519", "P-256", "X-Wing"], default="X25519", help="ephemeral KEM of the handshake")
    return p


def main(argv: list[str] | None = None) -> int:
    o = parser().parse_args(argv)
    try:
        if o.command == "keygen":
            cmd_keygen(o)
        elif o.command == "fingerprint":
            cmd_fingerprint(o)
        else:
            asyncio.run(_call(o))
        return 0
    except PsimbolsError as e:
        print(f"error: {e.message} ({e.code.value})", file=sys.stderr)
        hint = e.hint or HINTS.get(e.code)
        if hint:
            print(f"hint: {hint}", file=sys.stderr)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
    return 1
