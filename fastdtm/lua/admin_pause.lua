-- admin_pause: an operator pauses the retries of a transaction (the console's Pause). No round runs on it
-- until admin_resume: its due score becomes the paused score, which no claim reaches and resetCronTime leaves
-- alone, and take.lua / touch.lua refuse it. The holder becomes the operator's token, so a round that was
-- paused itself past its hold (a frozen node) can write nothing when it wakes (transition.lua: FENCED).
-- Only a transaction that retries can be paused: `submitted` or `aborting` (a prepared one waits for its
-- client), and not while a round holds it (it is acting now: try again when the round is over).
-- KEYS[1] -> <prefix>:{t}:g:<gid>
-- KEYS[2] -> <prefix>:{t}:due
-- KEYS[3] -> <prefix>:{t}:att
-- ARGV[1] -> gid
-- ARGV[2] -> now_ms
-- ARGV[3] -> the paused score (models.PAUSED_MS)
-- ARGV[4] -> the operator's token (the new holder)
-- Returns: {"OK"} | {"ALREADY", paused_ms} | {"HELD", held_until_ms} | {"STALE", status} | {"NOT_FOUND"}
local gid = ARGV[1]
local now_ms = ARGV[2]

local status, held, paused = unpack(redis.call('HMGET', KEYS[1], 'status', 'held_until', 'paused'))
if not status then
  return {'NOT_FOUND'}
end
if status ~= 'submitted' and status ~= 'aborting' then
  return {'STALE', status}
end
if paused then
  return {'ALREADY', paused}
end
if held and tonumber(held) > tonumber(now_ms) then
  return {'HELD', held}
end

redis.call('HSET', KEYS[1], 'paused', now_ms, 'holder', ARGV[4], 'held_until', 0, 'update_time', now_ms)
redis.call('ZADD', KEYS[2], ARGV[3], gid)
redis.call('ZADD', KEYS[3], 'NX', now_ms, gid)
return {'OK'}
