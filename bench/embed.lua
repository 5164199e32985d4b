-- wrk script: POST an OpenAI embeddings request, one sentence per request, and count
-- responses that are not 2xx.
-- Usage: wrk ... -s bench/embed.lua URL -- MODEL
-- request() walks a list of 50 sentences of 4 to ~60 words, 7 at a time (7 and 50 are
-- coprime, so every sentence comes up and neighbours differ in length): a batch mixes
-- lengths, as real traffic would, and no text is sent twice in a row. done() prints
-- the same machine-readable line as post.lua, which bench/loadgen.py parses.

local threads = {}

local sentences = {
  "How do I reset my password?",
  "Where is my order?",
  "Cancel my subscription.",
  "What are your opening hours on public holidays?",
  "The invoice for March was charged twice to my credit card.",
  "Can I change the delivery address after the parcel has been shipped?",
  "I would like to speak to a human agent, please.",
  "Thank you, that solved it.",
  "The app crashes every time I open the camera on my phone.",
  "Is there a student discount for the annual plan?",
  "My account was locked after three failed login attempts and the unlock email never"
    .. " arrived, even in the spam folder.",
  "Please export all my data as a CSV file.",
  "Which payment methods do you accept for business accounts in the European Union?",
  "The dashboard shows yesterday's numbers even after I refresh it several times.",
  "How long does a refund take?",
  "We are evaluating your product for a team of two hundred engineers and need single"
    .. " sign-on, audit logs and a data processing agreement before we can sign.",
  "Does the API support streaming responses?",
  "The battery drains from full to empty in about four hours since the last update.",
  "Translate this paragraph into French and keep the formatting.",
  "Summarise the attached meeting notes in three bullet points.",
  "Why was my card declined?",
  "I moved to a new city; how do I update my billing address and tax number?",
  "The search results are sorted by date, but I want them sorted by relevance.",
  "Our nightly backup job failed with a timeout at two in the morning, and again the"
    .. " following night, although nothing in the configuration changed.",
  "Add a dark mode, please.",
  "Can two people share one license if they never use it at the same time?",
  "What is the difference between the standard and the premium plan?",
  "The webhook retries forever when our endpoint returns a 410.",
  "I forgot which email address I used to sign up.",
  "Please delete my account and every piece of personal data you hold about me, as"
    .. " required by the data protection regulation, and confirm in writing when done.",
  "Shipping to Norway?",
  "The printer prints blank pages after I replaced the toner cartridge.",
  "How many requests per minute does the free tier allow?",
  "My colleague left the company; how do I transfer her projects to me?",
  "Recommend a good book about distributed systems for a beginner.",
  "The sound cuts out for a second every few minutes during video calls on Wi-Fi but"
    .. " not on a cable, and only since we moved the router to the hallway.",
  "Is my data stored in Europe?",
  "Write a polite reply declining the meeting invitation for Friday afternoon.",
  "The total on the receipt does not match the total in the shopping cart.",
  "Explain the error message about an expired certificate in simple words.",
  "Two-factor codes arrive too late.",
  "Can I pause my membership for the summer instead of cancelling it?",
  "The map shows my house on the wrong street, so couriers keep getting lost.",
  "What happens to my files when the trial ends?",
  "We need an on-premises installation because our customers' contracts forbid"
    .. " processing their records in a public cloud, and we would like a quote for three"
    .. " regions with support during European business hours.",
  "How do I cite this dataset in a paper?",
  "The checkout page keeps loading forever.",
  "Is the product safe for children under three years old?",
  "I was charged in dollars although my account is set to euros.",
  "Show me the weather for tomorrow in Lisbon.",
}

local step = 7
local next_index = 0
local model = "bench-model"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  if args[1] ~= nil then
    model = args[1]
  end
  next_index = 0
  non2xx = 0
  statuses = {}
end

function request()
  next_index = (next_index + step) % #sentences
  local body = '{"model":"' .. model .. '","input":"' .. sentences[next_index + 1] .. '"}'
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
  statuses[status] = (statuses[status] or 0) + 1
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
  for _, thread in ipairs(threads) do
    total = total + thread:get("non2xx")
    for status, count in pairs(thread:get("statuses")) do
      merged[status] = (merged[status] or 0) + count
    end
  end
  io.write(string.format("aigw-bench non2xx=%d statuses=%s\n", total, joined(merged)))
end
