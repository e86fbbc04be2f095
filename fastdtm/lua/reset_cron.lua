-- reset_cron: bring forward transactions of one shard scheduled far in the future (resetCronTime).
-- KEYS[1] -> <prefix>:{t}:due
-- ARGV[1] -> threshold_ms: only gids scheduled after this move
-- ARGV[2] -> now_ms: their new next_cron_time
-- ARGV[3] -> limit: most gids to move
-- ARGV[4] -> the score of a paused transaction (admin_pause.lua): those stay where they are
-- Returns: {moved, more} where more = 1 if gids past the threshold are left after the limit
local threshold_ms = ARGV[1]
local now_ms = ARGV[2]
local limit = tonumber(ARGV[3])
local paused_score = ARGV[4]

local found = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. threshold_ms, '(' .. paused_score, 'LIMIT', 0, limit + 1)
local moved = math.min(#found, limit)
for i = 1, moved do
  redis.call('ZADD', KEYS[1], now_ms, found[i])
end
return {moved, #found > limit and 1 or 0}
