-- Extend: give a live reservation's holds a new lease (a call still in flight).
-- ARGV: rid, lease_ms, record_ms. Returns 1 renewed, 0 gone (settled, or never held here).
-- A hold already swept (its lease ran out) is not brought back: its room was given away, and
-- its late commit is still charged, once.
local rid, lease_ms, record_ms = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if redis.call('HGET', KEYS[1], 'st') ~= 'H' then return 0 end
local n = (#KEYS - 1) / 2
local expiry = now_ms() + lease_ms
local renewed = 0
for i = 1, n do
  local counter, lease = KEYS[2 * i], KEYS[2 * i + 1]
  if redis.call('HEXISTS', counter, 'r:' .. rid) == 1 then
    redis.call('ZADD', lease, 'XX', expiry, rid)
    renewed = 1
  end
end
if renewed == 1 then redis.call('PEXPIRE', KEYS[1], lease_ms + record_ms) end
return renewed
