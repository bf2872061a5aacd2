#!/usr/bin/env bash
# bench/counts.sh: what a request costs in system calls and context switches,
# dinie-auth-proxy against nginx, counted by the kernel (perf's tracepoints),
# so the figures hold on a busy machine, where CPU times do not. See
# bench/README.md, "Profile, before and after (issue 24)".
#
#   bash bench/counts.sh                       # about 1 minute
#   BENCH_SIDECAR=/path/to/binary bash bench/counts.sh   # another build
#
# Knobs: BENCH_DURATION (seconds per wrk run, 3), BENCH_ROUNDS (2),
# BENCH_SIDECAR (a built dinie-auth-proxy; default: built from the work tree),
# BENCH_LOAD_CPU (0), BENCH_PROXY_CPU (1), BENCH_PORT_BASE (18900). Needs perf
# (Debian's linux-perf), nginx, wrk, curl and taskset, and root for perf.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${BENCH_DURATION:-3}
rounds=${BENCH_ROUNDS:-2}
load_cpu=${BENCH_LOAD_CPU:-0}
proxy_cpu=${BENCH_PROXY_CPU:-1}
next_port=${BENCH_PORT_BASE:-18900}
upstream_port='' nginx_port='' sidecar_port='' admin_port='' # set by free_port

say() { printf 'bench: %s\n' "$*" >&2; }
die() {
	say "$*"
	exit 1
}
for tool in perf nginx wrk curl taskset; do
	command -v "$tool" >/dev/null || die "needs $tool"
done

tmp=$(mktemp -d /tmp/dinie-bench-counts.XXXXXX)
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
fill() { # fill TEMPLATE OUT PORT
	sed -e "s|@TMP@|$tmp|g" -e "s|@PORT@|$3|g" -e "s|@UPSTREAM_PORT@|$upstream_port|g" \
		-e "s|@CERT@|$tmp/upstream.pem|g" -e "s|@KEY@|$tmp/upstream-key.pem|g" "$1" >"$2"
}

sidecar=${BENCH_SIDECAR:-}
if [ -z "$sidecar" ]; then
	build_proxy "$tmp/dinie-auth-proxy" || die "go build failed"
	sidecar=$tmp/dinie-auth-proxy
fi
go build -o "$tmp/upstream" ./bench/upstream || die "go build of bench/upstream failed"

free_port upstream_port
"$tmp/upstream" -gen-only -cert-out "$tmp/upstream.pem" -key-out "$tmp/upstream-key.pem"
mkdir -p "$tmp/www" "$tmp/upstream-prefix" "$tmp/nginx-prefix"
head -c 1048576 /dev/zero | tr '\0' 'a' >"$tmp/www/blob"
fill bench/upstream-nginx.conf.tmpl "$tmp/upstream-nginx.conf" "$upstream_port"
taskset -c "$load_cpu" nginx -e "$tmp/upstream-error.log" -p "$tmp/upstream-prefix" -c "$tmp/upstream-nginx.conf" \
	>"$tmp/upstream.log" 2>&1 &
started_pids+=($!)
wait_port "$upstream_port" "$!" upstream

free_port nginx_port
fill bench/nginx.conf.tmpl "$tmp/nginx.conf" "$nginx_port"
taskset -c "$proxy_cpu" nginx -e "$tmp/nginx-error.log" -p "$tmp/nginx-prefix" -c "$tmp/nginx.conf" >"$tmp/nginx.log" 2>&1 &
nginx_master=$!
started_pids+=("$nginx_master")
wait_port "$nginx_port" "$nginx_master" nginx
nginx_worker=$(pgrep -P "$nginx_master" | head -1)

free_port sidecar_port
free_port admin_port
GOGC=200 taskset -c "$proxy_cpu" "$sidecar" \
	--upstream.url "https://127.0.0.1:$upstream_port/api/v3" --upstream.ca_file "$tmp/upstream.pem" \
	--auth.client_id fake-bench-id --auth.client_secret fake-bench-secret \
	--listen.proxy "127.0.0.1:$sidecar_port" --listen.admin "127.0.0.1:$admin_port" \
	--log.level warn --shutdown.timeout 1s >"$tmp/sidecar.log" 2>&1 &
sidecar_pid=$!
started_pids+=("$sidecar_pid")
wait_port "$sidecar_port" "$sidecar_pid" sidecar
for _ in $(seq 100); do
	[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin_port/readyz")" = 200 ] && break
	sleep 0.1
done

# count PID PORT CONNS PATH LUA: one wrk run, counted on PID; prints
# requests, system calls, context switches, task-clock ms, then the count
# of each system call number.
count() {
	local pid=$1 port=$2 conns=$3 path=$4 lua=$5 req
	# Warm-up, not counted: connection pools filled for this many
	# connections.
	taskset -c "$load_cpu" wrk -t1 -c"$conns" -d1s -s "bench/$lua" "http://127.0.0.1:$port$path" >/dev/null 2>&1
	perf record -q -c 1 -e raw_syscalls:sys_enter -e context-switches -p "$pid" -o "$tmp/perf.data" -- \
		taskset -c "$load_cpu" wrk -t1 -c"$conns" -d"${duration}s" -s "bench/$lua" "http://127.0.0.1:$port$path" \
		>"$tmp/wrk.out" 2>/dev/null
	req=$(awk '/^BENCH/ {print $2}' "$tmp/wrk.out")
	if [ -z "$req" ] || [ "$req" -eq 0 ]; then
		die "no requests counted: $(cat "$tmp/wrk.out")"
	fi
	perf script -i "$tmp/perf.data" -F event,trace 2>/dev/null | awk -v r="$req" '
		/sys_enter/ { for (i = 1; i <= NF; i++) if ($i == "NR") { n[$(i + 1)]++; total++ } }
		/context-switches/ { cs++ }
		END {
			# x86-64 numbers of the calls that matter here
			split("0 read 1 write 20 writev 45 recvfrom 55 getsockopt 35 nanosleep 202 futex 232 epoll_wait 281 epoll_pwait 24 sched_yield", m, " ")
			for (i = 1; i in m; i += 2) name[m[i]] = m[i + 1]
			printf "%.2f %.3f", total / r, cs / r
			for (k in n) if (n[k] / r >= 0.01) printf " %s=%.2f", (k in name ? name[k] : "#" k), n[k] / r
			printf "\n"
		}'
}

printf '| test | target | system calls / req | context switches / req | by call, per request |\n'
printf '| --- | --- | ---: | ---: | --- |\n'
for ((r = 1; r <= rounds; r++)); do
	for spec in "GET-16 16 /api/v3/customers get.lua" "GET-128 128 /api/v3/customers get.lua" "POST-64KiB 16 /api/v3/upload post.lua"; do
		read -r name conns path lua <<<"$spec"
		for t in nginx sidecar; do
			if [ "$t" = nginx ]; then
				out=$(count "$nginx_worker" "$nginx_port" "$conns" "$path" "$lua")
			else
				out=$(count "$sidecar_pid" "$sidecar_port" "$conns" "$path" "$lua")
			fi
			read -r sys cs rest <<<"$out"
			printf '| %s (round %d) | %s | %s | %s | %s |\n' "$name" "$r" "$t" "$sys" "$cs" "$rest"
		done
	done
done
