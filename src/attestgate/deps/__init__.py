"""Dependency-set analysis: requirements files, lock files and wheels.

The parsers (``requirements``, ``lockfiles``) turn a file into
:class:`~attestgate.deps.model.Dependency` entries; the checks (``checks``,
``osv``, ``typosquat``, ``confusion``) turn entries into findings; ``wheel``
checks a wheel's members. Nothing here fetches, installs or imports a package.
"""
