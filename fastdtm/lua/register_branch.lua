-- register_branch: append branch records to a prepared transaction, refusing a (branch_id, op) seen before.
-- Each record's (branch_id, op) is remembered as a field "u:<branch_id>:<op>" of the transaction
-- hash, so the duplicate check is one HEXISTS instead of a scan of the list.
-- KEYS[1] -> <prefix>:{t}:g:<gid>
-- KEYS[2] -> <prefix>:{t}:b:<gid>
-- ARGV[1] -> now_ms (update_time)
-- ARGV[2] -> trans_type the branches belong to
-- ARGV[3] -> the most records a transaction may have (models.MAX_BRANCHES)
-- ARGV[4] -> the protocol the records' bodies are kept for ("http": text, "grpc": base64): the transaction's
--            must be the same
-- ARGV[5..] -> triples: record (JSON text), unique field "u:<branch_id>:<op>", status
--              ("prepared" or the status the record is registered with, e.g. a workflow result)
-- Returns: {"OK"} | {"NOT_FOUND"} | {"WRONG_TYPE", trans_type} | {"NOT_PREPARED", status}
--        | {"WRONG_PROTOCOL", protocol} | {"DUPLICATE", unique_field} | {"TOO_MANY", records_already_there}
local now_ms = ARGV[1]
local trans_type = ARGV[2]
local max_records = tonumber(ARGV[3])
local protocol = ARGV[4]

local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return {'NOT_FOUND'}
end
local stored_type = redis.call('HGET', KEYS[1], 'trans_type')
if stored_type ~= trans_type then
  return {'WRONG_TYPE', stored_type}
end
if status ~= 'prepared' then
  return {'NOT_PREPARED', status}
end
-- A hash without the field was stored with the default protocol (empty values are left out).
local stored_protocol = redis.call('HGET', KEYS[1], 'protocol') or 'http'
if stored_protocol ~= protocol then
  return {'WRONG_PROTOCOL', stored_protocol}
end
local index = redis.call('LLEN', KEYS[2])
if index + (#ARGV - 4) / 3 > max_records then
  return {'TOO_MANY', index}
end
-- Checked against the hash and against the records earlier in this same call.
local seen = {}
for i = 6, #ARGV, 3 do
  if seen[ARGV[i]] or redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    return {'DUPLICATE', ARGV[i]}
  end
  seen[ARGV[i]] = true
end

for i = 5, #ARGV, 3 do
  redis.call('RPUSH', KEYS[2], ARGV[i])
  redis.call('HSET', KEYS[1], ARGV[i + 1], '1')
  if ARGV[i + 2] ~= 'prepared' then
    -- No finish time, as DTM: the client reports a result, the coordinator did not finish anything.
    redis.call('HSET', KEYS[1], 's' .. index, ARGV[i + 2] .. ' 0')
  end
  index = index + 1
end
redis.call('HSET', KEYS[1], 'update_time', now_ms)
return {'OK'}
