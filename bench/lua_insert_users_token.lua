-- anchors/lua_insert_users.lua (ANCHOR_SCRIPT), with AUTHORIZATION (env) on every request:
-- its wrk.format call passes its own headers, which replace wrk's (and wrk -H's).
dofile(os.getenv("ANCHOR_SCRIPT"))
local format = wrk.format
local authorization = os.getenv("AUTHORIZATION")
wrk.format = function(method, path, headers, body)
  headers = headers or {}
  if authorization and authorization ~= "" then headers["Authorization"] = authorization end
  return format(method, path, headers, body)
end
