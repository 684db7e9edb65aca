"""in-toto statements and evidence files (JSON documents and JSON Lines bundles)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attestgate.evidence.interface import (
    IN_TOTO_PAYLOAD_TYPE,
    STATEMENT_TYPES,
    EvidenceError,
    EvidenceLimits,
)

_HEX = re.compile(r"^[0-9a-fA-F]+$")


@dataclass(frozen=True)
class Subject:
    name: str
    digest: dict[str, str]


@dataclass(frozen=True)
class Statement:
    """An in-toto statement (v1, or v0.1 with the same fields)."""

    type: str
    subjects: tuple[Subject, ...]
    predicate_type: str
    predicate: dict[str, Any]

    def sha256_digests(self) -> list[str]:
        return [s.digest["sha256"].lower() for s in self.subjects if "sha256" in s.digest]

    def binds(self, sha256: str) -> bool:
        """Return whether a subject's SHA-256 digest equals ``sha256``."""
        return bool(sha256) and sha256.lower() in self.sha256_digests()


@dataclass(frozen=True)
class Document:
    """One JSON document read from an evidence file."""

    path: str
    line: int  # 0 for a whole-file document, else the JSON Lines line number
    value: Any
    text: str

    @property
    def source(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path


def parse_statement(payload: bytes, limits: EvidenceLimits) -> Statement:
    """Parse and check a statement's shape; raise ``EvidenceError`` on what breaks it."""
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise EvidenceError(f"the statement is not valid JSON: {exc}") from exc
    return statement_from_json(doc, limits)


def statement_from_json(doc: object, limits: EvidenceLimits) -> Statement:
    if not isinstance(doc, dict):
        raise EvidenceError("the statement is not a JSON object")
    kind = doc.get("_type")
    if kind not in STATEMENT_TYPES:
        raise EvidenceError(
            f"the statement's _type is {kind!r}, not an in-toto statement type "
            f"({', '.join(sorted(STATEMENT_TYPES))})"
        )
    predicate_type = doc.get("predicateType")
    if not isinstance(predicate_type, str) or not predicate_type:
        raise EvidenceError("the statement has no predicateType")
    predicate = doc.get("predicate", {})
    if predicate is None:
        predicate = {}
    if not isinstance(predicate, dict):
        raise EvidenceError("the statement's predicate is not a JSON object")
    raw_subjects = doc.get("subject")
    if not isinstance(raw_subjects, list) or not raw_subjects:
        raise EvidenceError("the statement has no subject")
    if len(raw_subjects) > limits.max_subjects:
        raise EvidenceError(
            f"the statement has {len(raw_subjects)} subjects, more than the "
            f"{limits.max_subjects} read"
        )
    subjects = tuple(_subject(entry, index) for index, entry in enumerate(raw_subjects))
    return Statement(str(kind), subjects, predicate_type, predicate)


def _subject(entry: object, index: int) -> Subject:
    if not isinstance(entry, dict):
        raise EvidenceError(f"subject {index} is not a JSON object")
    digest = entry.get("digest")
    if not isinstance(digest, dict) or not digest:
        raise EvidenceError(f"subject {index} has no digest")
    clean: dict[str, str] = {}
    for algorithm, value in digest.items():
        if not isinstance(value, str):
            raise EvidenceError(f"subject {index} digest {algorithm} is not a string")
        clean[str(algorithm)] = value
    sha256 = clean.get("sha256")
    if sha256 is not None and (len(sha256) != 64 or not _HEX.match(sha256)):
        raise EvidenceError(f"subject {index} sha256 digest {sha256!r} is not 64 hex digits")
    return Subject(str(entry.get("name", "")), clean)


def statement_json(
    subjects: list[dict[str, Any]], predicate_type: str, predicate: Any
) -> dict[str, Any]:
    """Return an in-toto v1 statement as a JSON object."""
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subjects,
        "predicateType": predicate_type,
        "predicate": predicate,
    }


def is_in_toto_payload(payload_type: str) -> bool:
    return payload_type == IN_TOTO_PAYLOAD_TYPE


def read_documents(path: Path, limits: EvidenceLimits) -> list[Document]:
    """Read an evidence file as one JSON document or as JSON Lines, one document a line."""
    try:
        with path.open("rb") as fh:
            data = fh.read(limits.max_file_bytes + 1)
    except OSError as exc:
        raise EvidenceError(
            f"evidence file {path} could not be read: {exc.strerror or exc}",
            hint="check the --evidence path and its permissions",
        ) from exc
    if len(data) > limits.max_file_bytes:
        raise EvidenceError(
            f"evidence file {path} is larger than {limits.max_file_bytes} bytes",
            hint="pass the signature or attestation file itself, not an archive of them",
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EvidenceError(f"evidence file {path} is not UTF-8 text: {exc}") from exc
    text = text.lstrip("\ufeff")
    try:
        return [Document(str(path), 0, json.loads(text), text)]
    except RecursionError as exc:
        raise EvidenceError(f"evidence file {path} nests JSON too deeply") from exc
    except ValueError:
        pass
    return _json_lines(path, text, limits)


def _json_lines(path: Path, text: str, limits: EvidenceLimits) -> list[Document]:
    documents: list[Document] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(documents) >= limits.max_pieces_per_file:
            raise EvidenceError(
                f"evidence file {path} contains more than {limits.max_pieces_per_file} documents",
                hint="split the JSON Lines bundle into several files",
            )
        try:
            value = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise EvidenceError(
                f"evidence file {path} is neither JSON nor JSON Lines: line {number} "
                f"does not parse ({exc})",
                hint="pass a Sigstore bundle, a DSSE envelope, an in-toto statement, "
                "a CycloneDX JSON document, or a JSON Lines file of them",
            ) from exc
        documents.append(Document(str(path), number, value, line))
    if not documents:
        raise EvidenceError(f"evidence file {path} is empty")
    return documents
