-- Reserve: hold usd/tokens in every scope, or in none.
-- ARGV: rid, usd, tokens, lease_ms, record_ms, idle_ms, sweep_limit,
--       then per scope: cap_usd, cap_tokens, sticky ('1'|'0'), expire_at ('' = idle expiry).
-- Returns {code, failed_index, state...}: code 1 granted, 0 refused, 2 duplicate.
local rid, usd, tok = ARGV[1], ARGV[2], ARGV[3]
local lease_ms, record_ms, idle_ms, limit =
  tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local n = (#KEYS - 1) / 2
local now = now_ms()
local duplicate = redis.call('EXISTS', KEYS[1]) == 1

local out = {1, 0}
if duplicate then out[1] = 2 end
local effective = {}
for i = 1, n do
  local counter, lease, a = KEYS[2 * i], KEYS[2 * i + 1], 7 + (i - 1) * 4
  if not duplicate then sweep(counter, lease, now, limit) end
  local v = redis.call('HMGET', counter, 's', 'h', 'st', 'ht', 'n', 'cu', 'ct')
  local cu, ct = caps(v[6], v[7], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
  effective[i] = {cu, ct, v[6], v[7]}
  local s = state(v, cu, ct)
  if out[1] == 1 and out[2] == 0 and
     ((cu and tonumber(usd) > tonumber(cu) - s[1] - s[2]) or
      (ct and tonumber(tok) > tonumber(ct) - s[3] - s[4])) then
    out[1], out[2] = 0, i
  end
  for _, x in ipairs(s) do table.insert(out, x) end
end

-- Tightened caps stick even when the reservation is refused: a scope never loosens.
local function store_caps(counter, cu, ct, old_cu, old_ct)
  if cu then
    if cu ~= old_cu then redis.call('HSET', counter, 'cu', cu) end
  elseif old_cu then redis.call('HDEL', counter, 'cu') end
  if ct then
    if ct ~= old_ct then redis.call('HSET', counter, 'ct', ct) end
  elseif old_ct then redis.call('HDEL', counter, 'ct') end
end
if out[1] == 0 then
  for i = 1, n do
    local a = 7 + (i - 1) * 4
    if ARGV[a + 3] == '1' then
      local e = effective[i]
      store_caps(KEYS[2 * i], e[1], e[2], e[3], e[4])
      keep(KEYS[2 * i], KEYS[2 * i + 1], ARGV[a + 4], idle_ms)
    end
  end
end
if out[1] ~= 1 then return out end

-- Every cap fits: write every scope.
local expiry = now + lease_ms
for i = 1, n do
  local counter, lease, a = KEYS[2 * i], KEYS[2 * i + 1], 7 + (i - 1) * 4
  add(counter, 'h', usd)
  add(counter, 'ht', tok)
  redis.call('HSET', counter, 'r:' .. rid, usd .. ' ' .. tok)
  local e = effective[i]
  store_caps(counter, e[1], e[2], e[3], e[4])
  redis.call('ZADD', lease, expiry, rid)
  keep(counter, lease, ARGV[a + 4], idle_ms)
  local base = 2 + (i - 1) * 7
  out[base + 2] = out[base + 2] + tonumber(usd)
  out[base + 4] = out[base + 4] + tonumber(tok)
end
redis.call('HSET', KEYS[1], 'st', 'H', 'u', usd, 't', tok)
redis.call('PEXPIRE', KEYS[1], lease_ms + record_ms)
return out
