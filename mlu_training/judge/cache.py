"""A persistent cache of API judgements (and router answers), on SQLAlchemy: a SQLite file by
default, any database URL to share it between machines. Only successful answers are stored, so
a rerun retries what was missing and makes no call for the rest."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import sqlalchemy as sa

_metadata = sa.MetaData()
_table = sa.Table(
    "api_cache", _metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("namespace", sa.String(64), nullable=False),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
)


def cache_key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


class ApiCache:
    def __init__(self, url: str):
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(url)
        _metadata.create_all(self.engine)
        self._lock = threading.Lock()

    def get_many(self, keys: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(keys), 500):
                chunk = keys[start:start + 500]
                rows = conn.execute(sa.select(_table.c.key, _table.c.value).where(_table.c.key.in_(chunk)))
                out.update({k: v for k, v in rows})
        return out

    def put(self, namespace: str, key: str, value: str) -> None:
        with self._lock, self.engine.begin() as conn:
            conn.execute(sa.delete(_table).where(_table.c.key == key))
            conn.execute(sa.insert(_table).values(key=key, namespace=namespace, value=value, created=time.time()))

    def count(self, namespace: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(_table)
        if namespace:
            query = query.where(_table.c.namespace == namespace)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())
