-- wrk script: POST one v1 payload as application/json on every request.
--
--   wrk [options] -s bench/post.lua URL -- PAYLOAD_FILE [INTERVAL_MS]
--
-- INTERVAL_MS (optional, used by bench/soak.sh) makes every connection wait
-- that long before each request, so C connections post at about
-- C * 1000 / INTERVAL_MS requests per second.
--
-- When wrk is done, one line "BENCH {json}" gives the figures bench/run.sh
-- records: requests, seconds, requests/s, latency percentiles (microseconds)
-- and the error counts. wrk counts every answer outside 2xx/3xx as a
-- "status" error.

function init(args)
	local path = args[1]
	if path == nil then
		error("post.lua: pass the payload file after --")
	end
	local f = assert(io.open(path, "rb"))
	wrk.body = f:read("*a")
	f:close()
	wrk.method = "POST"
	wrk.headers["Content-Type"] = "application/json"
	local interval = tonumber(args[2])
	if interval ~= nil and interval > 0 then
		function delay()
			return interval
		end
	end
end

function done(summary, latency, requests)
	local e = summary.errors
	local secs = summary.duration / 1e6
	io.write(string.format(
		'BENCH {"requests":%d,"seconds":%.3f,"rps":%.1f,"bytes":%d,' ..
		'"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
		'"non2xx":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d}\n',
		summary.requests, secs, summary.requests / secs, summary.bytes,
		latency:percentile(50), latency:percentile(90), latency:percentile(99),
		latency.max, latency.mean,
		e.status, e.connect, e.read, e.write, e.timeout))
end
