"""Run the service on uvicorn with JSON logs."""

from __future__ import annotations

import logging

import uvicorn

from attestgate.service.app import ServiceConfig, create_app
from attestgate.service.logs import configure_json_logging

logger = logging.getLogger(__name__)


def serve(config: ServiceConfig, *, host: str, port: int) -> None:
    """Serve until interrupted; the store's unfinished promotions are removed first."""
    configure_json_logging()
    app = create_app(config)
    logger.info("listening on %s:%d", host, port)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)
