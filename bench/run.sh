#!/usr/bin/env bash
# bench/run.sh: dinie-auth-proxy against nginx and haproxy doing the same job
# (inject a static Bearer header in front of an HTTPS upstream), all on
# loopback. See bench/README.md for what it measures and how to read it.
#
#   bash bench/run.sh                     # full run, about 3 minutes
#   BENCH_DURATION=2 BENCH_ROUNDS=1 bash bench/run.sh   # quick look
#   BENCH_MODE=instructions bash bench/run.sh           # callgrind, about 1 minute
#
# Knobs (environment):
#   BENCH_DURATION      seconds per wrk run (4)
#   BENCH_ROUNDS        interleaved rounds, averaged per target (3)
#   BENCH_TARGETS       targets in the order they interleave ("nginx haproxy sidecar");
#                       "fasthttp" and "fasthttp-full" add the references in
#                       bench/fasthttp
#   BENCH_LOAD_CPU      core for wrk and the upstream (0)
#   BENCH_PROXY_CPU     core for the proxy under test (1)
#   BENCH_UPSTREAM      nginx (default) or go: what serves the fake Dinie API
#   BENCH_SIDECAR_ARGS  extra flags for dinie-auth-proxy, e.g. "--upstream.transport standard"
#   BENCH_SIDECAR_ENV   extra environment for dinie-auth-proxy, e.g. "GOGC=off"
#   BENCH_TESTS         which tests, as NAME/CONNS ("get/16 get/128 post64k/16");
#                       all five when unset
#   BENCH_PORT_BASE     first port to try (18700)
#   BENCH_OUT           also write the result table to this file
#   BENCH_KEEP          keep the temporary directory (logs, callgrind output)
#   BENCH_MODE          load (default) or instructions: the sidecar alone under
#                       callgrind, user-space instructions per GET at 16
#                       connections (repeatable to ~1%, where wall-clock CPU
#                       on a shared VM is not)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

duration=${BENCH_DURATION:-4}
upstream_kind=${BENCH_UPSTREAM:-nginx}
rounds=${BENCH_ROUNDS:-3}
read -ra targets <<<"${BENCH_TARGETS:-nginx haproxy sidecar}"
load_cpu=${BENCH_LOAD_CPU:-0}
proxy_cpu=${BENCH_PROXY_CPU:-1}
read -ra sidecar_args <<<"${BENCH_SIDECAR_ARGS:-}"
read -ra sidecar_env <<<"${BENCH_SIDECAR_ENV:-}"
mode=${BENCH_MODE:-load}
case $mode in
load) ;;
instructions) targets=(sidecar) ;;
*)
	echo "bench: BENCH_MODE must be load or instructions, not $mode" >&2
	exit 1
	;;
esac
next_port=${BENCH_PORT_BASE:-18700}
upstream_port='' upstream_pid='' cert='' key='' # set once the upstream is started
clk_tck=$(getconf CLK_TCK)
started=$SECONDS

say() { printf 'bench: %s\n' "$*" >&2; }
die() {
	say "$*"
	exit 1
}

# --- tools -------------------------------------------------------------------

