-- wrk script: POST a small OpenAI chat request and count responses that are not 2xx.
-- Usage: wrk ... -s bench/post.lua URL -- MODEL
-- wrk's own "Non-2xx or 3xx responses" line ignores 3xx; this counts every non-2xx and
-- prints one machine-readable line from done() that bench/loadgen.py parses.

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
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = 0
  local merged = {}
  for _, thread in ipairs(threads) do
    total = total + thread:get("non2xx")
    for status, count in pairs(thread:get("statuses")) do
      merged[status] = (merged[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(merged) do
    table.insert(parts, status .. ":" .. count)
  end
  table.sort(parts)
  io.write(string.format("aigw-bench non2xx=%d statuses=%s\n", total, table.concat(parts, ",")))
end
