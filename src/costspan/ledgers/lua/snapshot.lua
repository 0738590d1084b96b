-- Snapshot one scope: sweep its expired holds, then return "s h st ht n cu ct" ('-': no cap).
-- KEYS: counter, lease. ARGV: sweep_limit.
sweep(KEYS[1], KEYS[2], now_ms(), tonumber(ARGV[1]))
local v = redis.call('HMGET', KEYS[1], 's', 'h', 'st', 'ht', 'n', 'cu', 'ct')
return table.concat({v[1] or '0', v[2] or '0', v[3] or '0', v[4] or '0', v[5] or '0',
                     v[6] or '-', v[7] or '-'}, ' ')
