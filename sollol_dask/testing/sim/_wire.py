"""Pieces of the simulated node's answers shared by the server and its handlers."""

from __future__ import annotations

import base64
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import orjson

VERSION = "0.33.0-sim"


def expires_at(seconds: float = 300) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()


def b64_vectors(matrix: np.ndarray) -> list[str]:
    return [base64.b64encode(row.astype("<f4").tobytes()).decode() for row in matrix]


def dumps(obj) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def now_ns() -> int:
    return time.perf_counter_ns()
