-- POST /iwd/v3/tasks with a new external id each time (per wrk thread prefix)
local counter = 0
local prefix = tostring(math.random(1, 1e9))
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["x-api-key"] = "bench-tenant-key-0001"
request = function()
    counter = counter + 1
    local body = string.format('{"externalId": "W-%s-%d", "capturePoint": "wrk", "subject": "bench task %d", "attributes": {"amount": %d}}',
                               prefix, counter, counter, counter % 5000)
    return wrk.format(nil, "/iwd/v3/tasks", nil, body)
end