install_tools() {
	local missing=()
	command -v wrk >/dev/null || missing+=(wrk)
	command -v nginx >/dev/null || missing+=(nginx)
	command -v haproxy >/dev/null || missing+=(haproxy)
	command -v curl >/dev/null || missing+=(curl)
	command -v taskset >/dev/null || missing+=(util-linux)
	[ "$mode" = instructions ] && ! command -v callgrind_control >/dev/null && missing+=(valgrind)
	[ ${#missing[@]} -eq 0 ] && return
	[ "$(id -u)" = 0 ] || die "need root to apt-get install ${missing[*]}"
	say "installing ${missing[*]} from Debian"
	# Debian's nginx and haproxy packages start their system services on
	# install; a policy-rc.d that says no keeps them stopped. Ours run from
	# temporary configs.
	local policy=/usr/sbin/policy-rc.d made_policy=
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod +x "$policy"
		made_policy=1
	fi
	local rc=0
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >&2 || rc=$?
	[ -n "$made_policy" ] && rm -f "$policy"
	[ "$rc" = 0 ] || die "apt-get install ${missing[*]} failed"
}

# --- processes -----------------------------------------------------------------

tmp=$(mktemp -d /tmp/dinie-bench.XXXXXX)
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

fill() { # fill TEMPLATE OUT PORT
	sed -e "s|@TMP@|$tmp|g" -e "s|@PORT@|$3|g" -e "s|@UPSTREAM_PORT@|$upstream_port|g" \
		-e "s|@CERT@|$cert|g" -e "s|@KEY@|$key|g" "$1" >"$2"
}

declare -A target_port=() target_pid=()

start_nginx() {
	local port
	free_port port
	fill bench/nginx.conf.tmpl "$tmp/nginx.conf" "$port"
	mkdir -p "$tmp/nginx-prefix"
	nginx -t -q -e "$tmp/nginx-error.log" -p "$tmp/nginx-prefix" -c "$tmp/nginx.conf" 2>"$tmp/nginx.log" ||
		die "nginx -t: $(cat "$tmp/nginx.log")"
	taskset -c "$proxy_cpu" nginx -e "$tmp/nginx-error.log" -p "$tmp/nginx-prefix" -c "$tmp/nginx.conf" \
		>"$tmp/nginx.log" 2>&1 &
	started_pids+=($!)
	target_pid[nginx]=$!
	target_port[nginx]=$port
	wait_port "$port" "$!" nginx
}

start_haproxy() {
	local port
	free_port port
	fill bench/haproxy.cfg.tmpl "$tmp/haproxy.cfg" "$port"
	haproxy -c -q -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 || die "haproxy -c: $(cat "$tmp/haproxy.log")"
	taskset -c "$proxy_cpu" haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
	started_pids+=($!)
	target_pid[haproxy]=$!
	target_port[haproxy]=$port
	wait_port "$port" "$!" haproxy
}

# start_fasthttp [NAME FLAG]: the reference in bench/fasthttp (not the
# product), bare or with -full, with the sidecar's GOGC.
start_fasthttp() {
	local name=${1:-fasthttp} port
	free_port port
	GOGC=200 taskset -c "$proxy_cpu" "$tmp/fasthttp" -listen "127.0.0.1:$port" \
		-upstream "127.0.0.1:$upstream_port" -ca "$cert" ${2:+"$2"} >"$tmp/$name.log" 2>&1 &
	started_pids+=($!)
	target_pid[$name]=$!
	target_port[$name]=$port
	wait_port "$port" "$!" "$name"
}

start_fasthttp-full() { start_fasthttp fasthttp-full -full; }

start_sidecar() {
	local port admin i wrapper=()
	free_port port
	free_port admin
	if [ "$mode" = instructions ]; then
		# Counting starts at the first zeroing, after the warm-up. Go's
		# preemption signals trip an assertion in callgrind: off.
		wrapper=(env GODEBUG=asyncpreemptoff=1 valgrind --tool=callgrind --collect-atstart=yes
			"--callgrind-out-file=$tmp/callgrind.out")
	fi
	taskset -c "$proxy_cpu" env "${sidecar_env[@]}" "${wrapper[@]}" "$tmp/dinie-auth-proxy" \
		--upstream.url "https://127.0.0.1:$upstream_port/api/v3" --upstream.ca_file "$cert" \
		--auth.client_id fake-bench-id --auth.client_secret fake-bench-secret \
		--listen.proxy "127.0.0.1:$port" --listen.admin "127.0.0.1:$admin" \
		--log.level warn --shutdown.timeout 1s "${sidecar_args[@]}" >"$tmp/sidecar.log" 2>&1 &
	started_pids+=($!)
	target_pid[sidecar]=$!
	target_port[sidecar]=$port
	for ((i = 0; i < 600; i++)); do # 60 s: valgrind starts slowly
		kill -0 "${target_pid[sidecar]}" 2>/dev/null || die "dinie-auth-proxy exited: $(cat "$tmp/sidecar.log")"
		[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/readyz")" = 200 ] && return 0
		sleep 0.1
	done
	die "dinie-auth-proxy not ready within 60 s: $(cat "$tmp/sidecar.log")"
}

# pids_of TARGET: the target's process and its children (nginx's workers).
pids_of() {
	local pid=${target_pid[$1]}
	local kids
	kids=$(pgrep -P "$pid" | tr '\n' ' ' || true)
	echo "$pid $kids"
}

# reset_hwm PID...: writing 5 to clear_refs resets VmHWM to the current RSS
# (Linux 4.0+), so each run reports its own peak, not the lifetime's.
reset_hwm() {
	local pid
	for pid in "$@"; do echo 5 >"/proc/$pid/clear_refs" 2>/dev/null || true; done
}

hwm_kib() {
	local pid sum=0 v
	for pid in "$@"; do
		v=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
		sum=$((sum + ${v:-0}))
	done
	echo "$sum"
}

# --- the tests -----------------------------------------------------------------

# name conns path lua
tests=(
	"get 1 /api/v3/customers get.lua"
	"get 16 /api/v3/customers get.lua"
	"get 128 /api/v3/customers get.lua"
	"post64k 16 /api/v3/upload post.lua"
	"get1m 16 /api/v3/blob get.lua"
)

if [ -n "${BENCH_TESTS:-}" ]; then
	chosen=()
	for spec in "${tests[@]}"; do
		read -r name conns _ <<<"$spec"
		[[ " $BENCH_TESTS " == *" $name/$conns "* ]] && chosen+=("$spec")
	done
	[ ${#chosen[@]} -gt 0 ] || die "BENCH_TESTS names no test (get/1 get/16 get/128 post64k/16 get1m/16)"
	tests=("${chosen[@]}")
fi

results=$tmp/results.tsv
: >"$results"

# children_ticks: CPU of this shell's finished children (wrk), from the
# builtin times, in clock ticks. It must run in this shell, not in $(...).
children_ticks() {
	local -n ticks_out=$1
	local line u s
	times >"$tmp/times"
	line=$(sed -n 2p "$tmp/times") # "0m1.234s 0m0.567s"
	read -r u s <<<"$line"
	# shellcheck disable=SC2034 # a nameref: it sets the caller's variable
	ticks_out=$(awk -v u="$u" -v s="$s" -v k="$clk_tck" 'function sec(x, m) { split(x, m, "m"); return m[1] * 60 + m[2] + 0 }
		BEGIN { printf "%d", (sec(u) + sec(s)) * k }')
}

# all_busy: busy jiffies of both cores, from /proc/stat.
all_busy() {
	awk -v a="cpu$load_cpu" -v b="cpu$proxy_cpu" '$1 == a || $1 == b { t = 0; for (i = 2; i <= NF; i++) t += $i; busy += t - $5 - $6 } END { print busy }' /proc/stat
}

max_other=0
probe_min=0 probe_max=0

# run_wrk TARGET TEST CONNS PATH LUA ROUND: one measured run, one line in results.
run_wrk() {
	local target=$1 test=$2 conns=$3 path=$4 lua=$5 round=$6 pids out line t0 t1 u0 u1 w0 w1 a0 a1 probe
	# The machine's own speed just before, on the idle proxy core.
	probe=$(taskset -c "$proxy_cpu" "$tmp/probe") || die "bench/probe failed"
	probe=${probe%% *}
	((probe_min == 0 || probe < probe_min)) && probe_min=$probe
	((probe > probe_max)) && probe_max=$probe
	read -ra pids <<<"$(pids_of "$target")"
	reset_hwm "${pids[@]}"
	t0=$(cpu_ticks "${pids[@]}")
	u0=$(cpu_ticks "$upstream_pid")
	a0=$(all_busy)
	children_ticks w0
	out=$(timeout $((duration + 30)) taskset -c "$load_cpu" \
		wrk -t1 -c"$conns" -d"${duration}s" --latency -s "bench/$lua" \
		"http://127.0.0.1:${target_port[$target]}$path" 2>&1) || die "wrk failed on $target: $out"
	children_ticks w1
	a1=$(all_busy)
	u1=$(cpu_ticks "$upstream_pid")
	t1=$(cpu_ticks "${pids[@]}")
	line=$(grep '^BENCH ' <<<"$out") || die "no summary from wrk on $target: $out"
	# BENCH requests duration_us p50_us p99_us errors non2xx p90_us
	read -r _ req dur p50 p99 errs bad p90 <<<"$line"
	# Whatever else ran on the two cores meanwhile (other processes, and
	# interrupt time not charged to a process), in % of one core.
	local other
	other=$(awk -v a="$((a1 - a0 - (t1 - t0) - (u1 - u0) - (w1 - w0)))" -v d="$dur" -v k="$clk_tck" \
		'BEGIN { o = a / k / (d / 1e6) * 100; printf "%d", o < 0 ? 0 : o }')
	[ "$other" -gt "$max_other" ] && max_other=$other
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$test" "$conns" "$round" \
		"$req" "$dur" "$p50" "$p99" "$errs" "$bad" "$((t1 - t0))" "$(hwm_kib "${pids[@]}")" "$other" "$p90" "$probe" >>"$results"
	say "$(awk -v r="$round" -v t="$target" -v n="$test" -v c="$conns" -v q="$req" -v d="$dur" -v p="$p99" \
		-v pt="$((t1 - t0))" -v ut="$((u1 - u0))" -v wt="$((w1 - w0))" -v k="$clk_tck" -v o="$other" -v e="$errs" -v b="$bad" \
		-v pr="$probe" 'BEGIN {
		s = d / 1e6
		printf "round %s %-8s %-8s c=%-3s %8.0f req/s  p99 %7.2f ms  cpu%%: proxy %3.0f upstream %3.0f wrk %3.0f other %3.0f  probe %3.0f ms%s",
			r, t, n, c, q / s, p / 1000, pt / k / s * 100, ut / k / s * 100, wt / k / s * 100, o, pr / 1000,
			(e + b > 0 ? "  ERRORS: " e " socket, " b " non-2xx" : "")
	}')"
}

# --- main ----------------------------------------------------------------------

[ "$(nproc)" -ge 2 ] || die "needs 2 cores (one for the load, one for the proxy)"
install_tools

say "building dinie-auth-proxy and the upstream"
build_proxy "$tmp/dinie-auth-proxy" || die "go build of dinie-auth-proxy failed"
go build -o "$tmp/upstream" ./bench/upstream || die "go build of bench/upstream failed"
go build -o "$tmp/probe" ./bench/probe || die "go build of bench/probe failed"
if [[ " ${targets[*]} " == *" fasthttp"* ]]; then
	(cd bench/fasthttp && go build -o "$tmp/fasthttp" .) || die "go build of bench/fasthttp failed"
fi

free_port upstream_port
cert=$tmp/upstream.pem
key=$tmp/upstream-key.pem
case $upstream_kind in
go)
	taskset -c "$load_cpu" "$tmp/upstream" -addr "127.0.0.1:$upstream_port" -cert-out "$cert" \
		>"$tmp/upstream.log" 2>&1 &
	;;
nginx)
	"$tmp/upstream" -gen-only -cert-out "$cert" -key-out "$key"
	mkdir -p "$tmp/www" "$tmp/upstream-prefix"
	head -c 1048576 /dev/zero | tr '\0' 'a' >"$tmp/www/blob"
	fill bench/upstream-nginx.conf.tmpl "$tmp/upstream-nginx.conf" "$upstream_port"
	taskset -c "$load_cpu" nginx -e "$tmp/upstream-nginx-error.log" -p "$tmp/upstream-prefix" \
		-c "$tmp/upstream-nginx.conf" >"$tmp/upstream.log" 2>&1 &
	;;
*) die "BENCH_UPSTREAM must be nginx or go, not $upstream_kind" ;;
esac
started_pids+=($!)
upstream_pid=$!
wait_port "$upstream_port" "$!" upstream
say "upstream ($upstream_kind) on https://127.0.0.1:$upstream_port (pid $upstream_pid, cpu $load_cpu)"

for t in "${targets[@]}"; do
	case $t in
	nginx | haproxy | sidecar | fasthttp | fasthttp-full) "start_$t" ;;
	*) die "unknown target $t (nginx, haproxy, sidecar, fasthttp, fasthttp-full)" ;;
	esac
	# Each must answer through the upstream with the token injected.
	body=$(curl -sf "http://127.0.0.1:${target_port[$t]}/api/v3/customers") || die "$t does not proxy; see $tmp/$t.log"
	[[ $body == *cus_0123456789abcdef* ]] || die "$t answered something else: $body"
	say "$t ready on 127.0.0.1:${target_port[$t]} (pid ${target_pid[$t]}, cpu $proxy_cpu)"
