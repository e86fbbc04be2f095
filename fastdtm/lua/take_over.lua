-- take_over: a status change that hands the transaction to a new round, which reads it back, in one call.
-- The submit of a prepared transaction (prepared -> submitted) and the abort of a prepared tcc/xa
-- (prepared -> aborting): the new status fences every round that held the old one (their writes expect
-- it), so the new round takes the transaction whatever its hold (see take.lua): its token, held until
-- its schedule. One call instead of a transition and a load.
-- KEYS[1] -> <prefix>:{t}:g:<gid>   the transaction hash
-- KEYS[2] -> <prefix>:{t}:b:<gid>   the branch list
-- KEYS[3] -> <prefix>:{t}:due       unfinished gid -> next_cron_time (ms)
-- ARGV[1] -> gid
-- ARGV[2] -> trans_type the request is for: a transaction of another type is refused
-- ARGV[3] -> expected current status
-- ARGV[4] -> new status
-- ARGV[5] -> next_cron_ms: the schedule, and the end of the new round's hold
-- ARGV[6] -> the new round's token
-- ARGV[7 ..] -> field, value, ... to set besides the status (update_time, next_cron_interval, ...)
-- Returns: {"OK", flat field/value list of the hash, branch records list, next_cron_ms}
--        | {"STALE", current_status} | {"WRONG_TYPE", trans_type} | {"NOT_FOUND"}
local gid = ARGV[1]
local next_cron_ms = ARGV[5]

local current, stored_type = unpack(redis.call('HMGET', KEYS[1], 'status', 'trans_type'))
if not current then
  return {'NOT_FOUND'}
end
if stored_type ~= ARGV[2] then
  return {'WRONG_TYPE', stored_type}
end
if current ~= ARGV[3] then
  return {'STALE', current}
end
-- A status change sets a handful of fields: far below unpack()'s limit.
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'holder', ARGV[6], 'held_until', next_cron_ms, unpack(ARGV, 7))
redis.call('ZADD', KEYS[3], next_cron_ms, gid)
return {'OK', redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1), next_cron_ms}
