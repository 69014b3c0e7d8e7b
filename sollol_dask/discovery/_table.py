"""The table ``sollol-dask discover`` prints: one row per server (and model)."""

from __future__ import annotations

from ._identify import ModelEntry, Server

_HEAD = ("URL", "SERVER", "MODEL", "DIGEST", "LOADED", "VRAM", "SLOTS", "")


def render(found) -> str:
    """``found``: a ``Discovery``. Kept servers first, then those left out with why."""
    rows = []
    for server in [*found.kept, *(s for s in found.servers if s.url in found.left_out)]:
        verdict = "left out: " + found.left_out[server.url] if server.url in found.left_out \
            else ("kept" if found.model else "")
        for i, entry in enumerate(_models(server, found.model)):
            rows.append((server.url if i == 0 else "",
                         f"{server.kind} {server.version or ''}".strip() if i == 0 else "",
                         entry.name if entry else "-",
                         (entry.digest or "-")[:12] if entry else "-",
                         _yes_no(entry.loaded) if entry else "-",
                         _bytes(entry.size_vram) if entry else "-",
                         str(server.slots or "-") if i == 0 else "",
                         verdict if i == 0 else ""))
        for extra in server.addresses[1:]:
            rows.append((f"  also at {extra}", "", "", "", "", "", "", ""))
    lines = []
    if rows:
        widths = [max(len(r[c]) for r in [_HEAD, *rows]) for c in range(len(_HEAD) - 1)]
        for row in [_HEAD, *rows]:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
        lines = [line.rstrip() for line in lines]
    else:
        lines.append("no embedding server answered")
    kept = len(found.kept) if found.model else len(found.servers)
    summary = (f"asked {found.asked} address{'es' if found.asked != 1 else ''} in "
               f"{found.seconds:.2f} s: {kept} server{'s' if kept != 1 else ''} "
               f"{'kept' if found.model else 'found'}")
    if found.model:
        summary += f", {len(found.left_out)} left out"
    if found.not_embedding:
        summary += f", {len(found.not_embedding)} not an embedding server"
    summary += f", {found.silent} did not answer"
    if found.reference is not None:
        ref = found.reference
        summary += (f"\nfleet: {found.model} dimension {ref.dimension}, digest "
                    f"{(ref.digest or '-')[:12]}")
    return "\n".join([*lines, summary])


def _models(server: Server, model: str | None) -> list[ModelEntry | None]:
    if model:
        return [server.model]
    return list(server.models) or [None]


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def _bytes(value: int | None) -> str:
    if not value:
        return "-"
    return f"{value / 2**30:.1f} GiB" if value >= 2**30 else f"{value / 2**20:.0f} MiB"
