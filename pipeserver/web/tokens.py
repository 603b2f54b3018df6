"""Projects and tokens (SPEC §8).

The tokens file holds one ``PROJECT SHA256_HEX_OF_TOKEN`` per line; ``#``
starts a comment. Only hashes are stored. A request names its token as
``Authorization: Bearer TOKEN`` or as the password of Basic auth.

``python -m pipeserver.web.tokens PROJECT`` prints a fresh token and its line.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import sys
from typing import Dict, List, Optional, Set, Tuple

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from pipeserver import errors
from pipeserver.domain.interfaces import Request

log = Logger()

_LINE = re.compile(r"^(\S+)\s+([0-9a-fA-F]{64})$")


class TokenFileError(ValueError):
    """The tokens file cannot be used; the message names the line."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _is_utf8(line: str) -> bool:
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept as surrogates
        return False
    return True


def read(text: str) -> Tuple[Dict[str, str], List[str]]:
    """Map each token hash to its project, skipping what cannot be used.

    Returns the table of every valid line and one problem per skipped line,
    as ``line N: why``: never the line's text, which may hold a token. A
    token listed in two projects is dropped from both (it is ambiguous, and
    dropping it fails closed)."""
    table: Dict[str, str] = {}
    problems: List[str] = []
    ambiguous: Set[str] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LINE.match(line)
        if match is not None and not _is_utf8(line):
            problems.append(f"line {number}: not UTF-8")
            continue
        if match is None:
            problems.append(
                f"line {number}: expected 'PROJECT SHA256_HEX', got {len(line)} characters"
            )
            continue
        project, digest = match.group(1), match.group(2).lower()
        if digest in ambiguous or (digest in table and table[digest] != project):
            problems.append(f"line {number}: the same token is in two projects")
            ambiguous.add(digest)
            table.pop(digest, None)
            continue
        table[digest] = project
    return table, problems


def parse(text: str) -> Dict[str, str]:
    """Map each token hash to its project, or raise TokenFileError naming
    the first line that cannot be used (at start, a broken file is fatal)."""
    table, problems = read(text)
    if problems:
        raise TokenFileError(problems[0])
    return table


def token_from(authorization: Optional[bytes]) -> Optional[str]:
    """The token of an Authorization header (Bearer, or Basic's password)."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(b" ")
    scheme = scheme.lower()
    value = value.strip()
    try:
        if scheme == b"bearer":
            return value.decode("utf-8") or None
        if scheme == b"basic":
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
            return decoded.partition(":")[2] or None
    except (ValueError, UnicodeDecodeError):
        return None
    return None


class Tokens:
    """The projects' tokens, read from a file and re-read when it changes.

    ``reload()`` (on SIGHUP) and a poll of the file's mtime both re-read it:
    every valid line is applied, each bad one is skipped and logged by its
    number, and the tokens in force stay only if the file cannot be read. Requests already
    admitted are never affected.
    """

    def __init__(self, path: str, clock: IReactorTime, poll: float = 2.0) -> None:
        self.path = path
        self._table: Dict[str, str] = {}
        self._stamp: Optional[Tuple[float, int, int]] = None
        self.load()
        self._poller = LoopingCall(self._poll)
        self._poller.clock = clock
        self._interval = poll

    def start(self) -> None:
        if not self._poller.running:
            self._poller.start(self._interval, now=False)

    def stop(self) -> None:
        if self._poller.running:
            self._poller.stop()

    def _statStamp(self) -> Tuple[float, int, int]:
        st = os.stat(self.path)
        return (st.st_mtime, st.st_size, st.st_ino)

    def load(self) -> None:
        """Read the file strictly; raise TokenFileError or OSError if any
        line cannot be used (how the server starts)."""
        stamp = self._statStamp()
        with open(self.path, encoding="utf-8") as handle:
            table = parse(handle.read())
        self._table = table
        self._stamp = stamp

    def reload(self) -> bool:
        """Read the file again and apply every valid line of it.

        A line that cannot be used is skipped and logged by its number (a
        token removed in the same edit must not stay valid); the tokens in
        force stay only when the file cannot be read at all."""
        try:
            stamp = self._statStamp()
            # A stray byte spoils its own line only (see _is_utf8).
            with open(self.path, encoding="utf-8", errors="surrogateescape") as handle:
                text = handle.read()
        except OSError as failure:
            log.error(
                "Tokens file {path} not reloaded, the previous tokens stay: {why}",
                path=self.path,
                why=str(failure),
            )
            return False
        table, problems = read(text)
        for problem in problems:
            log.error("Tokens file {path}: {why}; skipped", path=self.path, why=problem)
        self._table = table
        self._stamp = stamp
        log.info(
            "Tokens file {path} loaded: {count} token(s) in {projects} project(s)",
            path=self.path,
            count=len(self._table),
            projects=len(set(self._table.values())),
        )
        return not problems

    def _poll(self) -> None:
        try:
            stamp = self._statStamp()
        except OSError:
            return
        if stamp != self._stamp:
            self.reload()

    @property
    def projects(self) -> List[str]:
        return sorted(set(self._table.values()))

    def project_of(self, token: Optional[str]) -> Optional[str]:
        if token is None:
            return None
        # Looked up by its SHA-256: the time taken tells nothing of which
        # tokens exist, only of a hash the caller cannot steer.
        return self._table.get(hash_token(token))

    def __call__(self, request: Request) -> str:
        """The request's project, or the 401 rejection (an Authorizer)."""
        header = request.getHeader(b"authorization")
        project = self.project_of(token_from(header))
        if project is None:
            raise errors.unauthorized()
        return project


def new_token(project: str) -> Tuple[str, str]:
    """A fresh random token (256 bits) and the tokens-file line for it."""
    if not re.fullmatch(r"\S+", project) or "#" in project:
        raise ValueError("a project name is one word without '#'")
    token = secrets.token_urlsafe(32)
    return token, f"{project} {hash_token(token)}"


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m pipeserver.web.tokens PROJECT", file=sys.stderr)
        print("Prints a new token, then the line to add to the tokens file.", file=sys.stderr)
        return 2
    try:
        token, line = new_token(args[0])
    except ValueError as failure:
        print(f"error: {failure}", file=sys.stderr)
        return 2
    print(f"token: {token}")
    print(f"line:  {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
