-- lease_release: give a shard lease up, only if this node still holds it (token compare).
-- KEYS[1] -> <prefix>:{t}:lease
-- ARGV[1] -> lease value this node holds ("<node_id> <token>")
-- Returns: 1 if released, 0 if the lease is gone or held by another node
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
