-- admin_resume: an operator resumes the retries of a paused transaction (admin_pause.lua): it is due at once.
-- It leaves the "needs attention" index unless its rounds were failing before (transition.lua's attention).
-- KEYS[1] -> <prefix>:{t}:g:<gid>
-- KEYS[2] -> <prefix>:{t}:due
-- KEYS[3] -> <prefix>:{t}:att
-- ARGV[1] -> gid
-- ARGV[2] -> now_ms
-- Returns: {"OK"} | {"NOT_PAUSED", status} | {"NOT_FOUND"}
local gid = ARGV[1]
local now_ms = ARGV[2]

local status, paused, failing = unpack(redis.call('HMGET', KEYS[1], 'status', 'paused', 'failing_since'))
if not status then
  return {'NOT_FOUND'}
end
if not paused or status == 'succeed' or status == 'failed' then
  return {'NOT_PAUSED', status}
end

redis.call('HDEL', KEYS[1], 'paused')
redis.call('HSET', KEYS[1], 'update_time', now_ms)
redis.call('ZADD', KEYS[2], now_ms, gid)
if not failing then
  redis.call('ZREM', KEYS[3], gid)
end
return {'OK'}
