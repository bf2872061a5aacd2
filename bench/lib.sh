# bench/lib.sh: the process handling bench/run.sh and bench/tunnel.sh share.
# Sourced once they have set tmp (a directory removed at exit), next_port
# (the first port to try) and say and die.
# shellcheck shell=bash
# tmp and next_port are the caller's; out is free_port's nameref.
# shellcheck disable=SC2154,SC2034
declare -a started_pids=()

cleanup() {
	local pid i
	trap - EXIT INT TERM
	for pid in "${started_pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${started_pids[@]}"; do
		for ((i = 0; i < 30; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		# nginx's workers go with their master; anything left is killed.
		pkill -KILL -P "$pid" 2>/dev/null || true
		kill -KILL "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	if [ -n "${BENCH_KEEP:-}" ]; then
		say "kept $tmp"
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT
trap 'say interrupted; exit 130' INT TERM

# free_port prints the next port from next_port on that nothing listens on.
# It runs in the main shell (no $(...)) so next_port advances.
free_port() {
	local -n out=$1
	while (: <"/dev/tcp/127.0.0.1/$next_port") 2>/dev/null; do
		next_port=$((next_port + 1))
	done
	out=$next_port
	next_port=$((next_port + 1))
}

# wait_port PORT PID NAME: until something accepts on PORT, for 15 s.
wait_port() {
	local i
	for ((i = 0; i < 150; i++)); do
		kill -0 "$2" 2>/dev/null || die "$3 exited at start; see $tmp/$3.log"
		if (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	die "$3 did not listen on $1 within 15 s"
}

# build_proxy OUT: dinie-auth-proxy without cgo, as the Dockerfile builds it
# (a cgo build maps libc and its loader: 1.4 MiB more RSS than what
# ships), but with its symbols, for perf and callgrind.
build_proxy() {
	CGO_ENABLED=0 go build -o "$1" .
}

# cpu_ticks PID...: utime + stime (fields 14 and 15 of /proc/PID/stat) summed.
# The command name (field 2) may hold spaces, so fields count after its ')'.
cpu_ticks() {
	local pid stat rest sum=0
	for pid in "$@"; do
		stat=$(cat "/proc/$pid/stat") || continue
		rest=${stat##*) }
		read -ra f <<<"$rest"
		sum=$((sum + f[11] + f[12]))
	done
	echo "$sum"
}
