-- load: read a transaction and its branch records in one round trip.
-- KEYS[1] -> <prefix>:{t}:g:<gid>
-- KEYS[2] -> <prefix>:{t}:b:<gid>
-- Returns: {} when absent | {flat field/value list of the hash, branch records list}
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then
  return {}
end
return {fields, redis.call('LRANGE', KEYS[2], 0, -1)}
