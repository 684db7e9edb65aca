"""A service on a temporary state directory, with one token per role."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_support import Env, make_tokens, write_intake

from attestgate.service import ServiceConfig, create_app


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    home = tmp_path / "home"
    intake = tmp_path / "intake"
    write_intake(intake)
    tokens = make_tokens(home)
    app = create_app(ServiceConfig(home=home, intake=intake, workers=2))
    with TestClient(app) as client:
        yield Env(home, intake, client, tokens)
