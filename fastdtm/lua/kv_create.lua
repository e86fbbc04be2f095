-- kv_create: add a KV entry at version 1 and index its key, only if the entry is absent.
-- KEYS[1] -> <prefix>:{KV}:kv:<cat>:<k>   the entry hash
-- KEYS[2] -> <prefix>:{KV}:kvidx:<cat>    the category's keys, score 0 (ordered by ZRANGEBYLEX)
-- ARGV[1] -> k (the member to index: the script never derives it from a key name)
-- ARGV[2] -> v
-- ARGV[3] -> now_ms (create_time and update_time)
-- Returns: {"CREATED"} | {"EXISTS", stored_version}
local k = ARGV[1]
local v = ARGV[2]
local now_ms = ARGV[3]

local stored_version = redis.call('HGET', KEYS[1], 'version')
if stored_version then
  return {'EXISTS', stored_version}
end
redis.call('HSET', KEYS[1], 'v', v, 'version', 1, 'create_time', now_ms, 'update_time', now_ms)
redis.call('ZADD', KEYS[2], 0, k)
return {'CREATED'}
