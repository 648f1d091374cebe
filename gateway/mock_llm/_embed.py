"""Deterministic embeddings (/v1/embeddings) and the model list (/v1/models).

Vectors come from SHAKE-256 of the input, are L2-normalised like OpenAI's, and are rounded to float32
so the JSON floats and the base64 little-endian float32 encoding carry exactly the same numbers.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import struct
from collections.abc import Sequence
from typing import Any, Final

from gateway.mock_llm._wire import pretty

DEFAULT_DIMENSIONS: Final = 1536


@functools.lru_cache(maxsize=1024)
def _packed(data: bytes, dimensions: int) -> bytes:
    raw = struct.unpack(f"<{dimensions}I", hashlib.shake_256(data).digest(4 * dimensions))
    values = [x / 2147483648.0 - 1.0 for x in raw]
    norm = math.sqrt(math.fsum(v * v for v in values)) or 1.0
    return struct.pack(f"<{dimensions}f", *(v / norm for v in values))


def _input_bytes(item: str | list[int]) -> bytes:
    return item.encode() if isinstance(item, str) else b",".join(b"%d" % t for t in item)


def mock_embedding(item: str | list[int], dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """The vector the mock returns for one input (a string or a list of token ids)."""
    packed = _packed(_input_bytes(item), dimensions)
    return list(struct.unpack(f"<{dimensions}f", packed))


def embeddings_body(inputs: Sequence[str | list[int]], model: str, dimensions: int, as_base64: bool) -> bytes:
    data: list[dict[str, Any]] = []
    for index, item in enumerate(inputs):
        packed = _packed(_input_bytes(item), dimensions)
        vector: str | list[float]
        if as_base64:
            vector = base64.b64encode(packed).decode()
        else:
            vector = list(struct.unpack(f"<{dimensions}f", packed))
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = sum(len(i.split()) if isinstance(i, str) else len(i) for i in inputs) or 1
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return pretty({"object": "list", "data": data, "model": model, "usage": usage})


def normalise_input(value: Any) -> Sequence[str | list[int]] | None:
    """The embeddings `input` as a list of items, or None when its shape is not one OpenAI accepts."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return value
        if all(isinstance(v, int) for v in value):
            return [value]
        if all(isinstance(v, list) and v and all(isinstance(t, int) for t in v) for v in value):
            return value
    return None


def model_object(model: str, created: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": "wardgate-mock"}


def models_body(model: str, created: int) -> bytes:
    return pretty({"object": "list", "data": [model_object(model, created)]})
