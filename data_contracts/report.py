"""What a contract check found: failed rules, readable reports and the violation error."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

MAX_SAMPLES = 10
Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class RuleFailure:
    """One failed rule: where, what, how often and examples.

    ``sample_rows`` are 0-based data rows of the table as read (in a CSV file with a header, line = row + 2).
    ``rows`` holds every failing row when known (None for table-level rules); it is not printed.
    """

    table: str
    column: str | None
    rule: str
    expectation: str
    unexpected_count: int | None
    sample_values: list[Any] = field(default_factory=list)
    sample_rows: list[int] = field(default_factory=list)
    detail: str = ""
    severity: Severity = "error"
    rows: tuple[int, ...] | None = field(default=None, repr=False, compare=False)
    # the same place in the user's words: their file and column name (see ContractViolation.in_user_terms)
    file: str | None = None
    their_column: str | None = None
    sample_places: list[str] = field(default_factory=list)  # per sample row: "part-3.parquet row 1360"

    @property
    def row_level(self) -> bool:
        """True when the failure is a set of bad rows (which a quarantine could remove)."""
        return self.rows is not None

    def describe(self) -> str:
        """One readable line."""
        where = f"{self.table}.{self.column}" if self.column else self.table
        if self.file or self.their_column:
            theirs = f"column {self.their_column!r}" if self.their_column else ""
            where = f"{self.file or self.table}{', ' if self.file and theirs else ''}{theirs} ({where})"
        count = f"{self.unexpected_count} row(s)" if self.unexpected_count is not None else "failed"
        text = f"{where}: rule '{self.rule}' ({self.expectation}): {count}"
        if self.sample_values:
            places = self.sample_places or [f"row {r}" for r in self.sample_rows]
            pairs = ", ".join(f"{p}: {v!r}" for p, v in zip(places, self.sample_values, strict=False))
            text += f"; e.g. {pairs}" if self.sample_rows else f"; e.g. {self.sample_values}"
        if self.detail:
            text += f" ({self.detail})"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the full row list)."""
        return {"table": self.table, "column": self.column, "rule": self.rule, "expectation": self.expectation,
                "unexpected_count": self.unexpected_count, "sample_values": self.sample_values,
                "sample_rows": self.sample_rows, "detail": self.detail, "severity": self.severity,
                "file": self.file, "their_column": self.their_column, "sample_places": self.sample_places}


@dataclass(frozen=True)
class ContractReport:
    """Outcome of one table's contract."""

    table: str
    suite_version: int
    rows: int
    checked_rules: int
    failures: list[RuleFailure]
    warnings: list[RuleFailure] = field(default_factory=list)
    quarantined: dict[str, int] = field(default_factory=dict)  # rule -> rows moved to quarantine
    quarantined_rows: int = 0

    @property
    def success(self) -> bool:
        """True when no error-level rule failed (warnings do not count)."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"table": self.table, "suite_version": self.suite_version, "rows": self.rows,
                "checked_rules": self.checked_rules, "success": self.success,
                "failures": [f.to_dict() for f in self.failures], "warnings": [w.to_dict() for w in self.warnings],
                "quarantined_rows": self.quarantined_rows, "quarantined_by_rule": self.quarantined}

    def to_markdown(self) -> str:
        """A human-readable report."""
        status = "PASSED" if self.success else "FAILED"
        lines = [f"### `{self.table}` contract v{self.suite_version}: {status}",
                 f"{self.rows} rows, {self.checked_rules} rules, {len(self.failures)} failed, "
                 f"{len(self.warnings)} warning(s).", ""]
        for title, items in (("Failed rules", self.failures), ("Warnings", self.warnings)):
            if not items:
                continue
            lines += [f"**{title}**", "", "| column | rule | expectation | rows | samples (row: value) |",
                      "|---|---|---|---|---|"]
            for f in items:
                samples = "; ".join(f"{r}: {v!r}" for r, v in zip(f.sample_rows, f.sample_values, strict=False))
                text = (samples or ", ".join(map(repr, f.sample_values)) or f.detail).replace("|", "/")
                if samples and f.detail:
                    text += f" ({f.detail})"
                count = "-" if f.unexpected_count is None else f.unexpected_count
                lines.append(f"| {f.column or '-'} | {f.rule} | `{f.expectation}` | {count} | {text} |")
            lines.append("")
        if self.quarantined_rows:
            lines += [f"**Quarantined {self.quarantined_rows} row(s)** (moved to the quarantine file, not used):", ""]
            lines += [f"- {rule}: {count}" for rule, count in self.quarantined.items()]
        return "\n".join(lines).rstrip() + "\n"

    def raise_for_failures(self) -> None:
        """Raise :class:`ContractViolation` when an error-level rule failed."""
        if self.failures:
            raise ContractViolation([self])


def part_row(row: int, parts: list[tuple[str, int]] | None) -> str:
    """``row`` of a table read from Parquet parts (``[(part, rows)]`` in reading order) as ``<part> row <n>``
    (both 0-based like every reported row); ``row <row>`` when there are no parts or it lies beyond them."""
    start = 0
    for part, rows in parts or []:
        if row < start + rows:
            return f"{part} row {row - start}"
        start += rows
    return f"row {row}"


class ContractViolation(ValueError):
    """Data broke its contract. ``reports`` holds every table's report; ``str()`` lists each failed rule."""

    def __init__(self, reports: list[ContractReport], note: str = "") -> None:
        self.reports = reports
        self.note = note
        failures = [f for r in reports for f in r.failures]
        lines = [f"data contract violated: {len(failures)} rule(s) failed"] + [f"  - {f.describe()}" for f in failures]
        if note:
            lines.append(f"  {note}")
        super().__init__("\n".join(lines))

    def in_user_terms(self, columns: dict[str, dict[str, str]] | None, files: dict[str, str],
                      parts: dict[str, list[tuple[str, int]]] | None = None) -> ContractViolation:
        """The same violation naming each failure's file (``files``: table -> file as the user gave it), column
        as the user's data calls it (``columns``: table -> {canonical: theirs}, a column map), and, for a table
        read from a folder of Parquet parts (``parts``: table -> [(part, rows)] in reading order), the part and
        the row within it of each sample row."""
        def renamed(failure: RuleFailure) -> RuleFailure:
            theirs = (columns or {}).get(failure.table, {}).get(failure.column or "")
            places = [part_row(row, (parts or {}).get(failure.table)) for row in failure.sample_rows]
            return replace(failure, file=files.get(failure.table), their_column=theirs or failure.column,
                           sample_places=places if (parts or {}).get(failure.table) else [])

        reports = [replace(r, failures=[renamed(f) for f in r.failures], warnings=[renamed(w) for w in r.warnings])
                   for r in self.reports]
        return ContractViolation(reports, self.note)

    @property
    def failures(self) -> list[RuleFailure]:
        """Every failed rule of every table."""
        return [f for r in self.reports for f in r.failures]

    def to_markdown(self) -> str:
        """Markdown report of every table."""
        body = "\n".join(r.to_markdown() for r in self.reports)
        return f"{body}\n{self.note}\n" if self.note else body
