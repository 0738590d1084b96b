-- Undo a hold of the spread layout: a call held this scope, then another scope refused it.
-- KEYS: record, counter, lease (one scope, one slot). ARGV: rid.
-- Drops the hold and forgets the reservation, as if the reserve had never run here (so a
-- retried reserve is checked afresh). Returns 1 if there was a hold, 0 if not.
local rid = ARGV[1]
if redis.call('HGET', KEYS[1], 'st') ~= 'H' then return 0 end
drop_hold(KEYS[2], KEYS[3], rid)
redis.call('DEL', KEYS[1])
return 1
