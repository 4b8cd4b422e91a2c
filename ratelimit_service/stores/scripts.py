"""The Lua scripts the Redis stores run, with their SHA1s for EVALSHA.

Lua numbers are doubles: every value here stays an integer below 2^53 (the config
rejects GCRA limits that would not), so the arithmetic is exact and matches
`ratelimit_service.algorithms`.
"""

from __future__ import annotations

import hashlib

# The GCRA step on one key: now_ms, hits, rate, window_ms -> {before, after, fill}.
# State: hash {f: fill, t: last_ms}.
GCRA_STEP = """
local function gcra(key, now, hits, rate, window)
  local state = redis.call('HMGET', key, 'f', 't')
  local fill = tonumber(state[1]) or 0
  local last = tonumber(state[2]) or now
  local elapsed = now - last
  if elapsed < 0 then elapsed = 0 end
  fill = fill - elapsed * rate
  if fill < 0 then fill = 0 end
  local before = math.ceil(fill / window)
  local wanted = fill + hits * window
  if wanted <= rate * window then fill = wanted end
  redis.call('HSET', key, 'f', string.format('%.0f', fill), 't', string.format('%.0f', now))
  redis.call('PEXPIRE', key, math.ceil(fill / math.max(rate, 1)) + 1000)
  return {before, before + hits, string.format('%.0f', fill)}
end
"""

# All counters of one request in one command (a single Redis, where a script may
# touch any key; on a cluster, all counters of one slot).
# Op i uses KEYS[2i-1], KEYS[2i] and ARGV[4i-2 .. 4i+1] = kind, hits, p1, p2:
#   f (fixed window):   INCRBY key hits, EXPIRE key p1 when created -> {count, 0, 0}
#   F (fixed window, STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT, p2 = limit): as f, but
#                       when some F counter would go over its limit, only those add
#   s (sliding window): the same, plus GET KEYS[2i] (previous)      -> {count, previous, 0}
#   g (gcra):           rate p1, window_ms p2                        -> {before, after, fill}
# ARGV[1] is now in milliseconds. The reply is 3 values per op.
REQUEST_SCRIPT = GCRA_STEP + """
local now = tonumber(ARGV[1])
local n = #KEYS / 2
local some_over = false
local over = {}
for i = 1, n do
  if ARGV[4 * i - 2] == 'F' then
    local current = tonumber(redis.call('GET', KEYS[2 * i - 1]) or '0')
    over[i] = current + tonumber(ARGV[4 * i - 1]) > tonumber(ARGV[4 * i + 1])
    if over[i] then some_over = true end
  end
end
local out = {}
for i = 1, n do
  local key = KEYS[2 * i - 1]
  local kind = ARGV[4 * i - 2]
  local hits = tonumber(ARGV[4 * i - 1])
  local p1 = tonumber(ARGV[4 * i])
  local p2 = tonumber(ARGV[4 * i + 1])
  if kind == 'g' then
    local r = gcra(key, now, hits, p1, p2)
    out[3 * i - 2], out[3 * i - 1], out[3 * i] = r[1], r[2], r[3]
  else
    if kind == 'F' and some_over and not over[i] then hits = 0 end
    local count = redis.call('INCRBY', key, hits)
    if count == hits then redis.call('EXPIRE', key, p1) end
    local previous = 0
    if kind == 's' then previous = tonumber(redis.call('GET', KEYS[2 * i]) or '0') end
    out[3 * i - 2], out[3 * i - 1], out[3 * i] = count, previous, 0
  end
end
return out
"""


def sha1(script: str) -> str:
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


REQUEST_SHA = sha1(REQUEST_SCRIPT)
