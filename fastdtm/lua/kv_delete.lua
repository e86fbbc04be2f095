-- kv_delete: delete a KV entry and take its key out of the category's index, optionally only at a version.
-- KEYS[1] -> <prefix>:{KV}:kv:<cat>:<k>   the entry hash
-- KEYS[2] -> <prefix>:{KV}:kvidx:<cat>    the category's keys
-- ARGV[1] -> k (the index member)
-- ARGV[2] -> expected version, or "" to delete whatever version is stored
-- Returns: {"OK"} | {"VERSION_MISMATCH", stored_version} | {"NOT_FOUND"}
local k = ARGV[1]
local expected = ARGV[2]

local stored_version = redis.call('HGET', KEYS[1], 'version')
if not stored_version then
  return {'NOT_FOUND'}
end
if expected ~= '' and stored_version ~= expected then
  return {'VERSION_MISMATCH', stored_version}
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], k)
return {'OK'}
