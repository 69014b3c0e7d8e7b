"""Fleet consistency: which model dimension, digest and vector norm a run uses, and who
matches it.

Pure functions over what each node's probe reported. Vectors from different digests,
dimensions or normalizations never mix in one output, so a node that disagrees with the
fleet is excluded; every answer is checked against the same reference (``backends._checks``).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence

# A normalized vector's norm is 1 within this (servers normalizing in float16 included).
NORM_TOLERANCE = 0.01
# A fleet of unnormalized vectors: a norm this many times larger or smaller than the
# fleet's typical one is not a vector of the same model.
NORM_RATIO = 10.0


def is_normalized(norm: float) -> bool:
    return abs(norm - 1.0) <= NORM_TOLERANCE


def norm_agrees(norm: float, fleet: float) -> bool:
    """Whether a vector (or node) of ``norm`` fits a fleet whose typical norm is ``fleet``."""
    if is_normalized(fleet):
        return is_normalized(norm)
    return fleet / NORM_RATIO <= norm <= fleet * NORM_RATIO


@dataclasses.dataclass
class NodeInfo:
    """What a probe learned about a node before it gets work."""

    dimension: int | None = None
    digest: str | None = None
    context_length: int | None = None
    total_slots: int | None = None
    loaded: bool | None = None
    version: str | None = None
    size: int | None = None  # bytes of the loaded model (Ollama /api/ps)
    size_vram: int | None = None  # of which in GPU memory (< size: partly on the CPU)
    # Typical L2 norm of the node's vectors: measured on a probe embedding, or promised by
    # the wire format (Ollama's /api/embed normalizes); every answer is checked against it.
    norm: float | None = None


@dataclasses.dataclass(frozen=True)
class Reference:
    dimension: int
    digest: str | None  # None when no node reports one (OpenAI-compatible servers)
    # The fleet's typical vector norm (1.0: normalized), from probe vectors or the wire
    # format's promise; every stored vector was checked against it. None: not known.
    norm: float | None = None

    @property
    def normalized(self) -> bool | None:
        """Whether the run's vectors are L2-normalized, as measured (None: unknown)."""
        return None if self.norm is None else is_normalized(self.norm)


def choose_reference(order: Sequence[str], infos: Mapping[str, NodeInfo]) -> Reference | None:
    """The (dimension, digest) most nodes serve; ties go to the earlier configured node."""
    described = [n for n in order if n in infos and infos[n].dimension]
    if not described:
        return None
    votes = Counter((infos[n].dimension, infos[n].digest) for n in described)
    # Nodes that report no digest (OpenAI servers) vote for the dimension only.
    for (dim, digest), count in list(votes.items()):
        if digest is None:
            for key in votes:
                if key[0] == dim and key[1] is not None:
                    votes[key] += count
    best = max(votes.values())
    for n in described:
        key = (infos[n].dimension, infos[n].digest)
        if votes[key] == best:
            if key[1] is None:
                digests = [infos[m].digest for m in described
                           if infos[m].dimension == key[0] and infos[m].digest]
                key = (key[0], digests[0] if digests else None)
            norms = [infos[m].norm for m in described if infos[m].dimension == key[0]
                     and infos[m].digest in (None, key[1]) and infos[m].norm is not None]
            return Reference(dimension=key[0], digest=key[1], norm=_fleet_norm(norms))
    return None  # unreachable


def _fleet_norm(norms: list[float]) -> float | None:
    """Normalized if most nodes are; else the median of the others' norms."""
    if not norms:
        return None
    unnormalized = sorted(n for n in norms if not is_normalized(n))
    if len(unnormalized) * 2 <= len(norms):
        return 1.0
    return unnormalized[len(unnormalized) // 2]


def mismatch(info: NodeInfo, ref: Reference, model: str) -> str | None:
    """Why a node cannot join the run, or None if it matches the reference."""
    if info.dimension != ref.dimension:
        return (f"serves {model!r} with dimension {info.dimension}, but the fleet uses "
                f"{ref.dimension}: excluded so vectors never mix")
    if ref.digest and info.digest and info.digest != ref.digest:
        return (f"serves {model!r} with digest {info.digest[:12]}, but the fleet uses "
                f"{ref.digest[:12]}: excluded so vectors never mix (`ollama pull {model}` "
                "on every node gives them the same build)")
    if ref.norm is not None and info.norm is not None and not norm_agrees(info.norm, ref.norm):
        return (f"serves {model!r} with vectors of norm {info.norm:.4g}, but the fleet's have "
                f"norm {ref.norm:.4g}{' (normalized)' if ref.normalized else ''}: excluded so "
                "vectors never mix")
    return None
