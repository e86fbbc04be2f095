-- claim_due: take due transactions of one shard for this node, if it still holds the shard's lease.
-- The lease check and the claim are one script, so a node that lost its lease (fenced by the token)
-- can never claim work another node now owns. It also retires listing entries of expired data.
-- KEYS[1] -> <prefix>:{t}:lease
-- KEYS[2] -> <prefix>:{t}:due
-- KEYS[3] -> <prefix>:{t}:idx
-- KEYS[4] -> <prefix>:{t}:exp
-- ARGV[1] -> lease value this node holds ("<node_id> <token>")
-- ARGV[2] -> now_ms
-- ARGV[3] -> limit: most gids to claim
-- ARGV[4] -> claimed_until_ms: the claimed gids are not due again before then
-- Returns: {"OK", gid, ...} | {"LEASE_LOST"}
local lease = ARGV[1]
local now_ms = ARGV[2]
local limit = tonumber(ARGV[3])
local claimed_until_ms = ARGV[4]

if redis.call('GET', KEYS[1]) ~= lease then
  return {'LEASE_LOST'}
end

local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now_ms, 'LIMIT', 0, 256)
for _, gid in ipairs(expired) do
  redis.call('ZREM', KEYS[3], gid)
  redis.call('ZREM', KEYS[4], gid)
end

local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms, 'LIMIT', 0, limit)
-- Built as a table, not with unpack(): any limit works.
local reply = {'OK'}
for _, gid in ipairs(due) do
  redis.call('ZADD', KEYS[2], claimed_until_ms, gid)
  reply[#reply + 1] = gid
end
return reply
