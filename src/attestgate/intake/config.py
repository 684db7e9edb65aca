"""Search an image's config for secrets: environment, labels, commands and build history.

``ENV`` and ``ARG`` values stay in the config and its history, where anyone
who pulls the image can read them, even when no layer file contains them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from attestgate.findings import Finding, Severity
from attestgate.intake.identity import display_path, short_digest
from attestgate.intake.oci import Image
from attestgate.intake.secrets import env_secret_names, find_secrets, secret_finding


def config_findings(image: Image) -> list[Finding]:
    """Search the image config's environment, labels, commands and history for secrets."""
    if not image.container:
        return []
    base = short_digest(image.config.digest)
    findings: list[Finding] = []
    for where, text, assignments in _config_texts(image.config_document):
        location = f"{base}:{where}"
        data = text.encode("utf-8", "replace")
        matches = find_secrets(data)
        for match in matches:
            shown = dataclasses.replace(match, line=0)
            findings.append(secret_finding(shown, location, f"the image config's {where}"))
        if any(m.verified for m in matches):
            continue
        names = env_secret_names(assignments)
        if names:
            findings.append(_env_variable(location, where, names))
    return findings


def _config_texts(config: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """Return (field, text, KEY=VALUE assignments in it) for each searchable config field."""
    texts: list[tuple[str, str, list[str]]] = []
    runtime = config.get("config")
    if not isinstance(runtime, dict):
        runtime = {}
    for position, entry in enumerate(_strings(runtime.get("Env"))):
        texts.append((f"Env[{position}]", entry, [entry]))
    labels = runtime.get("Labels")
    if isinstance(labels, dict):
        for key, value in list(labels.items())[:256]:
            texts.append((f"Labels[{display_path(str(key), 80)}]", f"{key}={value}", []))
    for name in ("Cmd", "Entrypoint"):
        words = _strings(runtime.get(name))
        if words:
            texts.append((name, " ".join(words), words))
    history = config.get("history")
    for position, item in enumerate(history[:4096] if isinstance(history, list) else []):
        if not isinstance(item, dict):
            continue
        for key in ("created_by", "comment"):
            value = item.get(key)
            if isinstance(value, str) and value:
                words = [w.strip("\"'") for w in value.split()]
                texts.append((f"history[{position}].{key}", value, words))
    return texts


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value[:4096]] if isinstance(value, list) else []


def _env_variable(location: str, where: str, names: list[str]) -> Finding:
    shown = ", ".join(names[:8])
    return Finding(
        rule="secret.env-variable",
        severity=Severity.HIGH,
        file=location,
        message=(
            f"the image config's {where} sets {shown} to a value that looks like a secret "
            "(the value is not shown); anyone who pulls the image can read it"
        ),
        remediation=(
            "Rotate the credential, then rebuild the image without baking it in: pass it at "
            "run time or with `docker build --secret`, never with ENV or ARG."
        ),
        check="secrets",
        details={"names": names[:20], "field": where},
    )
