-- GET /iwd/v3/metrics on the API port, which needs the admin key (Prometheus scrapes the metrics port)
request = function()
    return wrk.format("GET", "/iwd/v3/metrics", {["x-api-key"] = "bench-admin-key"})
end
