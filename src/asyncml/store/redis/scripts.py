"""The Lua scripts of the Redis store: each one state change, atomic on the server.

Key names live here too, next to the scripts that build some of them from a record's
fields (``asyncml:open:<owner>``): a script and the Python that calls it must agree on them.
"""

from __future__ import annotations

PREFIX = "asyncml:task:"
CHANNEL_PREFIX = "asyncml:done:"
CACHE_PREFIX = "asyncml:cache:"
IDEMPOTENCY_PREFIX = "asyncml:idem:"
SLOT_PREFIX = "asyncml:slot:"
OWNER_PREFIX = "asyncml:owner:"
OPEN_PREFIX = "asyncml:open:"
KEY_PREFIX = "asyncml:apikey:"
KEY_NAMES = "asyncml:apikeys"
DEAD_LETTERS = "asyncml:dlq"
DEAD_LETTER_PREFIX = "asyncml:dlq:"

# KEYS[1] record; ARGV[1] started_at. Returns the attempt number, 0 for "do not run".
START = """
local s = redis.call('HGET', KEYS[1], 'status')
if s == 'QUEUED' then
  redis.call('HSET', KEYS[1], 'status', 'STARTED', 'started_at', ARGV[1])
elseif s ~= 'STARTED' then
  return 0
end
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
"""
# A task leaves its owner's set of open tasks when it becomes final. The set's key is made
# from the record's owner field: fine on one Redis, not on Redis Cluster (not supported).
_CLOSE = """
local function close(record)
  local owner = redis.call('HGET', record, 'owner')
  if owner then redis.call('ZREM', 'asyncml:open:' .. owner, redis.call('HGET', record, 'id')) end
end
"""
# KEYS[1] record, KEYS[2] owner's index, KEYS[3] owner's open tasks; ARGV ttl, submitted
# (epoch), id, max_open (0: no cap), then the record's field/value pairs. 0 if over the cap.
CREATE = """
local ttl, now = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - ttl)
local cap = tonumber(ARGV[4])
if cap > 0 and redis.call('ZCARD', KEYS[3]) >= cap then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now, ARGV[3])
redis.call('ZADD', KEYS[3], now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 2 * ttl)
redis.call('EXPIRE', KEYS[2], 2 * ttl)
redis.call('EXPIRE', KEYS[3], 2 * ttl)
return 1
"""
DELETE = (
    _CLOSE
    + """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner then redis.call('ZREM', 'asyncml:owner:' .. owner, redis.call('HGET', KEYS[1], 'id')) end
close(KEYS[1])
return redis.call('DEL', KEYS[1])
"""
)
# KEYS[1] record, KEYS[2] channel; ARGV status, finished_at, result, error, ttl
FINISH = (
    _CLOSE
    + """
local s = redis.call('HGET', KEYS[1], 'status')
if s ~= 'QUEUED' and s ~= 'STARTED' then return 0 end
close(KEYS[1])
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished_at', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[4]) end
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', KEYS[2], ARGV[1])
return 1
"""
)
# KEYS[1] record, KEYS[2] channel; ARGV finished_at, ttl
CANCEL = (
    _CLOSE
    + """
local s = redis.call('HGET', KEYS[1], 'status')
if s == 'QUEUED' then
  close(KEYS[1])
  redis.call('HSET', KEYS[1], 'status', 'CANCELLED', 'finished_at', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('PUBLISH', KEYS[2], 'CANCELLED')
end
return s
"""
)
# KEYS[1] schedule; ARGV[1] interval in microseconds. Redis's clock, so workers on hosts
# whose clocks differ still share one schedule. Returns microseconds to wait.
RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local start = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'))
redis.call('SET', KEYS[1], string.format('%d', start + interval),
           'PX', math.floor((start + interval - now) / 1000) + 60000)
return start - now
"""
# Only on a record that still exists: an expired task must not come back as a bare hash.
SET_DELIVERY = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 0
"""
