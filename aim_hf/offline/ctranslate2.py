"""Read a CTranslate2 `model.bin` (binary format version 6) into named numpy arrays.

Layout, all little-endian: uint32 format version; the spec name and then each string below as
uint16 byte count (the trailing NUL included) + bytes; uint32 spec revision; uint32 variable count;
per variable: name, uint8 rank, rank x uint32 dims, uint8 dtype, uint32 byte count, data; then
uint32 alias count and per alias: its name and the name of the variable it stands for (e.g. a
projection tied to the embeddings).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FORMAT_VERSION = 6
# CTranslate2's data type codes; 1 (int8) also holds flags, but a model quantized to it is refused later.
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


@dataclass
class CT2Model:
    """A CTranslate2 model's spec name and revision, its variables, and its aliases (name -> variable name)."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]
    aliases: dict[str, str]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.variables[self.aliases.get(name, name)]


class _Reader:
    """Sequential little-endian reads over one bytes buffer, with a clear error past its end."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = memoryview(data), 0, what

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise ValueError(f"{self.what} ends early (truncated, or a part missing?): not a whole CTranslate2 model.")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self) -> str:
        (n,) = self.unpack("H")
        return bytes(self.take(n)).decode("utf-8").rstrip("\0")


def read_ct2(parts: str | os.PathLike | Sequence[str | os.PathLike]) -> CT2Model:
    """Read a CTranslate2 model from its `model.bin`, or from the parts it was split into (in order;
    they are concatenated)."""
    parts = [parts] if isinstance(parts, (str, os.PathLike)) else list(parts)
    what = " + ".join(os.fspath(p) for p in parts)
    data = b"".join(open(p, "rb").read() for p in parts)
    r = _Reader(data, what)
    (version,) = r.unpack("I")
    if version != FORMAT_VERSION:
        raise ValueError(f"{what}: CTranslate2 binary format version {version}, only {FORMAT_VERSION} is read.")
    spec = r.string()
    (revision,) = r.unpack("I")
    (count,) = r.unpack("I")
    variables = {}
    for _ in range(count):
        name = r.string()
        (rank,) = r.unpack("B")
        shape = r.unpack("I" * rank)
        (code,) = r.unpack("B")
        (nbytes,) = r.unpack("I")
        if code not in DTYPES:
            raise ValueError(f"{what}: variable {name!r} has data type code {code}, which is not read here.")
        variables[name] = np.frombuffer(r.take(nbytes), dtype=DTYPES[code]).reshape(shape)
    (count,) = r.unpack("I")
    aliases = dict((r.string(), r.string()) for _ in range(count))
    return CT2Model(spec, revision, variables, aliases)


__all__ = ["CT2Model", "read_ct2"]
