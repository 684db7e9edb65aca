"""Import ``jsonschema`` without its slowest optional format checker.

jsonschema registers an IRI format checker when ``rfc3987_syntax`` is
importable, and that module compiles a grammar at import time (about 3 s
here with rfc3987-syntax 1.1.0, which cyclonedx-python-lib's validation extra
installs). Every CLI call validates a policy, so the import is hidden while
jsonschema loads. Only the "iri" and "iri-reference" formats go unchecked.
NOTE: the CycloneDX 1.6 schema marks URL fields as "iri-reference", so an
ML-BOM with a malformed URL in one of them still validates.
"""

from __future__ import annotations

import sys

_BLOCKED = "rfc3987_syntax"

if "jsonschema" not in sys.modules and _BLOCKED not in sys.modules:
    sys.modules[_BLOCKED] = None  # type: ignore[assignment]
    try:
        import jsonschema
    finally:
        del sys.modules[_BLOCKED]
else:
    import jsonschema

__all__ = ["jsonschema"]
