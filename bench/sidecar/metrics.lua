-- GET /iwd/v3/metrics
request = function()
    return wrk.format("GET", "/iwd/v3/metrics")
end
