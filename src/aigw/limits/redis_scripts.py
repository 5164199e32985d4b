"""The limiter cores as atomic Redis Lua scripts: one round trip per call.

The arithmetic mirrors ``algorithms`` line for line. Time comes from the Redis server
(``TIME``) so that every gateway process shares one clock; ``ARGV[1]`` is "" for that,
or a test's ``now``. ``ARGV[2]`` is a check's cost or an adjust's delta (``cost`` in
both). A limit lives in ``aigw:rl:<algorithm>:{<key>}`` (the sliding log adds a
companion hash ``...:{<key>}:meta``); the hash tag keeps a key's state in one Cluster
slot. Every key gets a time to live, so idle limits vanish.

A check (or acquire) replies ``{allowed, remaining, reset_s, retry_after_s}``, floats
as strings because Redis truncates Lua numbers to integers. An adjust or a release
replies nothing. ``backend`` runs them.
"""

from __future__ import annotations

from typing import NamedTuple

_PRELUDE = """
local EPS = 1e-9
local function fmt(x)
  if x == math.huge then return 'inf' end
  return string.format('%.17g', x)
end
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
else
  now = tonumber(ARGV[1])
end
local function ttl_ms(s) return math.max(1, math.ceil(s * 1000) + 1) end
local function denied(remaining, wait)
  return {0, fmt(math.max(0, remaining)), fmt(wait), fmt(wait)}
end
"""

# ARGV: now, cost, rate_per_s, burst
TOKEN_BUCKET = """
local cost, rate, burst = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local last = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
"""

TOKEN_BUCKET_CHECK = (
    _PRELUDE
    + TOKEN_BUCKET
    + """
if cost > burst then return denied(tokens, math.huge) end
if tokens + EPS < cost then return denied(tokens, (cost - tokens) / rate) end
tokens = math.max(0, tokens - cost)
local reset = (burst - tokens) / rate
redis.call('HSET', KEYS[1], 'tokens', fmt(tokens), 'ts', fmt(now))
redis.call('PEXPIRE', KEYS[1], ttl_ms(reset))
return {1, fmt(tokens), fmt(reset), '0'}
"""
)

# ARGV: now, delta, rate_per_s, burst. Below zero is debt; the TTL lasts until full.
TOKEN_BUCKET_ADJUST = (
    _PRELUDE
    + TOKEN_BUCKET
    + """
tokens = math.min(burst, tokens - cost)
redis.call('HSET', KEYS[1], 'tokens', fmt(tokens), 'ts', fmt(now))
redis.call('PEXPIRE', KEYS[1], ttl_ms((burst - tokens) / rate))
"""
)

# ARGV: now, cost, rate_per_s, burst
GCRA = """
local cost, rate, burst = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local interval = 1 / rate
local tat = math.max(tonumber(redis.call('GET', KEYS[1])) or now, now)
"""

GCRA_CHECK = (
    _PRELUDE
    + GCRA
    + """
local available = burst - (tat - now) / interval
if cost > burst then return denied(available, math.huge) end
local new_tat = tat + cost * interval
local allow_at = new_tat - burst * interval
if now + EPS < allow_at then return denied(available, allow_at - now) end
redis.call('SET', KEYS[1], fmt(new_tat), 'PX', ttl_ms(new_tat - now))
local remaining = math.max(0, burst - (new_tat - now) / interval)
return {1, fmt(remaining), fmt(new_tat - now), '0'}
"""
)

# ARGV: now, delta, rate_per_s, burst
GCRA_ADJUST = (
    _PRELUDE
    + GCRA
    + """
tat = math.max(tat + cost * interval, now)
redis.call('SET', KEYS[1], fmt(tat), 'PX', ttl_ms(tat - now))
"""
)

