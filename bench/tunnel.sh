#!/usr/bin/env bash
# bench/tunnel.sh: the cost of interception (HTTPS_PROXY, intercept.enabled).
# 16 keep-alive connections send small GETs through the sidecar's CONNECT
# tunnels, compared with the same GETs in base-URL mode and with nginx
# terminating TLS for the app (a leaf from the same CA) and adding the static
# header. Then a new tunnel per request, to price a tunnel's handshake. All on
# loopback; see bench/README.md, "Tunnels (HTTPS_PROXY)".
#
#   bash bench/tunnel.sh                              # about 1 min
#   BENCH_DURATION=2 BENCH_ROUNDS=1 bash bench/tunnel.sh
#
# Knobs: BENCH_DURATION (seconds per run, 3), BENCH_ROUNDS (2),
# BENCH_LOAD_CPU (0), BENCH_PROXY_CPU (1), BENCH_PORT_BASE (18800),
# BENCH_OUT (also write the table there). Needs nginx, curl and taskset
# (bench/run.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

duration=${BENCH_DURATION:-3}
rounds=${BENCH_ROUNDS:-2}
load_cpu=${BENCH_LOAD_CPU:-0}
proxy_cpu=${BENCH_PROXY_CPU:-1}
next_port=${BENCH_PORT_BASE:-18800}
upstream_port='' nginx_port='' sidecar_port='' admin_port='' # set by free_port
clk_tck=$(getconf CLK_TCK)
started=$SECONDS

say() { printf 'bench: %s\n' "$*" >&2; }
die() {
	say "$*"
	exit 1
}
for tool in nginx curl taskset; do
	command -v "$tool" >/dev/null || die "needs $tool (bash bench/run.sh installs it)"
done
[ "$(nproc)" -ge 2 ] || die "needs 2 cores (one for the load, one for the proxy)"

tmp=$(mktemp -d /tmp/dinie-bench-tunnel.XXXXXX)
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
fill() { # fill TEMPLATE OUT PORT
	sed -e "s|@TMP@|$tmp|g" -e "s|@PORT@|$3|g" -e "s|@UPSTREAM_PORT@|$upstream_port|g" \
		-e "s|@CERT@|$tmp/upstream.pem|g" -e "s|@KEY@|$tmp/upstream-key.pem|g" \
		-e "s|@LEAF@|$tmp/ica/leaf.pem|g" -e "s|@LEAF_KEY@|$tmp/ica/leaf-key.pem|g" "$1" >"$2"
}

say "building dinie-auth-proxy, the upstream and the load generator"
build_proxy "$tmp/dinie-auth-proxy" || die "go build failed"
go build -o "$tmp/upstream" ./bench/upstream || die "go build of bench/upstream failed"
go build -o "$tmp/tunnelload" ./bench/tunnelload || die "go build of bench/tunnelload failed"

# The fake Dinie: nginx on the load core, as in bench/run.sh.
free_port upstream_port
"$tmp/upstream" -gen-only -cert-out "$tmp/upstream.pem" -key-out "$tmp/upstream-key.pem"
mkdir -p "$tmp/www" "$tmp/upstream-prefix" "$tmp/nginx-prefix"
: >"$tmp/www/blob"
fill bench/upstream-nginx.conf.tmpl "$tmp/upstream-nginx.conf" "$upstream_port"
taskset -c "$load_cpu" nginx -e "$tmp/upstream-nginx-error.log" -p "$tmp/upstream-prefix" \
	-c "$tmp/upstream-nginx.conf" >"$tmp/upstream.log" 2>&1 &
started_pids+=($!)
wait_port "$upstream_port" "$!" upstream

# One CA for both: the sidecar reuses it through intercept.key_dir, nginx
# serves a leaf from it.
"$tmp/tunnelload" -gen "$tmp/ica" -host localhost || die "tunnelload -gen failed"
ca=$tmp/ica/ca/ca.crt

free_port nginx_port
fill bench/nginx-tls.conf.tmpl "$tmp/nginx.conf" "$nginx_port"
nginx -t -q -e "$tmp/nginx-error.log" -p "$tmp/nginx-prefix" -c "$tmp/nginx.conf" 2>"$tmp/nginx.log" ||
	die "nginx -t: $(cat "$tmp/nginx.log")"
taskset -c "$proxy_cpu" nginx -e "$tmp/nginx-error.log" -p "$tmp/nginx-prefix" -c "$tmp/nginx.conf" >"$tmp/nginx.log" 2>&1 &
started_pids+=($!)
nginx_pid=$!
wait_port "$nginx_port" "$nginx_pid" nginx

free_port sidecar_port
free_port admin_port
taskset -c "$proxy_cpu" "$tmp/dinie-auth-proxy" \
	--upstream.url "https://localhost:$upstream_port/api/v3" --upstream.ca_file "$tmp/upstream.pem" \
	--auth.client_id fake-bench-id --auth.client_secret fake-bench-secret \
	--listen.proxy "127.0.0.1:$sidecar_port" --listen.admin "127.0.0.1:$admin_port" \
	--intercept.enabled true --intercept.ca_dir "$tmp/ica/ca" --intercept.key_dir "$tmp/ica/key" \
	--log.level warn --shutdown.timeout 1s >"$tmp/sidecar.log" 2>&1 &
started_pids+=($!)
sidecar_pid=$!
for ((i = 0; i < 150; i++)); do
	kill -0 "$sidecar_pid" 2>/dev/null || die "dinie-auth-proxy exited: $(cat "$tmp/sidecar.log")"
	[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin_port/readyz")" = 200 ] && break
	sleep 0.1
