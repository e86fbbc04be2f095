-- The Redis barrier: move an amount on a business key at most once per (gid, branch_id, op, barrier_id).
-- KEYS[1] -> the business key (an integer balance)
-- KEYS[2] -> this call's barrier key: <gid>-<branch_id>-<op>-<barrier_id>
-- KEYS[3] -> the forward op's barrier key (for a compensation; else the same as KEYS[2])
-- ARGV[1] -> amount (signed integer)
-- ARGV[2] -> "1" when this op is a compensation (cancel / compensate), else "0"
-- ARGV[3] -> barrier key lifetime, seconds
-- ARGV[4] -> this op's name, stored as the barrier key's value
-- Returns: "OK" (applied) | "DUPLICATE" (this call already ran, or came after its compensation)
--        | "NULL_COMPENSATION" (nothing to undo: recorded, not applied) | "FAILURE" (missing key or overdraft)
local amount = tonumber(ARGV[1])
local compensation = ARGV[2] == "1"
local ttl = tonumber(ARGV[3])
local op = ARGV[4]

-- The repeat check comes before the balance check: a repeated debit that emptied the account must still
-- answer success, not FAILURE.
if redis.call("EXISTS", KEYS[2]) == 1 then
  return "DUPLICATE"
end
local balance = redis.call("GET", KEYS[1])
if balance == false or tonumber(balance) + amount < 0 then
  return "FAILURE"
end
redis.call("SET", KEYS[2], op, "EX", ttl)
if compensation and redis.call("EXISTS", KEYS[3]) == 0 then
  -- Taking the forward op's key also turns its late arrival (suspension) into a DUPLICATE.
  redis.call("SET", KEYS[3], "rollback", "EX", ttl)
  return "NULL_COMPENSATION"
end
redis.call("INCRBY", KEYS[1], amount)
return "OK"
