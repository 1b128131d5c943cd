-- GET /iwd/v3/tasks/{id} over the first 1,000 tasks
wrk.headers["x-api-key"] = "bench-tenant-key-0001"
request = function()
    return wrk.format("GET", "/iwd/v3/tasks/" .. math.random(1, 1000))
end
