-- take: a round takes a transaction that no other round holds, and reads it, in one call.
-- A hold is a round's exclusive right to act on a transaction: the hash field `holder` is the token of
-- the round that took it last (every write of a round names its token, so a round that was taken over
-- can write nothing), and `held_until` (ms, 0 = free) is when the hold ends unless the round's next write
-- extends it. A round sends no branch call after its hold ends (engine.py); a take before then finds the
-- transaction held. Tokens are unique, not counters: a take lost in a failover cannot be repeated by
-- another round with the same token.
-- The cron takes what `claim_due` returned; a repeated submit or abort takes it to run a round at once.
-- KEYS[1] -> <prefix>:{t}:g:<gid>   the transaction hash
-- KEYS[2] -> <prefix>:{t}:b:<gid>   the branch list
-- KEYS[3] -> <prefix>:{t}:due       unfinished gid -> next_cron_time (ms)
-- ARGV[1] -> gid
-- ARGV[2] -> now_ms: a hold that ends after it is another round's
-- ARGV[3] -> held_until_ms: the new hold's end, also the transaction's schedule (a crashed round is
--            retried then)
-- ARGV[4] -> the new round's token
-- Returns: {"OK", flat field/value list of the hash, branch records list, held_until_ms}
--        | {"HELD", held_until_ms} | {"PAUSED", paused_ms} | {"FINISHED", status} | {"NOT_FOUND"}
-- PAUSED: an operator paused its retries (admin_pause.lua); no round runs until it is resumed.
-- FINISHED and NOT_FOUND also drop the gid from the due index: there is nothing left to schedule.
local gid = ARGV[1]
local now_ms = tonumber(ARGV[2])
local held_until_ms = ARGV[3]

local status, held, paused = unpack(redis.call('HMGET', KEYS[1], 'status', 'held_until', 'paused'))
if not status then
  redis.call('ZREM', KEYS[3], gid)
  return {'NOT_FOUND'}
end
-- The finished statuses (states.TERMINAL).
if status == 'succeed' or status == 'failed' then
  redis.call('ZREM', KEYS[3], gid)
  return {'FINISHED', status}
end
if held and tonumber(held) > now_ms then
  return {'HELD', held}
end
if paused then
  return {'PAUSED', paused}
end

redis.call('HSET', KEYS[1], 'holder', ARGV[4], 'held_until', held_until_ms)
redis.call('ZADD', KEYS[3], held_until_ms, gid)
return {'OK', redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1), held_until_ms}
