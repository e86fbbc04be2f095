-- create: insert a new global transaction with its branches, only if the gid is absent.
-- KEYS[1] -> <prefix>:{t}:g:<gid>   the transaction hash
-- KEYS[2] -> <prefix>:{t}:b:<gid>   the branch list
-- KEYS[3] -> <prefix>:{t}:due       unfinished gid -> next_cron_time (ms)
-- KEYS[4] -> <prefix>:{t}:idx       gid -> create_time (ms)
-- KEYS[5] -> <prefix>:{t}:exp       finished gid -> data expiry (ms)
-- ARGV[1] -> gid
-- ARGV[2] -> now_ms (create_time)
-- ARGV[3] -> next_cron_ms, or "" when the transaction is created already finished
-- ARGV[4] -> expire_at_ms of a finished transaction, or "" when unfinished
-- ARGV[5] -> n: number of hash field/value pairs that follow
-- ARGV[6 .. 5+2n] -> field, value, ... (must include "status")
-- ARGV[6+2n ..] -> branch records (JSON text), in order
-- Returns: {"CREATED"} | {"EXISTS", stored_status}
local gid = ARGV[1]
local now_ms = ARGV[2]
local next_cron_ms = ARGV[3]
local expire_at_ms = ARGV[4]
local n_fields = tonumber(ARGV[5])

local existing = redis.call('HGET', KEYS[1], 'status')
if existing then
  return {'EXISTS', existing}
end

local last_field = 5 + 2 * n_fields
redis.call('HSET', KEYS[1], unpack(ARGV, 6, last_field))
if #ARGV > last_field then
  redis.call('RPUSH', KEYS[2], unpack(ARGV, last_field + 1, #ARGV))
end
redis.call('ZADD', KEYS[4], now_ms, gid)
-- A gid may come back after its finished data expired: it is live again.
redis.call('ZREM', KEYS[5], gid)
if next_cron_ms ~= '' then
  redis.call('ZADD', KEYS[3], next_cron_ms, gid)
end
if expire_at_ms ~= '' then
  redis.call('PEXPIREAT', KEYS[1], expire_at_ms)
  redis.call('PEXPIREAT', KEYS[2], expire_at_ms)
  redis.call('ZADD', KEYS[5], expire_at_ms, gid)
end
return {'CREATED'}
