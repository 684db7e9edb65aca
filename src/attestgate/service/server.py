"""Run the service on uvicorn with JSON logs."""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from attestgate.service.app import ServiceConfig, create_app
from attestgate.service.logs import configure_json_logging

logger = logging.getLogger(__name__)


def serve(*, home: Path, host: str, port: int, intake: Path | None, workers: int) -> None:
    """Serve until interrupted; the store's unfinished promotions are removed first."""
    configure_json_logging()
    app = create_app(ServiceConfig(home=home, intake=intake, workers=workers))
    logger.info("listening on %s:%d", host, port)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)
