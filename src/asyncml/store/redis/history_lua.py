"""The Lua the state-change scripts run to keep the dashboard's indexes (``history.py``
says what they hold). Prepended to those scripts in ``scripts.py``; imports nothing, so
the scripts module can import it.
"""

from __future__ import annotations

ALL = "asyncml:hist:all"
KIND_PREFIX = "asyncml:hist:kind:"
FINISHED = "asyncml:hist:finished"
QUEUED_PREFIX = "asyncml:queued:"  # the queue's index of QUEUED tasks (scripts.py)

LUA = """
local function history_on_create(record, id, now, ttl)
  local kind = redis.call('HGET', record, 'kind') or ''
  redis.call('HSET', record, 'submitted_ts', string.format('%.6f', now))
  for _, index in ipairs({'asyncml:hist:all', 'asyncml:hist:kind:' .. kind}) do
    redis.call('ZADD', index, now, id)
    redis.call('ZREMRANGEBYSCORE', index, '-inf', now - 2 * ttl)
    redis.call('EXPIRE', index, 2 * ttl)
  end
end
local function history_on_start(record, at)
  redis.call('HSETNX', record, 'started_ts', at)
end
local function history_on_finish(record, status, err, run, ttl)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local sub = tonumber(redis.call('HGET', record, 'submitted_ts') or '')
  local st = tonumber(redis.call('HGET', record, 'started_ts') or '')
  local wait = ''
  if sub and st then wait = string.format('%.3f', math.max(0, st - sub)) end
  if run ~= '' then
    run = string.format('%.3f', tonumber(run))
  elseif st then
    run = string.format('%.3f', math.max(0, now - st))
  end
  local etype = ''
  if err ~= '' then
    local ok, body = pcall(cjson.decode, err)
    if ok and type(body) == 'table' and type(body.type) == 'string' then etype = body.type end
  end
  local member = table.concat({redis.call('HGET', record, 'id'), status,
    redis.call('HGET', record, 'kind') or '', wait, run, etype,
    string.format('%.3f', now)}, '|')
  redis.call('ZADD', 'asyncml:hist:finished', now, member)
  redis.call('ZREMRANGEBYSCORE', 'asyncml:hist:finished', '-inf', now - tonumber(ttl))
  redis.call('EXPIRE', 'asyncml:hist:finished', ttl)
end
"""