# ARGV: now, cost, limit, window_s. Same as ``algorithms.sliding_wait_s``.
SLIDING_WINDOW_COUNTER = """
local cost, limit, window = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local index = math.floor(now / window)
local elapsed = now - index * window
local state = redis.call('HMGET', KEYS[1], 'index', 'current', 'previous')
local stored = tonumber(state[1])
local current, previous = 0, 0
if stored == index then
  current, previous = tonumber(state[2]), tonumber(state[3])
elseif stored == index - 1 then
  previous = tonumber(state[2])
end
local function store()
  redis.call('HSET', KEYS[1], 'index', fmt(index), 'current', fmt(current),
    'previous', fmt(previous))
  redis.call('PEXPIRE', KEYS[1], ttl_ms(2 * window))
end
"""

SLIDING_WINDOW_COUNTER_CHECK = (
    _PRELUDE
    + SLIDING_WINDOW_COUNTER
    + """
local function wait_s(need)
  local budget = limit - need
  if current <= budget + EPS then
    if previous <= 0 then return 0 end
    return math.max(0, window * (1 - (budget - current) / previous) - elapsed)
  end
  return (window - elapsed) + window * (1 - budget / current)
end
local estimate = previous * (1 - elapsed / window) + current
if cost > limit then return denied(limit - estimate, math.huge) end
if estimate + cost > limit + EPS then return denied(limit - estimate, wait_s(cost)) end
current = current + cost
store()
return {1, fmt(math.max(0, limit - estimate - cost)), fmt(wait_s(limit)), '0'}
"""
)

# ARGV: now, delta, limit, window_s
SLIDING_WINDOW_COUNTER_ADJUST = (
    _PRELUDE
    + SLIDING_WINDOW_COUNTER
    + """
current = current + cost
if current < 0 then
  previous = math.max(0, previous + current)
  current = 0
end
store()
"""
)

# KEYS: the entries (a ZSET scored by time), a hash of the running 'used' sum and a
# sequence number. A member is '<16-digit seq>:<cost>': unique, and in arrival order
# among entries of one timestamp. ARGV: now, cost, limit, window_s.
SLIDING_WINDOW_LOG = """
local cost, limit, window = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local log, meta = KEYS[1], KEYS[2]
local function spent(member) return tonumber(string.sub(member, 18)) end
local used = tonumber(redis.call('HGET', meta, 'used')) or 0
local cutoff = fmt(now - window)
local expired = redis.call('ZRANGEBYSCORE', log, '-inf', cutoff)
if #expired > 0 then
  for _, member in ipairs(expired) do used = used - spent(member) end
  redis.call('ZREMRANGEBYSCORE', log, '-inf', cutoff)
end
if redis.call('ZCARD', log) == 0 then used = 0 end
local function append(amount)
  local seq = redis.call('HINCRBY', meta, 'seq', 1)
  redis.call('ZADD', log, fmt(now), string.format('%016d:%s', seq, fmt(amount)))
  used = used + amount
end
local function store()
  redis.call('HSET', meta, 'used', fmt(used))
  local newest = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
  local reset = 0
  if #newest > 0 then reset = tonumber(newest[2]) + window - now end
  redis.call('PEXPIRE', log, ttl_ms(reset))
  redis.call('PEXPIRE', meta, ttl_ms(reset))
  return reset
end
"""

SLIDING_WINDOW_LOG_CHECK = (
    _PRELUDE
    + SLIDING_WINDOW_LOG
    + """
local function wait_s()
  local left, first = used, 0
  while true do
    local batch = redis.call('ZRANGE', log, first, first + 63, 'WITHSCORES')
    if #batch == 0 then return 0 end
    for i = 1, #batch, 2 do
      left = left - spent(batch[i])
      if left + cost <= limit + EPS then return tonumber(batch[i + 1]) + window - now end
    end
    first = first + 64
  end
end
if cost > limit or used + cost > limit + EPS then
  if #expired > 0 then redis.call('HSET', meta, 'used', fmt(used)) end
  if cost > limit then return denied(limit - used, math.huge) end
  return denied(limit - used, wait_s())
end
if cost > 0 then append(cost) end
local reset = store()
return {1, fmt(math.max(0, limit - used)), fmt(reset), '0'}
"""
)

