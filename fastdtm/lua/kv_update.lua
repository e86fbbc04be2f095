-- kv_update: compare-and-set a KV entry on its version: new value, version + 1, update_time.
-- KEYS[1] -> <prefix>:{KV}:kv:<cat>:<k>   the entry hash
-- ARGV[1] -> expected version (the one the caller read)
-- ARGV[2] -> new v
-- ARGV[3] -> now_ms (update_time)
-- Returns: {"OK", new_version} | {"VERSION_MISMATCH", stored_version} | {"NOT_FOUND"}
local expected = ARGV[1]
local v = ARGV[2]
local now_ms = ARGV[3]

local stored_version = redis.call('HGET', KEYS[1], 'version')
if not stored_version then
  return {'NOT_FOUND'}
end
if stored_version ~= expected then
  return {'VERSION_MISMATCH', stored_version}
end
local new_version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'v', v, 'update_time', now_ms)
return {'OK', tostring(new_version)}
