-- POST /iwd/v3/agents/{id}/next for 500 agents picked at random
wrk.method = "POST"
wrk.headers["x-api-key"] = "bench-tenant-key-0001"
request = function()
    return wrk.format(nil, "/iwd/v3/agents/agent" .. math.random(1, 500) .. "/next")
end