done

# count_instructions: the sidecar's user-space instructions per GET, from
# callgrind, over one wrk run at 16 connections after a warm-up. Kernel
# time is not counted (bench/README.md).
count_instructions() {
	local pid=${target_pid[sidecar]} out req total
	taskset -c "$load_cpu" wrk -t1 -c16 -d3s "http://127.0.0.1:${target_port[sidecar]}/api/v3/customers" >/dev/null
	# The warm-up's end leaves requests that are cancelled and logged once
	# the proxy notices: let that happen (and the log's one-off time-zone
	# load, 9k instructions per request of a run) before counting.
	sleep 1
	callgrind_control -z "$pid" >/dev/null
	out=$(taskset -c "$load_cpu" wrk -t1 -c16 -d"${duration}s" --latency -s bench/get.lua \
		"http://127.0.0.1:${target_port[sidecar]}/api/v3/customers" 2>&1) || die "wrk failed: $out"
	callgrind_control -d "$pid" >/dev/null
	read -r _ req _ <<<"$(grep '^BENCH ' <<<"$out")"
	total=$(awk '/^totals:/ { s += $2 } END { print s }' "$tmp"/callgrind.out.*)
	if [ -z "$req" ] || [ "$req" -eq 0 ] || [ -z "$total" ]; then
		die "no count from callgrind; see $tmp/sidecar.log"
	fi
	printf '\ndinie-auth-proxy %s: %d requests, %d instructions per request (user space)\n\n' \
		"$(git -C "$root" describe --always --dirty 2>/dev/null || echo '?')" "$req" "$((total / req))"
	# No split by package: callgrind follows calls, not goroutines, and
	# charges the work of the goroutines that run while one is parked to
	# the parked one's frames, so self costs of anything that blocks are
	# wrong (bench/README.md). The total is exact.
}

