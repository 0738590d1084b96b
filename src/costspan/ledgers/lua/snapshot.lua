-- Snapshot one scope: sweep its expired holds, then return its state (see common.lua).
-- KEYS: counter, lease. ARGV: sweep_limit.
sweep(KEYS[1], KEYS[2], now_ms(), tonumber(ARGV[1]))
local v = redis.call('HMGET', KEYS[1], 's', 'h', 'st', 'ht', 'n', 'cu', 'ct')
return state(v, v[6], v[7])
