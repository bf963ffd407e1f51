-- Claims idempotency keys, one record per key (KEYS[i]).
-- ARGV[1]: the window (ms), the record's time to live from its first claim.
-- ARGV[2]: the lease (ms): how long a claim may stay in flight; after it,
--          the outcome counts as unknown.
-- Then per key i: ARGV[3i] fingerprint, ARGV[3i+1] token, ARGV[3i+2] "1"
-- to claim a key whose outcome is unknown (resend_if_unknown).
-- A record is "state|fingerprint|token|lease_until_ms|rest", state one of
-- F (in flight), A (accepted: rest "attempts|event_id"), Q (queued: rest
-- the receipt), U (unknown: rest "attempts").
-- Returns per key: "M" (claimed: send it), "N" (claimed, forced),
-- "R" (reused with another fingerprint), or the record as it stands.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local out = {}
for i, key in ipairs(KEYS) do
  local fp = ARGV[3 * i]
  local token = ARGV[3 * i + 1]
  local force = ARGV[3 * i + 2]
  local mine = 'F|' .. fp .. '|' .. token .. '|' .. (now + lease) .. '|'
  local v = redis.call('GET', key)
  if not v then
    redis.call('SET', key, mine, 'PX', window)
    out[i] = 'M'
  else
    local state, vfp, vtoken, vlease = string.match(v, '^(%u)|([^|]*)|([^|]*)|([^|]*)|')
    if vfp ~= fp then
      out[i] = 'R'
    else
      if state == 'F' and tonumber(vlease) <= now then
        -- Its owner never settled it (a replica that stopped): it may
        -- have reached EventBridge.
        state = 'U'
        v = 'U|' .. vfp .. '|' .. vtoken .. '|0|0'
        redis.call('SET', key, v, 'KEEPTTL')
      end
      if state == 'U' and force == '1' then
        redis.call('SET', key, mine, 'KEEPTTL')
        out[i] = 'N'
      else
        out[i] = v
      end
    end
  end
end
return out
