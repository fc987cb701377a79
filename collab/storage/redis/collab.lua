#!lua name=collab
-- collab's Redis Functions (Redis 7.0+). Each runs atomically; stream ids
-- ("ms-seq") are compared as numbers. Key layout: see keys.py.

local function split(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function lt(x, y)
  local xm, xs = split(x)
  local ym, ys = split(y)
  return xm < ym or (xm == ym and xs < ys)
end

local function nextid(id)
  local ms, seq = split(id)
  return string.format('%d-%d', ms, seq + 1)
end

-- Append updates to a document's stream, fenced by its generation.
-- KEYS: log, gen, docs   ARGV: pid, gen, stem, name, then (update, author, time)...
-- Returns the id of each entry, or the error "GEN <current>".
redis.register_function('collab_append', function(keys, args)
  local gen = redis.call('GET', keys[2]) or '0'
  if gen ~= args[2] then
    return redis.error_reply('GEN ' .. gen)
  end
  redis.call('HSETNX', keys[3], args[3], args[4])
  local ids = {}
  for i = 5, #args, 3 do
    ids[#ids + 1] = redis.call(
      'XADD', keys[1], '*', 'p', args[1], 'u', args[i], 'a', args[i + 1], 'w', args[i + 2])
  end
  return ids
end)

-- Replace the snapshot by one covering every entry <= seq, then trim.
-- KEYS: snap, log, gen   ARGV: gen, seq, own, pid, state, retention_ms
-- seq is what the caller's reader had applied when it took state; own, if not
-- '', the id of the caller's last own entry in state: if every update between
-- seq and own is the caller's, the snapshot covers own.
-- Returns 1, or 0 if refused (another generation, or a snapshot as new already).
redis.register_function('collab_compact', function(keys, args)
  if (redis.call('GET', keys[3]) or '0') ~= args[1] then
    return 0
  end
  local seq = args[2]
  if args[3] ~= '' and lt(seq, args[3]) then
    local mine = true
    for _, entry in ipairs(redis.call('XRANGE', keys[2], '(' .. seq, args[3])) do
      local fields, pid, update = entry[2], nil, false
      for i = 1, #fields, 2 do
        if fields[i] == 'p' then pid = fields[i + 1] end
        if fields[i] == 'u' then update = true end
      end
      if update and pid ~= args[4] then
        mine = false
        break
      end
    end
    if mine then
      seq = args[3]
    end
  end
  if seq == '0-0' then
    return 0
  end
  local current = redis.call('HGET', keys[1], 'seq')
  if current and not lt(current, seq) then
    return 0 -- fencing: a snapshot never goes back
  end
  redis.call('HSET', keys[1], 'seq', seq, 'state', args[5])
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  local horizon = string.format('%d-0', ms - tonumber(args[6]))
  local trim = nextid(seq)
  if lt(horizon, trim) then
    trim = horizon -- keep the retention window for lagging readers
  end
  redis.call('XTRIM', keys[2], 'MINID', trim)
  redis.call('XADD', keys[2], '*', 't', 's', 's', seq, 'm', trim)
  return 1
end)

-- Delete a document: a new generation, no snapshot, an empty stream that
-- keeps its last id, and a tombstone every reader sees.
-- KEYS: snap, log, gen, docs   ARGV: stem
-- Returns {generation, 1 if the document existed else 0}.
redis.register_function('collab_delete', function(keys, args)
  local existed = redis.call('HDEL', keys[4], args[1])
  local g = redis.call('INCR', keys[3])
  redis.call('DEL', keys[1])
  redis.call('XTRIM', keys[2], 'MAXLEN', 0)
  redis.call('XADD', keys[2], '*', 't', 'd', 'g', g)
  return {g, existed}
end)

-- A process's heartbeat, in Redis time. KEYS: procs   ARGV: pid
-- Returns {now_ms, pid1, score1, pid2, score2, ...} of processes seen in the last hour.
redis.register_function('collab_beat', function(keys, args)
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  if args[1] ~= '' then
    redis.call('ZADD', keys[1], ms, args[1])
  end
  redis.call('ZREMRANGEBYSCORE', keys[1], '-inf', ms - 3600000)
  local out = {tostring(ms)}
  local members = redis.call('ZRANGE', keys[1], 0, -1, 'WITHSCORES')
  for i = 1, #members do
    out[#out + 1] = members[i]
  end
  return out
end)

-- Release a lease only if this process holds it. KEYS: lease   ARGV: pid
redis.register_function('collab_release', function(keys, args)
  if redis.call('GET', keys[1]) == args[1] then
    return redis.call('DEL', keys[1])
  end
  return 0
end)
