"""The HTTP service: admission API, quarantine triage page, metrics and admission webhook.

Start it with ``attestgate serve`` or build the app with :func:`create_app`.
"""

from attestgate.service.app import ServiceConfig, create_app

__all__ = ["ServiceConfig", "create_app"]
