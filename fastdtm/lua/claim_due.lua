-- claim_due: take due transactions of one shard for this node, if it still holds the shard's lease, and say
-- when the shard next needs a look. The lease check and the claim are one script, so a node that lost its
-- lease (fenced by the token) can never claim work another node now owns. It also retires listing entries of
-- expired data.
-- KEYS[1] -> <prefix>:{t}:lease
-- KEYS[2] -> <prefix>:{t}:due
-- KEYS[3] -> <prefix>:{t}:idx
-- KEYS[4] -> <prefix>:{t}:exp
-- ARGV[1] -> lease value this node holds ("<node_id> <token>")
-- ARGV[2] -> now_ms
-- ARGV[3] -> limit: most gids to claim
-- ARGV[4] -> claimed_until_ms: the claimed gids are not due again before then
-- Returns: {"OK", next_ms, gid, ...} | {"LEASE_LOST"}
--   next_ms: the earliest score left in `due` or `exp` after the claim (as Redis prints it; "" when both are
--   empty): nothing in this shard needs the cron before then, unless written later (the cron's wake rule).
local lease = ARGV[1]
local now_ms = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local claimed_until_ms = ARGV[4]

if redis.call('GET', KEYS[1]) ~= lease then
  return {'LEASE_LOST'}
end

-- Each set is looked at by its head first: an idle shard costs one command per set, not a range query.
local function head(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return first[2]
end

local expiring = head(KEYS[4])
if expiring and tonumber(expiring) <= now_ms then
  local expired = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now_ms, 'LIMIT', 0, 256)
  for _, gid in ipairs(expired) do
    redis.call('ZREM', KEYS[3], gid)
    redis.call('ZREM', KEYS[4], gid)
  end
  expiring = head(KEYS[4])
end

-- Built as a table, not with unpack(): any limit works.
local reply = {'OK', ''}
local due = head(KEYS[2])
if due and tonumber(due) <= now_ms then
  for _, gid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms, 'LIMIT', 0, limit)) do
    redis.call('ZADD', KEYS[2], claimed_until_ms, gid)
    reply[#reply + 1] = gid
  end
  due = head(KEYS[2])
end

if due and (not expiring or tonumber(due) < tonumber(expiring)) then
  reply[2] = due
elseif expiring then
  reply[2] = expiring
end
return reply
