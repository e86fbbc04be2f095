-- The barrier table of fastdtm-client (and of DTM's SDKs) for PostgreSQL: run once in each business database
-- whose branches use a barrier, e.g. `psql -d mydb -f postgres.sql`. Idempotent.
-- The constraint name `uniq_barrier` is used by the SDK's ON CONFLICT clause: keep it.
CREATE SCHEMA IF NOT EXISTS dtm_barrier;

CREATE TABLE IF NOT EXISTS dtm_barrier.barrier (
  id BIGSERIAL PRIMARY KEY,
  trans_type VARCHAR(45) NOT NULL DEFAULT '',
  gid VARCHAR(128) NOT NULL DEFAULT '',
  branch_id VARCHAR(128) NOT NULL DEFAULT '',
  op VARCHAR(45) NOT NULL DEFAULT '',
  barrier_id VARCHAR(45) NOT NULL DEFAULT '',
  reason VARCHAR(45) NOT NULL DEFAULT '',
  create_time TIMESTAMP(0) WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,
  update_time TIMESTAMP(0) WITH TIME ZONE NOT NULL DEFAULT CURRENT_TIMESTAMP,
  CONSTRAINT uniq_barrier UNIQUE (gid, branch_id, op, barrier_id)
);
