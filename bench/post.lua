-- wrk script: POST a small OpenAI chat request and count responses that are not 2xx.
-- Usage: wrk ... -s bench/post.lua URL -- MODEL
-- wrk's own "Non-2xx or 3xx responses" line ignores 3xx; this counts every non-2xx, and
-- every value of the X-Cache response header, and prints one machine-readable line from
-- done() that bench/loadgen.py parses.

local threads = {}

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local function body_for(model)
  return '{"model":"' .. model .. '","messages":[{"role":"system","content":'
    .. '"You are a terse assistant."},{"role":"user","content":'
    .. '"Say hello in one short sentence."}],"max_tokens":16,"temperature":0}'
end

wrk.body = body_for("bench-model")

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  if args[1] ~= nil then
    wrk.body = body_for(args[1])
  end
  non2xx = 0
  statuses = {}
  xcache = {}
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
  statuses[status] = (statuses[status] or 0) + 1
  local cache = headers["x-cache"] or headers["X-Cache"]
  if cache ~= nil then
    xcache[cache] = (xcache[cache] or 0) + 1
  end
end

local function joined(counts)
  local parts = {}
  for key, count in pairs(counts) do
    table.insert(parts, key .. ":" .. count)
  end
  table.sort(parts)
  return table.concat(parts, ",")
end

function done(summary, latency, requests)
  local total = 0
  local merged = {}
  local cache = {}
  for _, thread in ipairs(threads) do
    total = total + thread:get("non2xx")
    for status, count in pairs(thread:get("statuses")) do
      merged[status] = (merged[status] or 0) + count
    end
    for value, count in pairs(thread:get("xcache")) do
      cache[value] = (cache[value] or 0) + count
    end
  end
  io.write(string.format(
    "aigw-bench non2xx=%d statuses=%s xcache=%s\n", total, joined(merged), joined(cache)
  ))
end
