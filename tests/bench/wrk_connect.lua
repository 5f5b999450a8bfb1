-- SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
--
-- make bench: wrk keeps the URL's host name (TLS SNI and the Host header)
-- but opens every connection to BENCH_CONNECT ("ADDR:PORT"): how a client
-- is pointed at an SNI router or at a virtual origin that nft redirects to
-- a transparent proxy. Without BENCH_CONNECT wrk resolves the name as
-- usual (through the bed's DNS, or egressd's DNS proxy in its cgroup).
local target = os.getenv("BENCH_CONNECT")

-- Every row connects over IPv4 (like curl -4 in the other clients), so all
-- of them take the same path and egressd's connect4 hook is the one timed.
local function ipv4_only(addrs)
	local out = {}
	for _, a in ipairs(addrs) do
		local _, colons = string.gsub(tostring(a), ":", "")
		if colons == 1 then
			table.insert(out, a)
		end
	end
	return out
end

wrk.resolve = function(host, service)
	if target ~= nil and target ~= "" then
		local addr, port = string.match(target, "^(.+):(%d+)$")
		if addr == nil then
			error("BENCH_CONNECT must be ADDR:PORT, got " .. target)
		end
		host, service = addr, port
	end
	wrk.addrs = ipv4_only(wrk.lookup(host, service))
end