done

dinie="https://localhost:$upstream_port/api/v3/customers"
body=$(curl -sf --proxy "http://127.0.0.1:$sidecar_port" --cacert "$ca" "$dinie") || die "no answer through a tunnel; see $tmp/sidecar.log"
[[ $body == *cus_0123456789abcdef* ]] || die "tunnel answered something else: $body"
body=$(curl -sf --cacert "$ca" "https://localhost:$nginx_port/api/v3/customers") || die "nginx with TLS does not proxy"
[[ $body == *cus_0123456789abcdef* ]] || die "nginx answered something else: $body"
say "upstream :$upstream_port, sidecar :$sidecar_port (pid $sidecar_pid), nginx TLS :$nginx_port (pid $nginx_pid)"

# name target-pid args...
scenarios=(
	"base sidecar -url http://127.0.0.1:$sidecar_port/api/v3/customers"
	"tunnel sidecar -proxy http://127.0.0.1:$sidecar_port -url $dinie -ca $ca"
	"nginx-tls nginx -url https://localhost:$nginx_port/api/v3/customers -ca $ca"
	"tunnel-new-full sidecar -proxy http://127.0.0.1:$sidecar_port -url $dinie -ca $ca -new-conn -no-resume"
	"tunnel-new-resumed sidecar -proxy http://127.0.0.1:$sidecar_port -url $dinie -ca $ca -new-conn"
	"nginx-tls-new-full nginx -url https://localhost:$nginx_port/api/v3/customers -ca $ca -new-conn -no-resume"
)
results=$tmp/results.tsv
: >"$results"
for ((r = 1; r <= rounds; r++)); do
	for spec in "${scenarios[@]}"; do
		read -r name target args <<<"$spec"
		read -ra argv <<<"$args"
		if [ "$target" = nginx ]; then
			read -ra pids <<<"$nginx_pid $(pgrep -P "$nginx_pid" | tr '\n' ' ')"
		else
			pids=("$sidecar_pid")
		fi
		t0=$(cpu_ticks "${pids[@]}")
		out=$(taskset -c "$load_cpu" "$tmp/tunnelload" -conns 16 -duration "${duration}s" -warmup 500ms "${argv[@]}") ||
			die "tunnelload failed on $name: $out"
		t1=$(cpu_ticks "${pids[@]}")
		read -r _ req dur p50 p99 errs bad <<<"$(grep '^BENCH ' <<<"$out")"
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$req" "$dur" "$p50" "$p99" "$((errs + bad))" "$((t1 - t0))" >>"$results"
		say "$(awk -v n="$name" -v q="$req" -v d="$dur" -v p="$p99" -v t="$((t1 - t0))" -v k="$clk_tck" -v e="$((errs + bad))" \
			'BEGIN { printf "round '"$r"' %-20s %7.0f req/s  p99 %6.2f ms  %6.1f us CPU/req  errors %d", n, q / (d / 1e6), p / 1000, t / k / q * 1e6, e }')"
	done
done

table=$tmp/table.md
awk -F'\t' -v k="$clk_tck" '
function ok(c) { return c ? "met" : "NOT MET" }
{
	if (!($1 in req)) names[++n] = $1
	req[$1] += $2; dur[$1] += $3; p50[$1] += $4; p99[$1] += $5; runs[$1]++; errs[$1] += $6; ticks[$1] += $7
}
END {
	print "| scenario (16 connections, GET 200 B) | req/s | p50 ms | p99 ms | CPU us / req | errors |"
	print "| --- | ---: | ---: | ---: | ---: | ---: |"
	for (i = 1; i <= n; i++) {
		s = names[i]; C[s] = ticks[s] / k / req[s] * 1e6
		printf "| %s | %.0f | %.3f | %.3f | %.1f | %d |\n", s, req[s] / (dur[s] / 1e6), p50[s] / runs[s] / 1000, p99[s] / runs[s] / 1000, C[s], errs[s]
	}
	r = C["tunnel"] / C["nginx-tls"]; hs = (C["tunnel-new-full"] - C["tunnel"]) / 1000
	printf "\nCPU per request: tunnel / nginx-tls %.2fx (issue 24: <= 1.2x: %s); tunnel / base URL %.2fx. ", r, ok(r <= 1.2), C["tunnel"] / C["base"]
	printf "A new tunnel (CONNECT + full handshake) costs %.2f ms of CPU over a request in a kept tunnel (target < 2 ms: %s), ", hs, ok(hs < 2)
	printf "%.2f ms resumed; nginx pays %.2f ms for a new full TLS connection.\n", (C["tunnel-new-resumed"] - C["tunnel"]) / 1000, (C["nginx-tls-new-full"] - C["nginx-tls"]) / 1000
}' "$results" >"$table"
{
	echo
	echo "dinie-auth-proxy $(git -C "$root" describe --always --dirty 2>/dev/null || echo '?'), $(go version | awk '{print $3}'), $(nginx -v 2>&1 | sed 's/.*: //'); load generator bench/tunnelload"
	echo "$(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); ${rounds} rounds x ${duration} s, interleaved; load + upstream on cpu $load_cpu, proxy on cpu $proxy_cpu"
	echo
	cat "$table"
} | tee "${BENCH_OUT:-/dev/null}"
say "done in $((SECONDS - started)) s"
