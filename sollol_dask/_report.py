"""``EmbedReport``: what a parquet run did, for people (str) and programs (fields)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
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
    dashboard: str | None = None
    parts_recomputed: int = 0  # existed but failed verification (truncated, damaged, foreign)
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

    def __str__(self) -> str:
        lines = [
            f"output      {self.output}",
            f"model       {self.model} (dimension {self.dimension})",
            f"rows        {self.rows} in corpus; {self.rows_written} written now, "
            f"{self.embedded} embedded, {self.null_rows} null/blank"
            + (f", {self.invalid_rows} invalid" if self.invalid_rows else ""),
            f"parts       {self.parts_written} written, {self.parts_skipped} skipped (done before)"
            + (f"; {self.parts_recomputed} failed verification and were recomputed"
               if self.parts_recomputed else ""),
            f"time        {self.seconds:.1f} s, {self.rate:.0f} embeddings/s",
        ]
        if self.rows_retried:
            lines.append(f"retried     {self.rows_retried} rows listed in _errors")
        if self.row_errors:
            why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.row_errors.items()))
            lines.append(f"row errors  {self.error_rows} ({why}): listed in {self.output}/_errors/;"
                         " rerun with --retry-errors (retry_errors=True) once fixed")
        if self.tokens:
            per = ", ".join(f"{node} {n}" for node, n in sorted(self.per_node_tokens.items()))
            lines.append(f"tokens      {self.tokens} ({self.token_rate:.0f} tokens/s)"
                         + (f"; {per}" if per else ""))
        total = sum(self.per_node.values()) or 1
        for node, texts in sorted(self.per_node.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {node:<32} {texts:>9} texts  {texts / total:6.1%}")
        return "\n".join(lines)
