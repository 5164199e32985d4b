-- wrk script: post.lua's request with an API key, for limits keyed `by: api_key`.
-- Usage: wrk ... -s bench/post_key.lua URL -- MODEL
-- post.lua does the rest (its done() line is what bench/loadgen.py parses).

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "post.lua")
wrk.headers["Authorization"] = "Bearer sk-bench-limits"
