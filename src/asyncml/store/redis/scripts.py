"""The Lua scripts of the Redis store: each one state change, atomic on the server.

Key names live here too, next to the scripts that build some of them from a record's
fields (``asyncml:open:<owner>``): a script and the Python that calls it must agree on them.
"""

from __future__ import annotations

from asyncml.store.redis.history_lua import LUA as _HISTORY

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
# Events: a stream per task (trimmed to about EVENTS_KEPT), a channel per task that says
# "new events" (one pattern subscription per API process hears every task's).
EVENTS_PREFIX = "asyncml:events:"
EVENT_CHANNEL_PREFIX = "asyncml:ev:"
# A queue's order moved (a task of it started, or left it unstarted): its queued tasks'
# positions changed. Streams of queued tasks wait on it instead of reading their position.
MOVE_CHANNEL_PREFIX = "asyncml:qmove:"
EVENTS_KEPT = 1000
# Queue standing: QUEUED and STARTED tasks per queue (sorted sets by submit time), recent
# run times per kind (a list, newest first) and worker heartbeats (a hash).
QUEUED_PREFIX = "asyncml:queued:"
RUNNING_PREFIX = "asyncml:running:"
RUNS_PREFIX = "asyncml:runs:"
RUNS_KEPT = 50
WORKERS = "asyncml:workers"
FAILED_DELIVERIES = "asyncml:webhooks:failed"

# Shared by the state-change scripts: leave the queue's indexes, and append an event to
# the task's stream (with its channel's notice). The key names are made from the record's
# fields: fine on one Redis, not on Redis Cluster (not supported).
_EVENTS = """
local function unqueue(record)
  local queue = redis.call('HGET', record, 'queue')
  if queue then
    local id = redis.call('HGET', record, 'id')
    if redis.call('ZREM', 'asyncml:queued:' .. queue, id) == 1 then
      redis.call('PUBLISH', 'asyncml:qmove:' .. queue, id)
    end
    redis.call('ZREM', 'asyncml:running:' .. queue, id)
  end
end
local function event(record, kind, at, data, ttl)
  local id = redis.call('HGET', record, 'id')
  local stream = 'asyncml:events:' .. id
  local added = redis.call(
    'XADD', stream, 'MAXLEN', '~', '1000', '*', 'type', kind, 'at', at, 'data', data)
  redis.call('EXPIRE', stream, ttl)
  redis.call('PUBLISH', 'asyncml:ev:' .. id, kind)
  return added
end
"""

# KEYS[1] record; ARGV started_at, worker, ttl, started_at (epoch). Returns the attempt
# number, 0 for "do not run". Each attempt appends its ``started`` event.
START = (
    _EVENTS
    + _HISTORY
    + """
local s = redis.call('HGET', KEYS[1], 'status')
if s == 'QUEUED' then
  redis.call('HSET', KEYS[1], 'status', 'STARTED', 'started_at', ARGV[1])
  local queue = redis.call('HGET', KEYS[1], 'queue')
  if queue then
    local id = redis.call('HGET', KEYS[1], 'id')
    redis.call('ZREM', 'asyncml:queued:' .. queue, id)
    redis.call('PUBLISH', 'asyncml:qmove:' .. queue, id)
    redis.call('ZADD', 'asyncml:running:' .. queue, ARGV[4], id)
    redis.call('EXPIRE', 'asyncml:running:' .. queue, ARGV[3])
  end
elseif s ~= 'STARTED' then
  return 0
end
history_on_start(KEYS[1], ARGV[4])
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
event(KEYS[1], 'started', ARGV[1],
      cjson.encode({worker = ARGV[2], attempt = attempt}), ARGV[3])
return attempt
"""
)
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
CREATE = (
    _HISTORY
    + """
local ttl, now = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - ttl)
local cap = tonumber(ARGV[4])
if cap > 0 and redis.call('ZCARD', KEYS[3]) >= cap then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[1], ttl)
local queue = redis.call('HGET', KEYS[1], 'queue')
if queue then
  redis.call('ZADD', 'asyncml:queued:' .. queue, now, ARGV[3])
  redis.call('EXPIRE', 'asyncml:queued:' .. queue, ttl)
end
redis.call('ZADD', KEYS[2], now, ARGV[3])
redis.call('ZADD', KEYS[3], now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 2 * ttl)
redis.call('EXPIRE', KEYS[2], 2 * ttl)
redis.call('EXPIRE', KEYS[3], 2 * ttl)
history_on_create(KEYS[1], ARGV[3], now, ttl)
return 1
"""
)
DELETE = (
    _CLOSE
    + _EVENTS
    + """
unqueue(KEYS[1])
redis.call('DEL', 'asyncml:events:' .. (redis.call('HGET', KEYS[1], 'id') or ''))
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner then redis.call('ZREM', 'asyncml:owner:' .. owner, redis.call('HGET', KEYS[1], 'id')) end
close(KEYS[1])
return redis.call('DEL', KEYS[1])
"""
)
# KEYS[1] record, KEYS[2] channel; ARGV status, finished_at, result, error, ttl, run time
# in seconds ('' if it did not run to an end)
FINISH = (
    _CLOSE
    + _EVENTS
    + _HISTORY
    + """
local s = redis.call('HGET', KEYS[1], 'status')
if s ~= 'QUEUED' and s ~= 'STARTED' then return 0 end
close(KEYS[1])
unqueue(KEYS[1])
if ARGV[6] ~= '' then
  local runs = 'asyncml:runs:' .. redis.call('HGET', KEYS[1], 'kind')
  redis.call('LPUSH', runs, ARGV[6])
  redis.call('LTRIM', runs, 0, 49)
  redis.call('EXPIRE', runs, ARGV[5])
end
event(KEYS[1], 'completed', ARGV[2], '{}', ARGV[5])
history_on_finish(KEYS[1], ARGV[1], ARGV[4], ARGV[6], ARGV[5])
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
    + _EVENTS
    + _HISTORY
    + """
local s = redis.call('HGET', KEYS[1], 'status')
if s == 'QUEUED' then
  close(KEYS[1])
  unqueue(KEYS[1])
  event(KEYS[1], 'completed', ARGV[1], '{}', ARGV[2])
  history_on_finish(KEYS[1], 'CANCELLED', '', '', ARGV[2])
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
# KEYS[1] record, KEYS[2] the failed deliveries' index; ARGV field, delivery JSON, state,
# index member ("<task id> <event>"), now (epoch), ttl. A delivery that ends failed is
# indexed (``asyncml webhooks failed``); any other state takes it out.
SET_DELIVERY = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  if ARGV[3] == 'failed' then
    redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[5]) - tonumber(ARGV[6]))
  else
    redis.call('ZREM', KEYS[2], ARGV[4])
  end
end
return 0
"""
# KEYS[1] record; ARGV ttl, then (type, at, data) per event; returns the events' stream ids.
# Only while the task is not final: an event after the end (a late flush) would follow
# ``completed`` (none is added: an empty list).
ADD_EVENTS = (
    _EVENTS
    + """
local s = redis.call('HGET', KEYS[1], 'status')
if s ~= 'QUEUED' and s ~= 'STARTED' then return {} end
local ids = {}
for i = 2, #ARGV, 3 do
  ids[#ids + 1] = event(KEYS[1], ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[1])
end
return ids
"""
)