if [ "$mode" = instructions ]; then
	count_instructions | tee "${BENCH_OUT:-/dev/null}"
	say "done in $((SECONDS - started)) s"
	exit 0
fi

say "warming up (1 s at 16 connections each, not counted)"
for t in "${targets[@]}"; do
	taskset -c "$load_cpu" wrk -t1 -c16 -d1s "http://127.0.0.1:${target_port[$t]}/api/v3/customers" >/dev/null
done

for ((r = 1; r <= rounds; r++)); do
	for spec in "${tests[@]}"; do
		read -r name conns path lua <<<"$spec"
		for t in "${targets[@]}"; do
			run_wrk "$t" "$name" "$conns" "$path" "$lua" "$r"
		done
	done
done

# --- the table -------------------------------------------------------------------

table=$tmp/table.md
awk -F'\t' -v k="$clk_tck" -v order="${targets[*]}" -v pmin="$probe_min" -v pmax="$probe_max" '
function ok(c) { return c ? "met" : "NOT MET" }
# median of v[1..m], which it sorts (mawk has no asort)
function median(v, m,   i, j, x) {
	for (i = 2; i <= m; i++) { x = v[i]; for (j = i - 1; j >= 1 && v[j] > x; j--) v[j + 1] = v[j]; v[j + 1] = x }
	return m % 2 ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
}
function label(t) { return t == "sidecar" ? "dinie-auth-proxy" : t }
function testname(s, c) {
	if (s == "get") return "GET 200 B";
	if (s == "post64k") return "POST 64 KiB";
	if (s == "get1m") return "GET 1 MiB";
	return s
}
{
	key = $2 SUBSEP $3 SUBSEP $1
	if (!(key in req)) { keys[++n] = key }
	req[key] += $5; dur[key] += $6; p50[key] += $7; p90[key] += $14; p99[key] += $8; runs[key]++
	errs[key] += $9 + $10; ticks[key] += $11
	# each round on its own, for the paired ratios below
	RR[$2, $3, $1, $4] = $5 / ($6 / 1e6); RC[$2, $3, $1, $4] = $5 ? $11 / $5 : 0; RP[$2, $3, $1, $4] = $8 / 1000
	RW[$2, $3, $1, $4] = $7 ? $8 / $7 : 0
	if ($4 > maxround) maxround = $4
	if ($12 > hwm[key]) hwm[key] = $12
	if ($13 > noise[key]) noise[key] = $13
	if ($15 > 0) PR[++np] = $15 # run_wrk kept the fastest and slowest
}
END {
	print "| test | conns | target | req/s | p50 ms | p90 ms | p99 ms | CPU s / 10k req | proxy core busy | peak RSS MiB | errors | noise |"
	print "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
	for (i = 1; i <= n; i++) {
		key = keys[i]; split(key, f, SUBSEP)
		rps = req[key] / (dur[key] / 1e6)
		cpu = ticks[key] / k / req[key] * 10000
		busy = ticks[key] / k / (dur[key] / 1e6) * 100
		printf "| %s | %d | %s | %.0f | %.3f | %.3f | %.3f | %.3f | %.0f%% | %.1f | %d | %d%% |\n", testname(f[1]), f[2], label(f[3]),
			rps, p50[key] / runs[key] / 1000, p90[key] / runs[key] / 1000, p99[key] / runs[key] / 1000, cpu, busy, hwm[key] / 1024, errs[key], noise[key]
		R[f[1], f[2], f[3]] = rps; C[f[1], f[2], f[3]] = cpu; P99[f[1], f[2], f[3]] = p99[key] / runs[key] / 1000
		H[f[1], f[2], f[3]] = hwm[key] / 1024
	}
	print ""
	s = "sidecar"
	nt = split(order, ts, " ")
	for (j = 1; j <= nt; j++) if (ts[j] == s) have = 1
	if (!have) exit
	print "Ratios at 16 connections, dinie-auth-proxy / other (req/s: higher is better; CPU per request: lower is better):"
	print ""
	print "| test | vs | req/s ratio | CPU/req ratio | p99 difference ms |"
	print "| --- | --- | ---: | ---: | ---: |"
	split("get post64k get1m", tt, " ")
	for (a = 1; a <= 3; a++) for (j = 1; j <= nt; j++) {
		o = ts[j]; if (o == s || !((tt[a], 16, o) in R)) continue
		printf "| %s | %s | %.2f | %.2f | %+.3f |\n", testname(tt[a]), o, R[tt[a], 16, s] / R[tt[a], 16, o],
			C[tt[a], 16, s] / C[tt[a], 16, o], P99[tt[a], 16, s] - P99[tt[a], 16, o]
	}
	if (("get", 16, "nginx") in R) {
		rr = R["get", 16, s] / R["get", 16, "nginx"]; cr = C["get", 16, s] / C["get", 16, "nginx"]
		dp = P99["get", 16, s] - P99["get", 16, "nginx"]; m = H["get", 128, s]
		print ""
		printf "Issue 5 targets (GET, 16 connections unless said): req/s >= 0.8x nginx: %.2fx %s; CPU/req <= 1.3x nginx: %.2fx %s; p99 within 1 ms of nginx: %+.3f ms %s; peak RSS <= 40 MiB at 128 connections: %.1f MiB %s\n",
			rr, ok(rr >= 0.8), cr, ok(cr <= 1.3), dp, ok(dp <= 1), m, ok(m <= 40)
	}
	# Issue 24: every test below, against nginx; peak RSS over all tests.
	split("get 16 GET 200 B, 16 connections|get 128 GET 200 B, 128 connections|post64k 16 POST 64 KiB, 16 connections", it, "|")
	header = 0
	for (a = 1; a <= 3; a++) {
		split(it[a], w, " "); t = w[1]; c = w[2]; name = substr(it[a], length(t) + length(c) + 3)
		if (!((t, c, s) in R) || !((t, c, "nginx") in R)) continue
		if (!header) { print ""; print "Issue 24 targets (against nginx: req/s >= 0.9x, CPU/req <= 1.15x, p99 within 1 ms; peak RSS <= 40 MiB):"; print ""; header = 1 }
		rr = R[t, c, s] / R[t, c, "nginx"]; cr = C[t, c, s] / C[t, c, "nginx"]; dp = P99[t, c, s] - P99[t, c, "nginx"]
		printf "- %s: req/s %.2fx %s; CPU/req %.2fx %s; p99 %+.3f ms %s\n", name, rr, ok(rr >= 0.9), cr, ok(cr <= 1.15), dp, ok(dp <= 1)
	}
	if (header) {
		peak = 0
		for (key in H) { split(key, f, SUBSEP); if (f[3] == s && H[key] > peak) peak = H[key] }
		printf "- peak RSS, any test: %.1f MiB %s\n", peak, ok(peak <= 40)
	}
	# The same targets round by round: each round of the sidecar against
	# the nginx round run next to it, so that a machine whose speed drifts
	# between rounds moves both sides of a ratio (bench/README.md, "Paired
	# rounds").
	header = 0
	for (a = 1; a <= 3; a++) {
		split(it[a], w, " "); t = w[1]; c = w[2]; name = substr(it[a], length(t) + length(c) + 3)
		m = 0
		for (r = 1; r <= maxround; r++) {
			if (!((t, c, s, r) in RR) || !((t, c, "nginx", r) in RR) || RC[t, c, "nginx", r] == 0) continue
			m++
			vr[m] = RR[t, c, s, r] / RR[t, c, "nginx", r]; vc[m] = RC[t, c, s, r] / RC[t, c, "nginx", r]
			vp[m] = RP[t, c, s, r] - RP[t, c, "nginx", r]
			# how wide the latencies of each side spread, apart from pace: at
			# the same pace the wider has the higher p99 (bench/README.md,
			# "Later: what is left at 128 connections")
			vs[m] = RW[t, c, s, r]; vn[m] = RW[t, c, "nginx", r]
		}
		if (m < 2) continue
		spreads = spreads sprintf("- %s: dinie-auth-proxy %.2f, nginx %.2f\n", name, median(vs, m), median(vn, m))
		if (!header) { print ""; printf "Issue 24 targets, paired by round (median of the %d rounds, lowest and highest in brackets):\n", m; print ""; header = 1 }
		lr = lc = lp = 1e9; hr = hc = hp = -1e9
		for (i = 1; i <= m; i++) {
			if (vr[i] < lr) lr = vr[i]; if (vr[i] > hr) hr = vr[i]
			if (vc[i] < lc) lc = vc[i]; if (vc[i] > hc) hc = vc[i]
			if (vp[i] < lp) lp = vp[i]; if (vp[i] > hp) hp = vp[i]
		}
		rr = median(vr, m); cr = median(vc, m); dp = median(vp, m)
		printf "- %s: req/s %.2fx [%.2f, %.2f] %s; CPU/req %.2fx [%.2f, %.2f] %s; p99 %+.3f ms [%+.2f, %+.2f] %s\n", name,
			rr, lr, hr, ok(rr >= 0.9), cr, lc, hc, ok(cr <= 1.15), dp, lp, hp, ok(dp <= 1)
	}
	if (spreads) {
		print ""; printf "p99 over p50, median of the rounds (how wide the latencies spread):\n"; print ""
		printf "%s", spreads
	}
	if (np) {
		print ""
		printf "Machine speed: bench/probe, the same work on the proxy'"'"'s core before each run, took %.0f to %.0f ms (median %.0f): the slowest %.2fx the fastest.\n",
			pmin / 1000, pmax / 1000, median(PR, np) / 1000, pmax / pmin
	}
}' "$results" >"$table"

