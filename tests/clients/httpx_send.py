# mypy: disable-error-code="no-untyped-def,type-arg"
"""An httpx HTTP/2 sender, as a Python user writes one: PUT a file to a pipe.

    python httpx_send.py sync|async bytes|stream URL FILE [CA_CERT]

``http2=True`` (and, for ``http://``, ``http1=False``: prior knowledge);
over TLS the CA certificate is trusted. Prints the HTTP version, the status
and the response body (the sender's progress lines)."""

from __future__ import annotations

import asyncio
import ssl
import sys

import httpx

CHUNK = 65536


def client_args(url: str, cert: str | None) -> dict:
    args: dict = {"http2": True, "timeout": httpx.Timeout(120.0)}
    if url.startswith("http://"):
        args["http1"] = False  # h2 with prior knowledge
    elif cert:
        args["verify"] = ssl.create_default_context(cafile=cert)
    return args


def chunks(path: str):
    with open(path, "rb") as f:
        while True:
            data = f.read(CHUNK)
            if not data:
                return
            yield data


async def achunks(path: str):
    for data in chunks(path):
        yield data


def report(response: httpx.Response) -> None:
    print(response.http_version)
    print(response.status_code)
    sys.stdout.write(response.text)


def run_sync(kind: str, url: str, path: str, cert: str | None) -> None:
    with httpx.Client(**client_args(url, cert)) as client:
        content = open(path, "rb").read() if kind == "bytes" else chunks(path)
        report(client.put(url, content=content))


async def run_async(kind: str, url: str, path: str, cert: str | None) -> None:
    async with httpx.AsyncClient(**client_args(url, cert)) as client:
        content = open(path, "rb").read() if kind == "bytes" else achunks(path)
        report(await client.put(url, content=content))


def main() -> None:
    mode, kind, url, path = sys.argv[1:5]
    cert = sys.argv[5] if len(sys.argv) > 5 else None
    if mode == "sync":
        run_sync(kind, url, path, cert)
    else:
        asyncio.run(run_async(kind, url, path, cert))


if __name__ == "__main__":
    main()
