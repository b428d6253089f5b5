"""Supernoba matching engine: a C order book (through cffi) behind a small Python API.

``from engine_pkg import Engine`` gives the in-process engine of SPEC section 10;
``python -m engine_pkg replay FILE`` replays order commands; ``python -m engine_pkg`` runs the
long-running service (``engine_pkg.service``).
"""

from engine_pkg.engine import BatchResult, Engine

__all__ = ["BatchResult", "Engine"]
