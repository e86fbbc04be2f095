-- register_branch: append branch records to a prepared transaction, refusing a (branch_id, op) seen before.
-- Each record's (branch_id, op) is remembered as a field "u:<branch_id>:<op>" of the transaction
-- hash, so the duplicate check is a field of the script's one HMGET instead of a scan of the list.
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

-- Lua's unpack() is bounded by the C stack (about 8000 values): a long list (a call registering hundreds of
-- records) goes to Redis in chunks of 1000 (even, so that field/value pairs stay whole), their replies joined.
local function call_in_chunks(command, key, list)
  local step = 1000
  if #list <= step then
    return redis.call(command, key, unpack(list))
  end
  local replies = {}
  for i = 1, #list, step do
    local reply = redis.call(command, key, unpack(list, i, math.min(i + step - 1, #list)))
    if type(reply) == 'table' then
      for _, value in ipairs(reply) do
        replies[#replies + 1] = value
      end
    end
  end
  return replies
end

-- Every check reads one HMGET: the status, type and protocol, then each record's unique field.
local names = {'status', 'trans_type', 'protocol'}
for i = 6, #ARGV, 3 do
  names[#names + 1] = ARGV[i]
end
local stored = call_in_chunks('HMGET', KEYS[1], names)
local status, stored_type = stored[1], stored[2]
if not status then
  return {'NOT_FOUND'}
end
if stored_type ~= trans_type then
  return {'WRONG_TYPE', stored_type}
end
if status ~= 'prepared' then
  return {'NOT_PREPARED', status}
end
-- A hash without the field was stored with the default protocol (empty values are left out).
local stored_protocol = stored[3] or 'http'
if stored_protocol ~= protocol then
  return {'WRONG_PROTOCOL', stored_protocol}
end
local index = redis.call('LLEN', KEYS[2])
if index + (#ARGV - 4) / 3 > max_records then
  return {'TOO_MANY', index}
end
-- Checked against the hash and against the records earlier in this same call.
local seen = {}
for k = 4, #names do
  if seen[names[k]] or stored[k] then
    return {'DUPLICATE', names[k]}
  end
  seen[names[k]] = true
end

-- All records in one RPUSH, all fields in one HSET.
local records, fields = {}, {}
for i = 5, #ARGV, 3 do
  records[#records + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
  fields[#fields + 1] = '1'
  if ARGV[i + 2] ~= 'prepared' then
    -- No finish time, as DTM: the client reports a result, the coordinator did not finish anything.
    fields[#fields + 1] = 's' .. index
    fields[#fields + 1] = ARGV[i + 2] .. ' 0'
  end
  index = index + 1
end
fields[#fields + 1] = 'update_time'
fields[#fields + 1] = now_ms
if #records > 0 then
  call_in_chunks('RPUSH', KEYS[2], records)
end
call_in_chunks('HSET', KEYS[1], fields)
return {'OK'}
