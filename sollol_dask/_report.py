"""``EmbedReport``: what a parquet run did, for people (str, repr, Jupyter HTML) and
programs (fields). Each node's line says what became of it (left out, ejected, hung) and
why, not only how many texts it embedded."""

from __future__ import annotations

import dataclasses
import html

# Worst first: which state a node is shown in when the workers' routers disagree.
STATE_ORDER = ("excluded", "quarantined", "ejected", "probing", "warming", "up")


@dataclasses.dataclass(repr=False)
class EmbedReport:
    output: str
    model: str
    dimension: int
    rows: int  # rows in the whole corpus
    rows_written: int  # rows in parts written by this run
    embedded: int  # rows that got a vector in this run
    null_rows: int  # null, empty or whitespace texts (null embedding)
    invalid_rows: int  # non-text values nulled by on_invalid="null"
    parts_written: int
    parts_skipped: int  # already complete from an earlier run
    seconds: float
    per_node: dict[str, int]  # texts embedded by each node in this run
    # None when the run's own LocalCluster is gone: a link to it would be dead.
    dashboard: str | None = None
    parts_recomputed: int = 0  # existed but failed verification (truncated, damaged, foreign)
    # node -> {"state", "reason", "errors": {kind: count}, "overtaken"} at the run's end
    node_states: dict[str, dict] = dataclasses.field(default_factory=dict)
    # Rows without a vector for a reason of their own, by reason (_rows.REASONS), in the
    # parts this run wrote; each is listed in <output>/_errors/<part>.
    row_errors: dict[str, int] = dataclasses.field(default_factory=dict)
    rows_retried: int = 0  # listed row errors embedded again (retry_errors=True)
    tokens: int = 0  # as the servers reported them (Ollama prompt_eval_count, OpenAI usage)
    per_node_tokens: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def error_rows(self) -> int:
        return sum(self.row_errors.values())

    @property
    def token_rate(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def rate(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def node_note(self, node: str) -> str:
        """What happened to ``node``, in a few words: "" for a node that simply worked."""
        info = self.node_states.get(node)
        if not info:
            return ""
        state, reason = info.get("state", "up"), info.get("reason", "")
        troubles = [f"{count} {kind} errors" for kind, count in sorted(
            info.get("errors", {}).items()) if count]
        if info.get("overtaken"):
            troubles.append(f"{info['overtaken']} batches finished first elsewhere "
                            "(slow or hung)")
        detail = "; ".join(troubles)
        if state != "up":
            note = f"{state}: {reason}" if reason else state
            return f"{note} ({detail})" if detail and state != "excluded" else note
        return detail

    def _summary(self) -> list[tuple[str, str]]:
        rows = (f"{self.rows} in corpus; {self.rows_written} written now, {self.embedded} "
                f"embedded, {self.null_rows} null/blank"
                + (f", {self.invalid_rows} invalid" if self.invalid_rows else ""))
        parts = (f"{self.parts_written} written, {self.parts_skipped} skipped (done before)"
                 + (f"; {self.parts_recomputed} failed verification and were recomputed"
                    if self.parts_recomputed else ""))
        lines = [("output", self.output), ("model", f"{self.model} (dimension {self.dimension})"),
                 ("rows", rows), ("parts", parts),
                 ("time", f"{self.seconds:.1f} s, {self.rate:.0f} embeddings/s")]
        if self.rows_retried:
            lines.append(("retried", f"{self.rows_retried} rows listed in _errors"))
        if self.row_errors:
            why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.row_errors.items()))
            lines.append(("row errors", f"{self.error_rows} ({why}): listed in "
                          f"{self.output}/_errors/; rerun with --retry-errors "
                          "(retry_errors=True) once fixed"))
        if self.tokens:
            per = ", ".join(f"{node} {n}" for node, n in sorted(self.per_node_tokens.items()))
            lines.append(("tokens", f"{self.tokens} ({self.token_rate:.0f} tokens/s)"
                          + (f"; {per}" if per else "")))
        if self.dashboard:
            lines.append(("dashboard", f"{self.dashboard.rsplit('/', 1)[0]}/sollol"))
        return lines

    def _nodes(self) -> list[tuple[str, int, float, str]]:
        names = set(self.per_node) | set(self.node_states)
        total = sum(self.per_node.values()) or 1
        return [(node, self.per_node.get(node, 0), self.per_node.get(node, 0) / total,
                 self.node_note(node))
                for node in sorted(names, key=lambda n: (-self.per_node.get(n, 0), n))]

    def __str__(self) -> str:
        lines = [f"{name:<11} {value}" for name, value in self._summary()]
        for node, texts, share, note in self._nodes():
            lines.append(f"  {node:<32} {texts:>9} texts  {share:6.1%}"
                         + (f"  {note}" if note else ""))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        summary = "".join(f"<tr><th style='text-align:left'>{html.escape(name)}</th>"
                          f"<td style='text-align:left'>{html.escape(value)}</td></tr>"
                          for name, value in self._summary())
        nodes = "".join(
            f"<tr class='sollol-node'><td>{html.escape(node)}</td><td>{texts}</td>"
            f"<td>{share:.1%}</td><td>{html.escape(note)}</td></tr>"
            for node, texts, share, note in self._nodes())
        return ("<b>sollol-dask run</b><table class='sollol-report'>" + summary + "</table>"
                "<table class='sollol-report-nodes' border='1' cellpadding='4' "
                "style='border-collapse:collapse'><tr><th>node</th><th>texts</th>"
                "<th>share</th><th>what happened</th></tr>" + nodes + "</table>")


def merge_node_states(snapshots: list[list[dict]]) -> dict[str, dict]:
    """One state per node from every worker router's snapshot: the worst state seen
    (with its reason), errors added up."""
    merged: dict[str, dict] = {}
    for rows in snapshots:
        for row in rows:
            info = merged.setdefault(row["node"], {"state": "up", "reason": "", "errors": {},
                                                   "overtaken": 0})
            info["overtaken"] += row.get("overtaken", 0)
            state = row.get("state", "up")
            rank = STATE_ORDER.index(state) if state in STATE_ORDER else len(STATE_ORDER)
            if rank < STATE_ORDER.index(info["state"]):
                info["state"], info["reason"] = state, row.get("reason", "")
            for kind, count in (row.get("errors") or {}).items():
                info["errors"][kind] = info["errors"].get(kind, 0) + count
    return merged
