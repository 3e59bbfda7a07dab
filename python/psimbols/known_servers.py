"""Server keys learnt on first use, as the Node client keeps them (client/node.ts `FileKnownServers`).

One server a line: `<url> <fingerprint>`, or `<url> <fingerprint> next=<fingerprint>`
once the server's key announced its successor (PROTOCOL.md §5.6). Blank lines and
lines starting with `#` are ignored. Default file: `$PSIMBOLS_HOME/known_servers`,
else `~/.psimbols/known_servers`; the same file serves the Node and Python clients.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from .errors import ErrorCode, PsimbolsError

FINGERPRINT = re.compile(r"^SHA256:[A-Za-z0-9+/]{43}$")
NEXT_PREFIX = "next="


def default_known_servers_path() -> str:
    home = os.environ.get("PSIMBOLS_HOME")
    return os.path.join(home, "known_servers") if home else os.path.join(os.path.expanduser("~"), ".psimbols", "known_servers")


class KnownServers(Protocol):
    def get(self, url: str) -> str | None: ...
    def get_next(self, url: str) -> str | None: ...
    def set(self, url: str, fingerprint: str) -> None: ...
    def set_next(self, url: str, fingerprint: str) -> None: ...


class MemoryKnownServers:
    """In memory, per client (the default without a file)."""

    def __init__(self) -> None:
        self._cur: dict[str, str] = {}
        self._next: dict[str, str] = {}

    def get(self, url: str) -> str | None:
        return self._cur.get(url)

    def get_next(self, url: str) -> str | None:
        return self._next.get(url)

    def set(self, url: str, fingerprint: str) -> None:
        self._cur[url] = fingerprint
        self._next.pop(url, None)

    def set_next(self, url: str, fingerprint: str) -> None:
        self._next[url] = fingerprint


@dataclass(frozen=True)
class ServerKeyLearnt:
    url: str
    fingerprint: str
    path: str


def _check(url: str, fp: str) -> None:
    if not url or re.search(r"\s", url):
        raise PsimbolsError(ErrorCode.BAD_REQUEST, '"url" expected a non-empty string without whitespace')
    if not FINGERPRINT.match(fp):
        raise PsimbolsError(ErrorCode.BAD_REQUEST, '"fingerprint" expected "SHA256:" + 43 base64 characters')


class FileKnownServers:
    """The known-servers file; read on every lookup, written with mode 0600 in a 0700 folder."""

    def __init__(self, path: str | None = None, on_learn: Callable[[ServerKeyLearnt], None] | None = None) -> None:
        self.path = path or default_known_servers_path()
        self._on_learn = on_learn

    def _read(self) -> dict[str, tuple[str, str | None]]:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:  # as Node's readFile: bad bytes fail the line's check
                text = f.read()
        except FileNotFoundError:
            return {}
        except OSError:
            raise PsimbolsError(ErrorCode.UNAVAILABLE, f"cannot read the known-servers file {self.path}") from None
        out: dict[str, tuple[str, str | None]] = {}
        for i, raw in enumerate(text.split("\n")):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            nxt = parts[2][len(NEXT_PREFIX):] if len(parts) == 3 and parts[2].startswith(NEXT_PREFIX) else None
            ok = len(parts) >= 2 and FINGERPRINT.match(parts[1]) and (len(parts) == 2 or (len(parts) == 3 and nxt is not None and FINGERPRINT.match(nxt)))
            if not ok:
                raise PsimbolsError(ErrorCode.BAD_REQUEST, f'{self.path}:{i + 1}: expected "<url> SHA256:<fingerprint>" with an optional "next=SHA256:<fingerprint>"')
            out[parts[0]] = (parts[1], nxt)
        return out

    def get(self, url: str) -> str | None:
        e = self._read().get(url)
        return e[0] if e else None

    def get_next(self, url: str) -> str | None:
        e = self._read().get(url)
        return e[1] if e else None

    def set(self, url: str, fingerprint: str) -> None:
        _check(url, fingerprint)
        known = self._read().get(url)
        if known == (fingerprint, None):
            return
        if known is None:
            parent = os.path.dirname(self.path)
            if parent:
                os.makedirs(parent, mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # O_APPEND: concurrent short lines do not interleave
            try:
                os.write(fd, f"{url} {fingerprint}\n".encode())
            finally:
                os.close(fd)
            if self._on_learn:
                self._on_learn(ServerKeyLearnt(url, fingerprint, self.path))
            return
        self._rewrite(url, f"{url} {fingerprint}")

    def set_next(self, url: str, fingerprint: str) -> None:
        _check(url, fingerprint)
        known = self._read().get(url)
        if known is None or known[1] == fingerprint or known[0] == fingerprint:
            return
        self._rewrite(url, f"{url} {known[0]} next={fingerprint}")

    def _rewrite(self, url: str, line: str) -> None:
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        out = [line if (l.strip().split() or [""])[0] == url and not l.strip().startswith("#") else l for l in lines]
        tmp = f"{self.path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, "\n".join(out).encode())
        finally:
            os.close(fd)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
