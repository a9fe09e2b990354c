"""Log set-up shared by the API, the workers and the supervisor."""

from __future__ import annotations

import logging

from asyncml.settings import Settings


def configure_logging(settings: Settings, role: str) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format=f"%(asctime)s %(levelname)s [{role}] %(name)s: %(message)s",
        force=True,
    )
