-- load: read a transaction, its branch records and its schedule in one round trip.
-- The schedule lives only in the due index (one source of truth); finished transactions have none.
-- KEYS[1] -> <prefix>:{t}:g:<gid>
-- KEYS[2] -> <prefix>:{t}:b:<gid>
-- KEYS[3] -> <prefix>:{t}:due
-- ARGV[1] -> gid
-- Returns: {} when absent | {flat field/value list of the hash, branch records list, next_cron_ms or ""}
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then
  return {}
end
local next_cron_ms = redis.call('ZSCORE', KEYS[3], ARGV[1]) or ''
return {fields, redis.call('LRANGE', KEYS[2], 0, -1), next_cron_ms}
