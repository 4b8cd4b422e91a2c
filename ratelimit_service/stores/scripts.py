"""The one Lua script the Redis stores run, assembled from the algorithms' operations.

Every counter of a request (on a cluster: of one slot; under load: of several
requests at once) runs in one EVALSHA. Counter i uses KEYS[2i-1], KEYS[2i] and
ARGV[7i-6 .. 7i] = algorithm, group, hits, capacity, p1, p2, p3:

- `algorithm` selects the operation (`ops[name]`, each algorithm's own Lua function);
- `group` is `-` (a counter of its own), `p` (peek: answer without writing) or a
  group name: the stop-increment rule of `ratelimit_service.charging`, applied here
  so it stays one round trip: within a group of several counters, if some would go
  over (asked first, without writing), only those are charged. Each group is decided
  whole before the next counter, so requests merged into one call stay separate;
- each operation runs under pcall, so a counter Redis refuses (a wrong type, a
  number out of range) answers {'E', reason, 0} and the other counters still count.

The reply is three values per counter: {before, after, extra}.
Lua numbers are doubles: hits are capped below 2^32 + 1 by the decision and the
algorithms keep their state below 2^53 (checked at config load), so it stays exact.
"""

from __future__ import annotations

import hashlib

from ratelimit_service.algorithms import REGISTRY

ARGS_PER_OP = 7

_DISPATCH = """
local n = #KEYS / 2
local function run(i, commit, hits)
  local b = 7 * (i - 1)
  return ops[ARGV[b + 1]](KEYS[2 * i - 1], KEYS[2 * i], hits, tonumber(ARGV[b + 4]), commit,
    tonumber(ARGV[b + 5]), tonumber(ARGV[b + 6]), tonumber(ARGV[b + 7]))
end
local out, done, members = {}, {}, {}
local function answer(i, commit, hits)
  local ok, r = pcall(run, i, commit, hits)
  if ok then
    out[3 * i - 2], out[3 * i - 1], out[3 * i] = r[1], r[2], r[3]
  else
    if type(r) == 'table' then r = r.err end
    out[3 * i - 2], out[3 * i - 1], out[3 * i] = 'E', tostring(r), 0
  end
  done[i] = true
end
for i = 1, n do
  local g = ARGV[7 * i - 5]
  if g ~= '-' and g ~= 'p' then
    members[g] = members[g] or {}
    table.insert(members[g], i)
  end
end
-- In order; a group is decided as a whole (ask, then charge) before the next counter,
-- so the groups of requests merged into one call never interleave.
for i = 1, n do
  if not done[i] then
    local g = ARGV[7 * i - 5]
    local group = members[g]
    if group ~= nil and #group > 1 then
      local over, going = {}, false
      for _, j in ipairs(group) do
        local ok, r = pcall(run, j, false, tonumber(ARGV[7 * j - 4]))
        if ok and r[2] > tonumber(ARGV[7 * j - 3]) then over[j] = true; going = true end
      end
      for _, j in ipairs(group) do
        local hits = tonumber(ARGV[7 * j - 4])
        if going and not over[j] then hits = 0 end
        answer(j, true, hits)
      end
    else
      answer(i, g ~= 'p', tonumber(ARGV[7 * i - 4]))
    end
  end
end
return out
"""


def build_script() -> str:
    parts = ["local ops = {}"]
    for name, algorithm in REGISTRY.items():
        parts.append(f"ops['{name}'] = {algorithm.lua}")
    return "\n".join(parts) + _DISPATCH


def sha1(script: str) -> str:
    return hashlib.sha1(script.encode(), usedforsecurity=False).hexdigest()


REQUEST_SCRIPT = build_script()
REQUEST_SHA = sha1(REQUEST_SCRIPT)
