-- Reserve: hold usd/tokens in every scope, or in none.
-- ARGV: rid, usd, tokens, lease_ms, record_ms, idle_ms, sweep_limit, scope specs.
-- Returns one string: "<code> <failed index>" then per scope "s h st ht n cu ct" as they were
-- before this hold ('-' for no cap). Code 1 granted, 0 refused (failed index from 1), 2 duplicate.
local rid, usd, tok = ARGV[1], ARGV[2], ARGV[3]
local lease_ms, record_ms, idle_ms, limit =
  tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local spec = specs(ARGV[8])
local n = (#KEYS - 1) / 2
local now = now_ms()
local duplicate = redis.call('EXISTS', KEYS[1]) == 1

local code, failed = 1, 0
if duplicate then code = 2 end
local out, seen = {}, {}
for i = 1, n do
  local counter, lease = KEYS[2 * i], KEYS[2 * i + 1]
  if not duplicate then sweep(counter, lease, now, limit) end
  local v = redis.call('HMGET', counter, 's', 'h', 'st', 'ht', 'n', 'cu', 'ct')
  local cu, ct = caps(v[6], v[7], spec[i])
  seen[i] = {cu, ct, v}
  if code == 1 and failed == 0 and
     ((cu and tonumber(usd) > tonumber(cu) - tonumber(v[1] or 0) - tonumber(v[2] or 0)) or
      (ct and tonumber(tok) > tonumber(ct) - tonumber(v[3] or 0) - tonumber(v[4] or 0))) then
    code, failed = 0, i
  end
  out[i] = table.concat({v[1] or '0', v[2] or '0', v[3] or '0', v[4] or '0', v[5] or '0',
                         cu or '-', ct or '-'}, ' ')
end
local reply = code .. ' ' .. failed .. ' ' .. table.concat(out, ' ')

if code == 0 then
  -- Tightened caps stick even when the reservation is refused: a scope never loosens.
  for i = 1, n do
    if spec[i][3] == '1' then
      local s = seen[i]
      store_caps(KEYS[2 * i], s[1], s[2], s[3][6], s[3][7])
      keep(KEYS[2 * i], KEYS[2 * i + 1], spec[i][4], idle_ms)
    end
  end
end
if code ~= 1 then return reply end

-- Every cap fits: write every scope.
local expiry = now + lease_ms
for i = 1, n do
  local counter, lease, s = KEYS[2 * i], KEYS[2 * i + 1], seen[i]
  add(counter, 'h', usd)
  add(counter, 'ht', tok)
  redis.call('HSET', counter, 'r:' .. rid, usd .. ' ' .. tok)
  store_caps(counter, s[1], s[2], s[3][6], s[3][7])
  redis.call('ZADD', lease, expiry, rid)
  keep(counter, lease, spec[i][4], idle_ms)
end
redis.call('HSET', KEYS[1], 'st', 'H', 'u', usd, 't', tok)
redis.call('PEXPIRE', KEYS[1], lease_ms + record_ms)
return reply
