"""The review database's engine, and the one transaction each call of the store runs in."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Self

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from rrg_core.store.transactions import transaction


class StoreConnection:
    """An engine and the description of where it points (``at URL``), as error messages name it."""

    def __init__(self, engine: Engine, where: str) -> None:
        self._engine = engine
        self._where = where

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    @property
    def url(self) -> str:
        """The database URL with any password hidden (fit for logs and pages)."""
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for administration and tests; data goes through the methods."""
        return self._engine

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self) -> AbstractContextManager[Session]:
        return transaction(self._engine, self._where, write=False)

    def _write(self, races: bool = False) -> AbstractContextManager[Session]:
        return transaction(self._engine, self._where, write=True, races=races)
