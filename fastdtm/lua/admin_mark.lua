-- admin_mark: an operator decides one branch (the console's Skip = succeed, or Mark failed), with a reason
-- kept beside it (field o<i>, shown by /query). The rounds then go on as if the branch had answered so: the
-- transaction is due at once (unless paused). Checked first: the transaction is in the status the operator
-- saw (the rules of what may be marked depend on it, fastdtm/notes.py), no round holds it, the branch at that
-- index is the one named, and it has no result yet. The holder becomes the operator's token, so a round
-- that lost its hold while frozen can write nothing when it wakes (its result would contradict the mark).
-- KEYS[1] -> <prefix>:{t}:g:<gid>
-- KEYS[2] -> <prefix>:{t}:b:<gid>
-- KEYS[3] -> <prefix>:{t}:due
-- ARGV[1] -> gid
-- ARGV[2] -> index of the branch in the branch list (0-based)
-- ARGV[3] -> its branch_id
-- ARGV[4] -> its op
-- ARGV[5] -> the transaction status the operator's request was checked against
-- ARGV[6] -> the branch's new status: succeed | failed
-- ARGV[7] -> the mark, JSON [action, reason, at_ms]
-- ARGV[8] -> now_ms
-- ARGV[9] -> the operator's token (the new holder)
-- Returns: {"OK"} | {"NOT_FOUND"} | {"STALE", status} | {"HELD", held_until_ms} | {"NO_BRANCH"}
--        | {"BRANCH_DONE", "<status> <finish_ms>"}
local gid = ARGV[1]
local index = tonumber(ARGV[2])
local now_ms = ARGV[8]

local status, held, paused = unpack(redis.call('HMGET', KEYS[1], 'status', 'held_until', 'paused'))
if not status then
  return {'NOT_FOUND'}
end
if status ~= ARGV[5] then
  return {'STALE', status}
end
if held and tonumber(held) > tonumber(now_ms) then
  return {'HELD', held}
end
local record = redis.call('LINDEX', KEYS[2], index)
if not record then
  return {'NO_BRANCH'}
end
local fields = cjson.decode(record)
if fields[1] ~= ARGV[3] or fields[2] ~= ARGV[4] then
  return {'NO_BRANCH'}
end
local progress = redis.call('HGET', KEYS[1], 's' .. index)
if progress then
  return {'BRANCH_DONE', progress}
end

redis.call('HSET', KEYS[1], 's' .. index, ARGV[6] .. ' ' .. now_ms, 'o' .. index, ARGV[7],
  'holder', ARGV[9], 'held_until', 0, 'update_time', now_ms)
if not paused then
  redis.call('ZADD', KEYS[3], now_ms, gid)
end
return {'OK'}
