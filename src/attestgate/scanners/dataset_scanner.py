"""Check the framing of dataset files: Parquet, Arrow IPC and JSON Lines.

These formats contain data, not code, so a well-formed file yields no finding,
only facts (rows, columns) that are cheap to read. A file whose framing is
broken yields ``dataset.malformed``, because a reader that trips over it, or
reads it differently from the gate, is worth a reviewer's look.

- Parquet (``dataset_parquet``): ``PAR1`` at both ends, a footer length that
  fits in the file, and a footer that decodes.
- Arrow IPC (``dataset_arrow``): the file format's magic numbers and footer,
  or the stream format's message framing.
- JSON Lines (here): the first lines are parsed as JSON, every line is counted.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

from attestgate.findings import Finding, Severity
from attestgate.identify.formats import Format
from attestgate.scanners.dataset_arrow import ArrowReader
from attestgate.scanners.dataset_base import MAX_LISTED, DatasetReader, Problem, shorten
from attestgate.scanners.dataset_parquet import ParquetReader
from attestgate.scanners.interface import ReadAt, ScanContext, Scanner, ScanResult

__all__ = ["SAMPLE_LINES", "DatasetScanner"]

logger = logging.getLogger(__name__)

# JSON Lines: how many leading lines are parsed.
SAMPLE_LINES = 1000

_RECOPY = (
    "Copy the file again from its source and compare its digest with the "
    "published one; if it stays malformed, write it again with the library "
    "that produced it and admit the new file."
)


class DatasetScanner(Scanner):
    """Checks Parquet, Arrow IPC and JSON Lines files and counts their rows."""

    check = "dataset"

    def __init__(self, ctx: ScanContext, fmt: Format) -> None:
        super().__init__(ctx, fmt)
        self._reader: DatasetReader
        if fmt is Format.PARQUET:
            self._reader = ParquetReader()
        elif fmt is Format.ARROW:
            self._reader = ArrowReader()
        else:
            self._reader = JsonLinesReader(max_line=ctx.limits.max_json_bytes)

    def feed(self, chunk: memoryview) -> None:
        self._reader.feed(chunk)

    def close(self, read_at: ReadAt | None = None) -> ScanResult:
        problems = self._reader.finish(read_at)
        findings: list[Finding] = [
            self.finding(
                "dataset.malformed",
                Severity.MEDIUM,
                problem.message,
                _RECOPY,
                offset=problem.offset,
            )
            for problem in problems
        ]
        return ScanResult(findings=findings, format=self.format, facts=self._reader.facts)


@dataclass
class JsonLinesReader(DatasetReader):
    """Parses the first SAMPLE_LINES lines and counts the rest."""

    max_line: int = 0
    line: bytearray = field(default_factory=bytearray)
    lines: int = 0
    # Set while the rest of an over-long line is skipped.
    skipping: bool = False
    last_byte: int = 0x0A
    invalid: list[int] = field(default_factory=list)
    invalid_count: int = 0
    problems: list[Problem] = field(default_factory=list)
    line_start: int = 0

    def feed(self, chunk: memoryview) -> None:
        if not len(chunk):
            return
        data = bytes(chunk)
        start = self.total
        self.total += len(data)
        self.last_byte = data[-1]
        if self.lines >= SAMPLE_LINES and not self.line and not self.skipping:
            self.lines += data.count(b"\n")
            return

        position = 0
        while position < len(data):
            newline = data.find(b"\n", position)
            end = len(data) if newline < 0 else newline
            self._extend(data[position:end], start + position)
            if newline < 0:
                break
            self._end_line()
            position = newline + 1
            if self.lines >= SAMPLE_LINES:
                self.lines += data.count(b"\n", position)
                break

    def _extend(self, piece: bytes, offset: int) -> None:
        if self.skipping:
            return
        if not self.line:
            self.line_start = offset
        if len(self.line) + len(piece) > self.max_line:
            self.skipping = True
            self.line.clear()
            self.problems.append(
                Problem(
                    f"line {self.lines + 1} is longer than {self.max_line} bytes, the "
                    "most the gate parses",
                    offset=self.line_start,
                )
            )
            return
        self.line += piece

    def _end_line(self) -> None:
        self.lines += 1
        if not self.skipping:
            self._parse(bytes(self.line))
        self.line.clear()
        self.skipping = False

    def _parse(self, line: bytes) -> None:
        if self.lines == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        if not line.strip():
            return
        try:
            value = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            self.invalid_count += 1
            if len(self.invalid) < 10:
                self.invalid.append(self.lines)
            return
        if "columns" not in self.facts and isinstance(value, dict):
            self.facts["columns"] = len(value)
            self.facts["column_names"] = [shorten(str(key)) for key in list(value)[:MAX_LISTED]]

    def finish(self, read_at: ReadAt | None) -> list[Problem]:
        if self.last_byte != 0x0A:
            # A last line without a newline still counts as a line.
            if self.lines < SAMPLE_LINES:
                self._end_line()
            else:
                self.lines += 1
        sampled = min(self.lines, SAMPLE_LINES)
        self.facts.update(rows=self.lines, sampled_rows=sampled)
        if self.invalid_count:
            where = ", ".join(str(number) for number in self.invalid)
            more = ", ..." if self.invalid_count > len(self.invalid) else ""
            label = "line" if self.invalid_count == 1 else "lines"
            self.problems.append(
                Problem(
                    f"{self.invalid_count} of the first {sampled} lines are not valid "
                    f"UTF-8 JSON ({label} {where}{more})"
                )
            )
        return self.problems