{
	echo
	echo "dinie-auth-proxy $(git -C "$root" describe --always --dirty 2>/dev/null || echo '?'), $(go version | awk '{print $3}'), $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | head -1 | awk '{print "haproxy/" $3}'), wrk $(wrk -v 2>&1 | head -1 | awk '{print $2}')"
	echo "$(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), Linux $(uname -r); ${rounds} rounds x ${duration} s per target and test, interleaved; wrk + upstream ($upstream_kind) on cpu $load_cpu, proxy on cpu $proxy_cpu${BENCH_SIDECAR_ENV:+; sidecar environment: $BENCH_SIDECAR_ENV}${BENCH_SIDECAR_ARGS:+; sidecar flags: $BENCH_SIDECAR_ARGS}"
	echo
	cat "$table"
} | tee "${BENCH_OUT:-/dev/null}"
if [ "$max_other" -gt 15 ]; then
	say "WARNING: up to ${max_other}% of a core went to other work during a run: the machine was not quiet; rerun for numbers to publish"
fi
# Slowdowns from below the guest (a neighbour on the same physical core,
# the clock) take no CPU that this machine can see: only the probe shows them.
if ((probe_min > 0 && (probe_max - probe_min) * 100 / probe_min > 25)); then
	probe_spread=$(((probe_max - probe_min) * 100 / probe_min))
	say "WARNING: the same work took up to ${probe_spread}% longer on the proxy's core before some runs than before others: the machine was not quiet; rerun for numbers to publish"
fi
say "done in $((SECONDS - started)) s"
