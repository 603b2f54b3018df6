#!/usr/bin/env python3
"""Write N deterministic pseudo-random bytes to stdout, fast.

    python3 bench/gen.py NBYTES [SEED]

The data is one 1 MiB block (random.Random(SEED)) repeated, so
:func:`expected_sha256` can tell what a receiver must have seen.
"""

import fcntl
import hashlib
import os
import random
import sys

BLOCK = 1 << 20
F_SETPIPE_SZ = 1031


def block(seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(BLOCK)


def expected_sha256(nbytes: int, seed: int = 0) -> str:
    data = block(seed)
    digest = hashlib.sha256()
    full, rest = divmod(nbytes, BLOCK)
    for _ in range(full):
        digest.update(data)
    digest.update(data[:rest])
    return digest.hexdigest()


def main() -> None:
    nbytes = int(sys.argv[1])
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    try:  # a bigger pipe means fewer wake-ups for both ends
        fcntl.fcntl(1, F_SETPIPE_SZ, BLOCK)
    except OSError:
        pass
    view = memoryview(block(seed))
    left = nbytes
    while left:
        chunk = view[: min(left, BLOCK)]
        while chunk:
            n = os.write(1, chunk)
            chunk = chunk[n:]
            left -= n


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        sys.exit(1)
