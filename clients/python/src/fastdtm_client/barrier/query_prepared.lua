-- The Redis msg check-back: has the msg's local step committed? Closes it for good when it has not.
-- KEYS[1] -> <gid>-00-msg-01, the msg's barrier key
-- ARGV[1] -> barrier key lifetime, seconds
-- Returns: "SUCCESS" (the local step ran) | "FAILURE" (it did not, and now never will)
local value = redis.call("GET", KEYS[1])
if value == false then
  redis.call("SET", KEYS[1], "rollback", "EX", tonumber(ARGV[1]))
  return "FAILURE"
end
if value == "rollback" then
  return "FAILURE"
end
return "SUCCESS"
