-- A quota lease: one process's slice of a hot scope's cap, held in the scope's counter like a
-- reservation (field r:<lease id>, scored in the lease set), renewed, resized and settled here.
-- KEYS: record (the lease's), counter, lease set (one scope, one slot).
-- ARGV: lease id, seq, spent usd, spent tokens, calls, need usd, need tokens, want usd,
--       want tokens, lease_ms, record_ms, idle_ms, sweep_limit, scope spec (as for reserve).
--
-- In one step: charge what the process spent inside its slice since its last flush (moving it
-- from held to spent, so spent + held does not move), then resize the slice: at least `need`
-- (the process's calls in flight, plus the call asking) or refuse, at most `want`, and never
-- more than a quarter of the room the others leave once `need` is met (near the cap slices
-- shrink, so no process sits on the last of it). Each flush carries a sequence number: a
-- retried flush (the reply was lost) is a duplicate and charges nothing twice.
-- Returns "<code> <slice usd> <slice tokens> s h st ht n cu ct" (counters after): code 1
-- granted, 0 refused (`need` does not fit; the slice keeps at most what still fits), 2
-- duplicate.
local rid, seq = ARGV[1], tonumber(ARGV[2])
local spent_u, spent_t, calls = ARGV[3], ARGV[4], ARGV[5]
local need_u, need_t = tonumber(ARGV[6]), tonumber(ARGV[7])
local want_u, want_t = tonumber(ARGV[8]), tonumber(ARGV[9])
local lease_ms, record_ms, idle_ms, limit =
  tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])
local spec = specs(ARGV[14])[1]
local counter, lease = KEYS[2], KEYS[3]

local function counters()
  local v = redis.call('HMGET', counter, 's', 'h', 'st', 'ht', 'n', 'cu', 'ct')
  return v, table.concat({v[1] or '0', v[2] or '0', v[3] or '0', v[4] or '0', v[5] or '0',
                          v[6] or '-', v[7] or '-'}, ' ')
end

local function held()
  local hold = redis.call('HGET', counter, 'r:' .. rid)
  if not hold then return 0, 0 end
  local u, t = string.match(hold, '^(%d+) (%d+)$')
  return tonumber(u), tonumber(t)
end

local function int(x) return string.format('%d', x) end

local last = redis.call('HGET', KEYS[1], 'q')
if last and tonumber(last) >= seq then
  local hu, ht = held()
  local _, words = counters()
  return '2 ' .. int(hu) .. ' ' .. int(ht) .. ' ' .. words
end

local now = now_ms()
sweep(counter, lease, now, limit)
local hu, ht = held()

-- The spend: charged once; it came out of the slice, so the slice shrinks by it.
add(counter, 's', spent_u)
add(counter, 'st', spent_t)
add(counter, 'n', calls)
local take_u, take_t = math.min(hu, tonumber(spent_u)), math.min(ht, tonumber(spent_t))
if take_u > 0 then redis.call('HINCRBY', counter, 'h', int(-take_u)) end
if take_t > 0 then redis.call('HINCRBY', counter, 'ht', int(-take_t)) end
hu, ht = hu - take_u, ht - take_t

local v = counters()
local cu, ct = caps(v[6], v[7], spec)
local s, h, st, sht = tonumber(v[1] or 0), tonumber(v[2] or 0), tonumber(v[3] or 0),
  tonumber(v[4] or 0)
-- Room for this slice: the cap less spend and everybody else's holds.
local room_u, room_t = math.huge, math.huge
if cu then room_u = tonumber(cu) - s - (h - hu) end
if ct then room_t = tonumber(ct) - st - (sht - ht) end

local code, new_u, new_t = 1, 0, 0
if need_u > room_u or need_t > room_t then
  code = 0
  new_u, new_t = math.max(math.min(hu, room_u), 0), math.max(math.min(ht, room_t), 0)
else
  local function size(need, want, room)
    if room == math.huge then return math.max(need, want) end
    return math.max(need, math.min(want, need + math.floor((room - need) / 4)))
  end
  new_u, new_t = size(need_u, want_u, room_u), size(need_t, want_t, room_t)
end

if new_u ~= hu then redis.call('HINCRBY', counter, 'h', int(new_u - hu)) end
if new_t ~= ht then redis.call('HINCRBY', counter, 'ht', int(new_t - ht)) end
if new_u > 0 or new_t > 0 then
  redis.call('HSET', counter, 'r:' .. rid, int(new_u) .. ' ' .. int(new_t))
  redis.call('ZADD', lease, now + lease_ms, rid)
else
  redis.call('HDEL', counter, 'r:' .. rid)
  redis.call('ZREM', lease, rid)
end
store_caps(counter, cu, ct, v[6], v[7])
keep(counter, lease, spec[4], idle_ms)
redis.call('HSET', KEYS[1], 'q', ARGV[2])
redis.call('PEXPIRE', KEYS[1], lease_ms + record_ms)
local _, words = counters()
return code .. ' ' .. int(new_u) .. ' ' .. int(new_t) .. ' ' .. words
