-- touch: move an unfinished transaction's next_cron_time, whatever its status.
-- KEYS[1] -> <prefix>:{t}:g:<gid>
-- KEYS[2] -> <prefix>:{t}:due
-- ARGV[1] -> gid
-- ARGV[2] -> next_cron_ms
-- ARGV[3] -> now_ms (update_time)
-- Returns: {"OK", status} | {"FINISHED", status} (not in the due index: nothing to move) | {"NOT_FOUND"}
local gid = ARGV[1]
local next_cron_ms = ARGV[2]
local now_ms = ARGV[3]

local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return {'NOT_FOUND'}
end
if not redis.call('ZSCORE', KEYS[2], gid) then
  return {'FINISHED', status}
end
redis.call('ZADD', KEYS[2], next_cron_ms, gid)
redis.call('HSET', KEYS[1], 'update_time', now_ms)
return {'OK', status}
