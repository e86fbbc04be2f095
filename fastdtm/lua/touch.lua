-- touch: move an unfinished transaction's next_cron_time, whatever its status (resetNextCronTime).
-- Never before the end of a round's hold (take.lua): a transaction a round is acting on is looked at
-- again when that round is done with it, not by a second round at the same time.
-- KEYS[1] -> <prefix>:{t}:g:<gid>
-- KEYS[2] -> <prefix>:{t}:due
-- ARGV[1] -> gid
-- ARGV[2] -> next_cron_ms
-- ARGV[3] -> now_ms (update_time)
-- Returns: {"OK", status} | {"FINISHED", status} (not in the due index: nothing to move) | {"NOT_FOUND"}
--        | {"PAUSED", paused_ms} (an operator paused its retries: resume it instead, admin_resume.lua)
local gid = ARGV[1]
local next_cron_ms = tonumber(ARGV[2])
local now_ms = ARGV[3]

local status, held, paused = unpack(redis.call('HMGET', KEYS[1], 'status', 'held_until', 'paused'))
if not status then
  return {'NOT_FOUND'}
end
if not redis.call('ZSCORE', KEYS[2], gid) then
  return {'FINISHED', status}
end
if paused then
  return {'PAUSED', paused}
end
if held and tonumber(held) > next_cron_ms then
  next_cron_ms = tonumber(held)
end
-- %d: a number passed to Redis from Lua must not turn into 1.7e+12 notation.
redis.call('ZADD', KEYS[2], string.format('%d', next_cron_ms), gid)
redis.call('HSET', KEYS[1], 'update_time', now_ms)
return {'OK', status}
