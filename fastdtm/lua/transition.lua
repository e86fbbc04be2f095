-- transition: compare-and-set the global status, write fields (incl. branch progress), reschedule or finish.
-- Recording a branch result is a transition whose new status equals the expected one: branch
-- progress lives in fields "s<i>" of the same hash, so one script covers both.
-- KEYS[1] -> <prefix>:{t}:g:<gid>
-- KEYS[2] -> <prefix>:{t}:b:<gid>
-- KEYS[3] -> <prefix>:{t}:due
-- KEYS[4] -> <prefix>:{t}:exp
-- KEYS[5] -> <prefix>:{t}:att       unfinished gid -> since when its rounds end in errors (the console's
--                                   "needs attention" view, admin_pause.lua)
-- ARGV[1] -> gid
-- ARGV[2] -> expected current status
-- ARGV[3] -> new status (may equal the expected one)
-- ARGV[4] -> next_cron_ms to schedule, "" to leave the schedule alone, "-" to drop it (finished)
-- ARGV[5] -> expire_at_ms when the transaction finishes, else ""
-- ARGV[6] -> the hold token of the round that writes, "" for a write that is not a round's (an operator's,
--            an API call's): a round whose token is no longer the stored holder lost the transaction
-- ARGV[7] -> the trans_type the writer expects, "" when it knows (a round does): another type is refused
-- ARGV[8] -> attention: "" leaves it, "-" clears it (a round ended without an error), "<ms>" records a round
--            that ended in an error: `retries` + 1, and `failing_since` and the att entry if not there yet
-- ARGV[9 ..] -> field, value, ... to set (a round's writes include held_until, see take.lua)
-- Returns: {"OK"} | {"STALE", current_status} | {"FENCED", current_holder} | {"WRONG_TYPE", trans_type}
--        | {"NOT_FOUND"}
local gid = ARGV[1]
local expected = ARGV[2]
local new_status = ARGV[3]
local next_cron_ms = ARGV[4]
local expire_at_ms = ARGV[5]
local holder = ARGV[6] or ''
local trans_type = ARGV[7] or ''
local attention = ARGV[8] or ''

-- failing_since and paused come with the same read: a gid is in att only while one of them is set (the
-- scripts that add it set one; those that clear both remove it), so att needs no ZREM when neither is.
local current, current_holder, stored_type, failing, paused =
  unpack(redis.call('HMGET', KEYS[1], 'status', 'holder', 'trans_type', 'failing_since', 'paused'))
if not current then
  return {'NOT_FOUND'}
end
if trans_type ~= '' and stored_type ~= trans_type then
  return {'WRONG_TYPE', stored_type}
end
if current ~= expected then
  return {'STALE', current}
end
current_holder = current_holder or ''
if holder ~= '' and current_holder ~= holder then
  return {'FENCED', current_holder}
end

-- Lua's unpack() is bounded by the C stack (about 8000 values): fields go in runs of at most 1000 values (even,
-- so pairs stay whole), and a large transaction can never fail halfway through its writes. The first run
-- carries the status when it changes: the usual write is one HSET. (Loops, not a helper taking a closure:
-- a closure is built at every call of the script.)
local from = 9
if new_status ~= expected then
  local to = math.min(from + 997, #ARGV)
  redis.call('HSET', KEYS[1], 'status', new_status, unpack(ARGV, from, to))
  from = to + 1
end
for i = from, #ARGV, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
if next_cron_ms == '-' then
  redis.call('ZREM', KEYS[3], gid)
elseif next_cron_ms ~= '' then
  redis.call('ZADD', KEYS[3], next_cron_ms, gid)
end
if expire_at_ms ~= '' then
  redis.call('PEXPIREAT', KEYS[1], expire_at_ms)
  redis.call('PEXPIREAT', KEYS[2], expire_at_ms)
  redis.call('ZADD', KEYS[4], expire_at_ms, gid)
  if failing or paused then
    redis.call('ZREM', KEYS[5], gid)
  end
elseif attention == '-' then
  if failing or paused then
    redis.call('ZREM', KEYS[5], gid)
  end
  if failing then  -- `retries` is set only with it (below)
    redis.call('HDEL', KEYS[1], 'failing_since', 'retries')
  end
elseif attention ~= '' then
  redis.call('HINCRBY', KEYS[1], 'retries', 1)
  if redis.call('HSETNX', KEYS[1], 'failing_since', attention) == 1 then
    redis.call('ZADD', KEYS[5], attention, gid)
  end
end
return {'OK'}
