-- Settles claimed idempotency keys (KEYS[i]) if their claim still holds.
-- Per key i: ARGV[3i-2] the claim's token, ARGV[3i-1] the state (A, Q or
-- U; empty: release, the entry failed and the key is free again),
-- ARGV[3i] the rest of the record (see claim.lua).
-- Returns how many were settled.
local n = 0
for i, key in ipairs(KEYS) do
  local token = ARGV[3 * i - 2]
  local state = ARGV[3 * i - 1]
  local rest = ARGV[3 * i]
  local v = redis.call('GET', key)
  if v then
    local vfp, vtoken = string.match(v, '^%u|([^|]*)|([^|]*)|')
    if vtoken == token then
      if state == '' then
        redis.call('DEL', key)
      else
        redis.call('SET', key, state .. '|' .. vfp .. '|' .. token .. '|0|' .. rest, 'KEEPTTL')
      end
      n = n + 1
    end
  end
end
return n
