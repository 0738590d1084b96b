-- Commit (ARGV[4] = 'C') or release ('R') a reservation; a post-hoc charge without one.
-- ARGV: rid, usd, tokens, C|R, record_ms, idle_ms, scope specs (as for reserve).
-- Returns 1 committed, 2 duplicate, 3 post hoc (no reservation), 4 late (hold already swept).
local rid, usd, tok, final = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local record_ms, idle_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
local spec = specs(ARGV[7])
local n = (#KEYS - 1) / 2
local st = redis.call('HGET', KEYS[1], 'st')
if st == 'C' or st == 'R' then return 2 end

local code = 3
if st == 'H' then code = 1 end
for i = 1, n do
  local counter, lease = KEYS[2 * i], KEYS[2 * i + 1]
  if not drop_hold(counter, lease, rid) and st == 'H' then code = 4 end
  if final == 'C' then
    add(counter, 's', usd)
    add(counter, 'st', tok)
    redis.call('HINCRBY', counter, 'n', 1)
    if st ~= 'H' then
      -- A post-hoc charge may create the scope: give it its caps and expiry like a reserve
      -- would (a held reservation's reserve set both, within its lease).
      local v = redis.call('HMGET', counter, 'cu', 'ct')
      local cu, ct = caps(v[1], v[2], spec[i])
      store_caps(counter, cu, ct, v[1], v[2])
      keep(counter, lease, spec[i][4], idle_ms)
    end
  end
end
redis.call('HSET', KEYS[1], 'st', final, 'au', usd, 'at', tok)
redis.call('PEXPIRE', KEYS[1], record_ms)
return code
