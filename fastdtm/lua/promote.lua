-- promote: the submit of a prepared transaction: prepared -> submitted, then read it back, in one call.
-- transition + load for the hot path of msg and tcc, whose submit always finds what prepare stored:
-- one script instead of a failed create, a transition and a load.
-- KEYS[1] -> <prefix>:{t}:g:<gid>   the transaction hash
-- KEYS[2] -> <prefix>:{t}:b:<gid>   the branch list
-- KEYS[3] -> <prefix>:{t}:due       unfinished gid -> next_cron_time (ms)
-- ARGV[1] -> gid
-- ARGV[2] -> next_cron_ms to schedule
-- ARGV[3 ..] -> field, value, ... to set besides the status (update_time, next_cron_interval, ...)
-- Returns: {"OK", flat field/value list of the hash, branch records list, next_cron_ms}
--        | {"STALE", current_status} | {"NOT_FOUND"}
local current = redis.call('HGET', KEYS[1], 'status')
if not current then
  return {'NOT_FOUND'}
end
if current ~= 'prepared' then
  return {'STALE', current}
end
-- A submit sets a handful of fields: far below unpack()'s limit.
redis.call('HSET', KEYS[1], 'status', 'submitted', unpack(ARGV, 3))
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return {'OK', redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1), ARGV[2]}
