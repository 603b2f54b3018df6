"""A receiver's own Content-Disposition: ``?download=1|0`` and ``?filename=NAME``.

By default a receiver gets the sender's Content-Disposition (SPEC §5). A
receiver that asks ``download=1`` gets ``attachment``, ``download=0``
``inline`` (the sender's parameters kept, its filename above all), and
``filename=NAME`` that name (an attachment unless ``download=0``). Only that
receiver: the others of the pipe keep the sender's header.

The name comes from whoever holds the URL, so it is made harmless first
(:func:`sanitise`): no path separators, no control or format characters (a
right-to-left override would disguise ``gpj.exe`` as ``exe.jpg``), no
leading or trailing dots or spaces, at most 255 bytes of UTF-8. It is sent
as RFC 6266 asks: ``filename="..."`` (quotes and backslashes escaped), and,
for a name that is not plain ASCII, an ASCII fallback there with the exact
name in ``filename*=UTF-8''...`` (RFC 5987).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote

from pipeserver import errors

#: UTF-8 bytes a name may take (most file systems' limit).
MAX_NAME_BYTES = 255
#: Characters never kept: controls, formats (bidi overrides, zero widths),
#: line and paragraph separators, private use, unassigned, surrogates.
_DROPPED = frozenset({"Cc", "Cf", "Zl", "Zp", "Co", "Cn", "Cs"})
#: RFC 5987 attr-char, left unescaped in ``filename*``.
_ATTR_SAFE = "!#$&+-.^_`|~"

Header = Tuple[bytes, bytes]
_DOWNLOAD = {b"1": True, b"": True, b"0": False}


def sanitise(raw: bytes) -> Optional[str]:
    """``raw`` (a query value) as a file name a receiver may be given, or
    None if nothing usable is left."""
    text = unicodedata.normalize("NFC", raw.decode("utf-8", "replace").replace("\ufffd", "_"))
    kept = []
    for char in text:
        if char in "/\\":
            kept.append("_")
        elif unicodedata.category(char) not in _DROPPED:
            kept.append(char)
    name = "".join(kept).strip(" .")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        name = _shortened(name)
    return name or None


def _shortened(name: str) -> str:
    """``name`` cut to MAX_NAME_BYTES, keeping a short extension."""
    stem, dot, extension = name.rpartition(".")
    if not dot or len(extension) > 16:
        stem, extension = name, ""
    suffix = "." + extension if extension else ""
    room = MAX_NAME_BYTES - len(suffix.encode("utf-8"))
    cut = stem.encode("utf-8")[:room].decode("utf-8", "ignore").rstrip(" .")
    return cut + suffix


def _ascii_fallback(name: str) -> str:
    """An ASCII stand-in for ``name``: accents dropped (é -> e), anything
    else non-ASCII, and ``%`` (which some agents decode), as ``_``."""
    out = []
    for char in name:
        if char.isascii() and char != "%":
            out.append(char)
            continue
        plain = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode("ascii")
        out.append(plain.replace("%", "_") if plain else "_")
    return "".join(out)


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def header_value(kind: str, name: Optional[str]) -> bytes:
    """``kind`` (``attachment`` or ``inline``) with ``name`` as RFC 6266 has it."""
    if name is None:
        return kind.encode("ascii")
    fallback = _ascii_fallback(name)
    value = f"{kind}; filename={_quoted(fallback)}"
    if fallback != name:
        value += "; filename*=UTF-8''" + quote(name, safe=_ATTR_SAFE)
    return value.encode("ascii")


@dataclass(frozen=True)
class Override:
    """What one receiver asked for: ``download`` (None: not asked) and a
    sanitised ``filename`` (None: none given, or nothing left of it)."""

    download: Optional[bool]
    filename: Optional[str]

    def apply(self, headers: Sequence[Header]) -> List[Header]:
        """The receiver's headers: ``headers`` (what the sender's give every
        receiver) with Content-Disposition replaced, or added after the
        Content-Length and Content-Type."""
        out = list(headers)
        index = next(
            (i for i, (name, _) in enumerate(out) if name.lower() == b"content-disposition"),
            None,
        )
        sender = out[index][1] if index is not None else None
        value = self._value(sender)
        if index is not None:
            out[index] = (b"Content-Disposition", value)
            return out
        at = 0
        while at < len(out) and out[at][0].lower() in (b"content-length", b"content-type"):
            at += 1
        out.insert(at, (b"Content-Disposition", value))
        return out

    def _value(self, sender: Optional[bytes]) -> bytes:
        kind = "inline" if self.download is False else "attachment"
        if self.filename is not None or sender is None:
            return header_value(kind, self.filename)
        # No name of its own: the sender's parameters (its filename) stay.
        _, semicolon, rest = sender.partition(b";")
        return kind.encode("ascii") + semicolon + rest


def requested(args: Dict[bytes, List[bytes]]) -> Optional[Override]:
    """What the query ``args`` ask of a receiver's Content-Disposition:
    None if nothing. Raises the 400 Rejection for a ``download`` that is
    neither 1 nor 0."""
    downloads = args.get(b"download")
    names = args.get(b"filename")
    if downloads is None and names is None:
        return None
    download: Optional[bool] = None
    if downloads is not None:
        value = downloads[0].strip().lower()
        if value not in _DOWNLOAD:
            raise errors.download_invalid()
        download = _DOWNLOAD[value]
    filename = sanitise(names[0]) if names is not None else None
    return Override(download, filename)
