"""DTM's sub-transaction barrier. The core is here; each database has its module (import only the ones whose
driver you installed): `fastdtm_client.barrier.postgres` (asyncpg, psycopg 3), `.mysql` (aiomysql),
`.sqlalchemy` (AsyncSession), `.redis` (redis-py asyncio)."""

from __future__ import annotations

from .core import DEFAULT_TABLE, ORIGIN_OPS, BarrierRow, BarrierStore, BranchBarrier, migration_sql

__all__ = ["DEFAULT_TABLE", "ORIGIN_OPS", "BarrierRow", "BarrierStore", "BranchBarrier", "migration_sql"]
