-- Shared by every costspan ledger script (prepended to each one).
--
-- KEYS[1] is the reservation record; KEYS[2i] and KEYS[2i+1] are scope i's counter hash and
-- lease set. A counter holds s/h (spent/held micro-USD), st/ht (spent/held tokens), n (calls),
-- cu/ct (caps) and one field r:<rid> = "<usd> <tokens>" per live hold. A lease set scores each
-- holding rid by its expiry (ms, server clock).
--
-- Scopes' settings come in one argument, four words per scope: "<cap usd> <cap tokens> <sticky>
-- <expire at>", '-' for none (one string instead of 4N arguments: cheaper on both ends).
--
-- Amounts travel as decimal strings from ARGV straight into HINCRBY: never through a Lua number
-- (doubles print as 1e+14), never negated by a "-" prefix on "0" (HINCRBY rejects "-0" after
-- earlier writes have happened, and a script does not roll back).

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function specs(text)
  local out = {}
  for cu, ct, sticky, expire_at in string.gmatch(text, '(%S+) (%S+) (%S+) (%S+)') do
    table.insert(out, {cu, ct, sticky, expire_at})
  end
  return out
end

local function sub(counter, field, amount)
  if amount ~= '0' then redis.call('HINCRBY', counter, field, '-' .. amount) end
end

local function add(counter, field, amount)
  if amount ~= '0' then redis.call('HINCRBY', counter, field, amount) end
end

-- Drop one hold from a counter (and its lease); returns true if it was there.
local function drop_hold(counter, lease, rid)
  local hold = redis.call('HGET', counter, 'r:' .. rid)
  redis.call('ZREM', lease, rid)
  if not hold then return false end
  local usd, tok = string.match(hold, '^(%d+) (%d+)$')
  sub(counter, 'h', usd)
  sub(counter, 'ht', tok)
  redis.call('HDEL', counter, 'r:' .. rid)
  return true
end

-- Release holds whose lease ran out (at most `limit` per call; the rest go next time).
local function sweep(counter, lease, now, limit)
  local expired = redis.call('ZRANGEBYSCORE', lease, '-inf', now, 'LIMIT', 0, limit)
  for _, rid in ipairs(expired) do drop_hold(counter, lease, rid) end
end

-- The effective caps of a scope: a sticky scope keeps the smallest cap it was ever given; a
-- configured limit's cap is the one given now. Returns strings, or false for no cap.
local function caps(stored_usd, stored_tok, spec)
  local sticky = spec[3] == '1'
  local function pick(stored, given)
    if given == '-' then
      if sticky then return stored or false end
      return false
    end
    if sticky and stored and tonumber(stored) < tonumber(given) then return stored end
    return given
  end
  return pick(stored_usd, spec[1]), pick(stored_tok, spec[2])
end

local function store_caps(counter, cu, ct, old_cu, old_ct)
  if cu then
    if cu ~= old_cu then redis.call('HSET', counter, 'cu', cu) end
  elseif old_cu then redis.call('HDEL', counter, 'cu') end
  if ct then
    if ct ~= old_ct then redis.call('HSET', counter, 'ct', ct) end
  elseif old_ct then redis.call('HDEL', counter, 'ct') end
end

-- Keep a counter and its lease set until the scope's window ends, or for idle_ms after use.
local function keep(counter, lease, expire_at, idle_ms)
  if expire_at ~= '-' then
    redis.call('EXPIREAT', counter, expire_at)
    redis.call('EXPIREAT', lease, expire_at)
  else
    redis.call('PEXPIRE', counter, idle_ms)
    redis.call('PEXPIRE', lease, idle_ms)
  end
end
