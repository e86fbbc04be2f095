-- lease_renew: extend a shard lease, only if this node still holds it (token compare).
-- KEYS[1] -> <prefix>:{t}:lease
-- ARGV[1] -> lease value this node holds ("<node_id> <token>")
-- ARGV[2] -> ttl_ms
-- Returns: 1 if renewed, 0 if the lease is gone or held by another node
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
