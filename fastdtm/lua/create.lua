-- create: insert a new global transaction with its branches, only if the gid is absent.
-- A gid taken by a transaction of another type is refused: a prepare or submit of the wrong type must
-- never touch someone else's transaction.
-- KEYS[1] -> <prefix>:{t}:g:<gid>   the transaction hash
-- KEYS[2] -> <prefix>:{t}:b:<gid>   the branch list
-- KEYS[3] -> <prefix>:{t}:due       unfinished gid -> next_cron_time (ms)
-- KEYS[4] -> <prefix>:{t}:idx       gid -> create_time (ms)
-- KEYS[5] -> <prefix>:{t}:exp       finished gid -> data expiry (ms)
-- ARGV[1] -> gid
-- ARGV[2] -> trans_type (also among the fields)
-- ARGV[3] -> now_ms (create_time)
-- ARGV[4] -> next_cron_ms, or "" when the transaction is created already finished
-- ARGV[5] -> expire_at_ms of a finished transaction, or "" when unfinished
-- ARGV[6] -> n: number of hash field/value pairs that follow
-- ARGV[7 .. 6+2n] -> field, value, ... (must include "status")
-- ARGV[7+2n ..] -> branch records (JSON text), in order
-- Returns: {"CREATED"} | {"EXISTS", stored_status} | {"WRONG_TYPE", stored_type}
local gid = ARGV[1]
local trans_type = ARGV[2]
local now_ms = ARGV[3]
local next_cron_ms = ARGV[4]
local expire_at_ms = ARGV[5]
local n_fields = tonumber(ARGV[6])

-- Lua's unpack() is bounded by the C stack (about 8000 values): write long argument runs in chunks,
-- so a large transaction can never fail halfway through its writes.
local function each_chunk(from, to, write)
  local step = 1000
  for i = from, to, step do
    write(unpack(ARGV, i, math.min(i + step - 1, to)))
  end
end

local existing, stored_type = unpack(redis.call('HMGET', KEYS[1], 'status', 'trans_type'))
if existing then
  if stored_type ~= trans_type then
    return {'WRONG_TYPE', stored_type}
  end
  return {'EXISTS', existing}
end

local last_field = 6 + 2 * n_fields
-- Chunks of field/value pairs must not split a pair: 1000 is even.
each_chunk(7, last_field, function(...) redis.call('HSET', KEYS[1], ...) end)
each_chunk(last_field + 1, #ARGV, function(...) redis.call('RPUSH', KEYS[2], ...) end)
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
