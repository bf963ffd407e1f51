-- GCRA (the generic cell rate algorithm) over one key: the theoretical
-- arrival time (TAT) of the next token, in microseconds of Redis's clock
-- (TIME), so that every replica reads the same clock.
--
-- KEYS[1]  the limit's key
-- ARGV[1]  microseconds per token (1e6 / rate)
-- ARGV[2]  burst, in tokens (at least 1)
-- ARGV[3]  tokens wanted
-- ARGV[4]  "some": grant as many as fit, up to the tokens wanted (pacing);
--          "all": all of them or none (entry limits; more than the burst
--          needs a full bucket and leaves a debt)
--
-- Returns {granted, wait}: the tokens granted, and when none were, the
-- microseconds until they would be.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end
-- Tokens in the bucket now: how far TAT is below now + burst.
local room = math.floor((now + burst * interval - tat) / interval)
local granted
if ARGV[4] == 'all' then
  if room >= math.min(want, burst) then
    granted = want
  else
    granted = 0
  end
else
  granted = math.min(want, room)
end
if granted <= 0 then
  local need = math.min(want, burst)
  if ARGV[4] ~= 'all' then
    need = 1
  end
  return {0, math.ceil(tat + need * interval - burst * interval - now)}
end
tat = tat + granted * interval
-- %.0f: a plain integer (tostring would write 1.7e+15 and lose digits).
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX',
  math.ceil((tat - now) / 1000) + 1000)
return {granted, 0}
