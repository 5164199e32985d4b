"""The limiter cores as atomic Redis Lua scripts: one round trip per check.

The arithmetic mirrors ``algorithms`` line for line. Time comes from the Redis
server (``TIME``) so that every gateway process shares one clock. Each limit lives in
one key, ``aigw:rl:<algorithm>:{<key>}``; the hash tag keeps it Cluster-safe should a
caller later check several limits of one key in one script.

A script replies ``{allowed, remaining, reset_s, retry_after_s}``, floats as strings
because Redis truncates Lua numbers to integers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from aigw.limits.algorithms import Decision
from aigw.state.base import StateUnavailable

# ARGV[1] is ``now`` in seconds, or "" for the server's clock (the production path).
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
local cost = tonumber(ARGV[2])
local function ttl_ms(s) return math.max(1, math.ceil(s * 1000) + 1) end
local function denied(remaining, wait)
  return {0, fmt(math.max(0, remaining)), fmt(wait), fmt(wait)}
end
"""

# ARGV: now, cost, rate_per_s, burst
TOKEN_BUCKET = (
    _PRELUDE
    + """
local rate, burst = tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local last = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
if cost > burst then return denied(tokens, math.huge) end
if tokens + EPS < cost then return denied(tokens, (cost - tokens) / rate) end
tokens = math.max(0, tokens - cost)
local reset = (burst - tokens) / rate
redis.call('HSET', KEYS[1], 'tokens', fmt(tokens), 'ts', fmt(now))
redis.call('PEXPIRE', KEYS[1], ttl_ms(reset))
return {1, fmt(tokens), fmt(reset), '0'}
"""
)

# ARGV: now, cost, rate_per_s, burst
GCRA = (
    _PRELUDE
    + """
local rate, burst = tonumber(ARGV[3]), tonumber(ARGV[4])
local interval = 1 / rate
local tat = math.max(tonumber(redis.call('GET', KEYS[1])) or now, now)
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

# ARGV: now, cost, limit, window_s. Same as ``algorithms.sliding_wait_s``.
SLIDING_WINDOW_COUNTER = (
    _PRELUDE
    + """
local limit, window = tonumber(ARGV[3]), tonumber(ARGV[4])
local function wait_s(previous, current, need, elapsed)
  local budget = limit - need
  if current <= budget + EPS then
    if previous <= 0 then return 0 end
    return math.max(0, window * (1 - (budget - current) / previous) - elapsed)
  end
  return (window - elapsed) + window * (1 - budget / current)
end
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
local estimate = previous * (1 - elapsed / window) + current
if cost > limit then return denied(limit - estimate, math.huge) end
if estimate + cost > limit + EPS then
  return denied(limit - estimate, wait_s(previous, current, cost, elapsed))
end
current = current + cost
redis.call('HSET', KEYS[1], 'index', fmt(index), 'current', fmt(current), 'previous', fmt(previous))
redis.call('PEXPIRE', KEYS[1], ttl_ms(2 * window))
local reset = wait_s(previous, current, limit, elapsed)
return {1, fmt(math.max(0, limit - estimate - cost)), fmt(reset), '0'}
"""
)

SCRIPTS = {
    "token_bucket": TOKEN_BUCKET,
    "gcra": GCRA,
    "sliding_window_counter": SLIDING_WINDOW_COUNTER,
}


class RedisLimiter:
    """One limit shared through Redis: ``check`` is a single atomic script call.

    ``algorithm`` is ``token_bucket`` or ``gcra`` (``amount`` = rate per second,
    ``size`` = burst) or ``sliding_window_counter`` (``amount`` = limit per window,
    ``size`` = window in seconds). Every call is bounded by ``timeout_s``; a Redis that
    is down, slow or failing raises ``StateUnavailable``.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        algorithm: str,
        amount: float,
        size: float,
        timeout_s: float,
        prefix: str = "aigw:rl:",
    ) -> None:
        if algorithm not in SCRIPTS:
            raise ValueError(f"unknown algorithm {algorithm!r}; one of {sorted(SCRIPTS)}")
        if not (amount > 0 and size > 0 and timeout_s > 0):
            raise ValueError("amount, size and timeout_s must be > 0")
        self.algorithm = algorithm
        self.amount = amount
        self.size = size
        self.timeout_s = timeout_s
        self.limit = amount if algorithm == "sliding_window_counter" else size
        self._prefix = f"{prefix}{algorithm}:"
        self._script = client.register_script(SCRIPTS[algorithm])

    def redis_key(self, key: str) -> str:
        return f"{self._prefix}{{{key}}}"

    async def check(self, key: str, cost: float = 1, *, now: float | None = None) -> Decision:
        """Check and, if allowed, consume ``cost``. ``now`` is a test seam: leave it
        ``None`` to use the Redis server's clock."""
        if cost < 0:
            raise ValueError(f"cost must be >= 0, got {cost!r}")
        args = ["" if now is None else repr(now), repr(cost), repr(self.amount), repr(self.size)]
        try:
            async with asyncio.timeout(self.timeout_s):
                reply: Any = await self._script(keys=[self.redis_key(key)], args=args)
        except (TimeoutError, RedisError, OSError) as exc:
            raise StateUnavailable(f"redis: {type(exc).__name__}: {exc}") from None
        allowed, remaining, reset_s, retry_after_s = reply
        return Decision(
            allowed=bool(allowed),
            limit=self.limit,
            remaining=float(remaining),
            reset_s=float(reset_s),
            retry_after_s=float(retry_after_s),
        )
