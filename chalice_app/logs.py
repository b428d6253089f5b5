"""The one logging setup of Supernoba's processes (engine, streamer, local stack, tools).

Every log line is one event: ``<time> <LEVEL> <logger> event=<name> key=value ...``; the
format lives here so that engine, streamer and tool lines read alike. Lambda handlers keep the
Lambda runtime's handler and only set levels (`chalice_app.services.configure_logging`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

#: Client libraries whose DEBUG/INFO chatter drowns the project's own events.
NOISY_LOGGERS = ("botocore", "boto3", "urllib3", "httpx", "httpcore", "websockets")


def setup_logging(level: int | str = logging.INFO, *, quiet: Iterable[str] = NOISY_LOGGERS,
                  quiet_level: int = logging.WARNING) -> None:
    """Log to stderr in the project's format at ``level`` (a number or a name such as "INFO").

    Safe to call again (a later call only changes levels); ``quiet`` loggers are held at
    ``quiet_level`` or above.
    """
    if isinstance(level, str):
        level = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)
    logging.getLogger().setLevel(level)
    for name in quiet:
        logging.getLogger(name).setLevel(max(level, quiet_level))