# ARGV: now, delta, limit, window_s. A give-back shrinks the newest entries first.
SLIDING_WINDOW_LOG_ADJUST = (
    _PRELUDE
    + SLIDING_WINDOW_LOG
    + """
if cost > 0 then append(cost) end
local give = -cost
while give > 0 do
  local newest = redis.call('ZRANGE', log, -1, -1, 'WITHSCORES')
  if #newest == 0 then break end
  local member, stamp = newest[1], newest[2]
  local amount = spent(member)
  redis.call('ZREM', log, member)
  if amount > give then
    local rest = string.sub(member, 1, 17) .. fmt(amount - give)
    redis.call('ZADD', log, stamp, rest)
    used = used - give
    break
  end
  used = used - amount
  give = give - amount
end
if redis.call('ZCARD', log) == 0 then used = 0 end
store()
"""
)

# Whole days since the epoch to a UTC date and back (Howard Hinnant's algorithms), so
# the period comes from the server's clock like everything else. ARGV: now, cost,
# limit, period ("day" or "month").
CALENDAR = """
local cost, limit, period = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local floor = math.floor
local function civil(days)
  local z = days + 719468
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local d = doy - floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y, m, d
end
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = floor((153 * mp + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy - 719468
end
local days = floor(now / 86400)
local y, m, d = civil(days)
local id, ends
if period == 'day' then
  id, ends = string.format('%04d-%02d-%02d', y, m, d), (days + 1) * 86400
else
  id = string.format('%04d-%02d', y, m)
  if m == 12 then y, m = y + 1, 1 else m = m + 1 end
  ends = days_from_civil(y, m, 1) * 86400
end
local reset = ends - now
local state = redis.call('HMGET', KEYS[1], 'period', 'used')
local used = 0
if state[1] == id then used = tonumber(state[2]) end
local function store()
  redis.call('HSET', KEYS[1], 'period', id, 'used', fmt(used))
  redis.call('PEXPIRE', KEYS[1], ttl_ms(reset))
end
"""

CALENDAR_CHECK = (
    _PRELUDE
    + CALENDAR
    + """
if cost > limit then return denied(limit - used, math.huge) end
if used + cost > limit + EPS then return denied(limit - used, reset) end
used = used + cost
store()
return {1, fmt(math.max(0, limit - used)), fmt(reset), '0'}
"""
)

# ARGV: now, delta, limit, period
CALENDAR_ADJUST = (
    _PRELUDE
    + CALENDAR
    + """
used = math.max(0, used + cost)
store()
"""
)

# A ZSET of leases scored by expiry on the server's clock. ARGV: now, lease, then
# limit and ttl_s for an acquire. The key lives as long as its longest lease.
CONCURRENCY = """
local lease = ARGV[2]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now))
"""

CONCURRENCY_ACQUIRE = (
    _PRELUDE
    + CONCURRENCY
    + """
local limit, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local held = redis.call('ZCARD', KEYS[1])
if not redis.call('ZSCORE', KEYS[1], lease) then
  if held >= limit then return denied(limit - held, 1) end
  held = held + 1
end
redis.call('ZADD', KEYS[1], fmt(now + ttl), lease)
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], ttl_ms(tonumber(last[2]) - now))
return {1, fmt(limit - held), '0', '0'}
"""
)

CONCURRENCY_RELEASE = (
    _PRELUDE
    + CONCURRENCY
    + """
redis.call('ZREM', KEYS[1], lease)
"""
)


class ScriptPair(NamedTuple):
    """A limit's two scripts and how many keys they take."""

    check: str
    adjust: str
    keys: int


SCRIPTS: dict[str, ScriptPair] = {
    "token_bucket": ScriptPair(TOKEN_BUCKET_CHECK, TOKEN_BUCKET_ADJUST, 1),
    "gcra": ScriptPair(GCRA_CHECK, GCRA_ADJUST, 1),
    "sliding_window_counter": ScriptPair(
        SLIDING_WINDOW_COUNTER_CHECK, SLIDING_WINDOW_COUNTER_ADJUST, 1
    ),
    "sliding_window_log": ScriptPair(SLIDING_WINDOW_LOG_CHECK, SLIDING_WINDOW_LOG_ADJUST, 2),
    "calendar": ScriptPair(CALENDAR_CHECK, CALENDAR_ADJUST, 1),
}
