-- wrk: POST mixed batches to INSERT_PATH (env): BATCH (env, default 10) new users with unique
-- e-mails, as many products, and as many orders, each for a stored user (ids 1..USERS, env)
-- and a stored product (ids 1..PRODUCTS, env), so every order is checked across databases.
-- AUTHORIZATION (env) on every request; RUN (env) keeps runs apart.
local counter = 0
tid = 0 -- a global: setup() sets it per thread
local threads = {}
local batch = tonumber(os.getenv("BATCH") or "10")
local users = tonumber(os.getenv("USERS") or "1000")
local products = tonumber(os.getenv("PRODUCTS") or "100")
local path = os.getenv("INSERT_PATH") or "/api/run-query/?type=insert"
local run = os.getenv("RUN") or tostring(os.time())
local authorization = os.getenv("AUTHORIZATION")
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
function request()
  local u, p, o = {}, {}, {}
  for i = 1, batch do
    counter = counter + 1
    u[i] = string.format('{"name":"Bench %d %d","email":"b%s-t%d-%d@bench.example"}', tid, counter, run, tid, counter)
    p[i] = string.format('{"name":"Bench product %d %d","price":"%d.%02d"}', tid, counter, counter % 500, counter % 100)
    o[i] = string.format('{"user_id":%d,"product_id":%d,"quantity":%d}', math.random(users), math.random(products), 1 + counter % 5)
  end
  local body = '{"users":[' .. table.concat(u, ",") .. '],"products":[' .. table.concat(p, ",") .. '],"orders":[' .. table.concat(o, ",") .. ']}'
  local headers = {["Content-Type"] = "application/json"}
  if authorization and authorization ~= "" then headers["Authorization"] = authorization end
  return wrk.format("POST", path, headers, body)
end
