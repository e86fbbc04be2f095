-- The two databases the barrier scenario (S22) works in, recreated before every test by
-- tests/support/mariadb.py (`reset_schemas`), which runs each statement below on its own.
-- Written for this project (not taken from any sample): the barrier table has the columns and unique key
-- that dtmcli's barrier.py reads and writes (reference/dtm-protocol.md §8), and the account table is the
-- sample-style bank of reference/dtm-clients.md §1.6: users 1 and 2 with a known balance.
-- Every statement ends with ";" at the end of a line; lines starting with "--" are skipped.

DROP DATABASE IF EXISTS dtm_barrier;
CREATE DATABASE dtm_barrier DEFAULT CHARACTER SET utf8mb4;

-- One row per (gid, branch_id, op, barrier_id): dtmcli inserts with INSERT IGNORE, so the unique key is
-- what turns a repeated or late branch call into "0 rows affected" (a duplicate, a null compensation or a
-- hanging try). `reason` records which op wrote the row: "rollback" for a msg that a check-back closed.
CREATE TABLE dtm_barrier.barrier (
  id BIGINT NOT NULL AUTO_INCREMENT,
  trans_type VARCHAR(45) NOT NULL DEFAULT '',
  gid VARCHAR(128) NOT NULL DEFAULT '',
  branch_id VARCHAR(128) NOT NULL DEFAULT '',
  op VARCHAR(45) NOT NULL DEFAULT '',
  barrier_id VARCHAR(45) NOT NULL DEFAULT '',
  reason VARCHAR(45) NOT NULL DEFAULT '',
  create_time DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  update_time DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  UNIQUE KEY uniq_barrier (gid, branch_id, op, barrier_id)
) ENGINE = InnoDB;

DROP DATABASE IF EXISTS dtm_busi;
CREATE DATABASE dtm_busi DEFAULT CHARACTER SET utf8mb4;

-- `balance` is the settled amount; `trading_balance` holds what TCC tries have reserved and not yet
-- confirmed or cancelled (negative for money on its way out), so a try can refuse to overdraw.
CREATE TABLE dtm_busi.user_account (
  id INT NOT NULL AUTO_INCREMENT,
  user_id INT NOT NULL,
  balance DECIMAL(10, 2) NOT NULL DEFAULT 0,
  trading_balance DECIMAL(10, 2) NOT NULL DEFAULT 0,
  create_time DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  update_time DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  PRIMARY KEY (id),
  UNIQUE KEY uniq_user_id (user_id)
) ENGINE = InnoDB;

INSERT INTO dtm_busi.user_account (user_id, balance) VALUES (1, 1000.00), (2, 1000.00);
