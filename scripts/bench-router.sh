#!/usr/bin/env bash
# Router benchmark through a real node, side by side in one run:
#   direct  wrk -> one instance of the example service
#   nginx   wrk -> nginx (weighted upstream 9:1 per instance, keep-alive,
#           as many workers as the router has threads) -> the same instances
#   gtc     wrk -> `gtc node run` (committed 90/10 split) -> the same instances
# Legs alternate within each round (rounds repeat), at 16 and 64
# connections; then one HTTP/2 leg (h2load, prior knowledge, nginx `http2`),
# a leg at about half of gtc's peak rate for the added p99, 10 000 routes
# against 10, and the idle RSS of a node. It reports requests/s, p50, p99 and
# p99.9, and CPU time per request of the proxy process (utime+stime from
# /proc/<pid>/stat before and after, all threads; nginx: master and workers).
#
# Needs nginx (with the http2 module), wrk and h2load (Debian: nginx-light,
# wrk, nghttp2-client); installs them with apt-get when they are missing.
#
# Knobs: BENCH_SECONDS (per leg, default 5), BENCH_ROUNDS (default 3),
# BENCH_CONNECTIONS (default "16 64"), GTC_BIN (a gtc binary to measure
# instead of the one built here; GTC_BIN_BEFORE adds a "gtc-before" leg
# with another binary, for before/after in one run), BENCH_SMOKE=1 (the
# CI smoke: debug build, no nginx, two seconds; fails if any request
# errors or the observed split is not 90/10 within one point),
# BENCH_BUILD=0 (use the binaries already built).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${BENCH_SECONDS:-5}
rounds=${BENCH_ROUNDS:-3}
conn_list=${BENCH_CONNECTIONS:-16 64}
smoke=${BENCH_SMOKE:-0}

need=()
command -v wrk >/dev/null || need+=(wrk)
if [ "$smoke" != 1 ]; then
  command -v nginx >/dev/null || need+=(nginx-light)
  command -v h2load >/dev/null || need+=(nghttp2-client)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

target=${CARGO_TARGET_DIR:-target}
build=${BENCH_BUILD:-1}
if [ "$smoke" = 1 ]; then
  [ "$build" = 0 ] || cargo build --quiet --bin gtc --bin demo-service
  bin=$target/debug
  seconds=2; rounds=1; conn_list=16
else
  [ "$build" = 0 ] || cargo build --release --quiet --bin gtc --bin demo-service
  bin=$target/release
fi
gtc=${GTC_BIN:-$bin/gtc}
gtc_before=${GTC_BIN_BEFORE:-}

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "bench-router: $*" >&2; exit 1; }
json() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; fail "port $1 never opened"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# CPU ticks (utime+stime) of a process and its children processes.
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo "$t"; }
hz=$(getconf CLK_TCK)

# A node on a fresh store, started the way a user starts one.
start_node() { # <binary> <home> -> sets node_pid, node_listen, node_admin
  local binary=$1 home=$2
  GREENTIC_HOME=$home "$binary" op env init >/dev/null
  GREENTIC_HOME=$home "$binary" node run --listen 127.0.0.1:0 --admin 127.0.0.1:0 >"$home.out" 2>"$home.err" &
  node_pid=$!; pids+=("$node_pid")
  for _ in $(seq 100); do [ -s "$home.out" ] && break; kill -0 "$node_pid" || fail "node exited: $(tail -3 "$home.err")"; sleep 0.1; done
  node_listen=$(json '["listen"]' <"$home.out")
  node_admin=$(json '["admin"]' <"$home.out")
}

# The example bundles: the measured one with two instances per revision,
# the others (routes only) with one.
bundle() { # <bundle id> <instances> -> $work/<bundle id>.gtbundle
  mkdir -p "$work/$1/bin" "$work/$1/packs"
  cp "$bin/demo-service" "$work/$1/bin/server"
  cat >"$work/$1/bundle.yaml" <<YAML
schema_version: 1
bundle_id: $1
runtime:
  command: [bin/server]
  health_path: /healthz
  startup_timeout_seconds: 20
  instances: $2
YAML
  printf 'PK\005\006\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000' >"$work/$1/packs/app.gtpack"
  "$gtc" bundle build "$work/$1" -o "$work/$1.gtbundle" >/dev/null
}
bundle bench 2
for d in 1 2 3 4; do bundle "other$d" 1; done

# Deploys <bundle id> with <binding> (JSON) as <n> revisions on the node at
# <home>, waits for them to be ready and splits 90/10 (or 100 for one).
deploy() { # <binary> <home> <bundle id> <binding> <n> -> sets v1 (and v2)
  local binary=$1 home=$2 id=$3 binding=$4 n=$5 deployment revisions=() ready=0 entries
  echo "{\"environment_id\":\"local\",\"bundle_id\":\"$id\",\"route_binding\":$binding}" >"$work/bundle.json"
  deployment=$(GREENTIC_HOME=$home "$binary" op bundles add --answers "$work/bundle.json" | json '["result"]["deployment_id"]')
  echo "{\"environment_id\":\"local\",\"deployment_id\":\"$deployment\",\"bundle_path\":\"$work/$id.gtbundle\"}" >"$work/stage.json"
  for _ in $(seq "$n"); do
    revisions+=("$(GREENTIC_HOME=$home "$binary" op revisions stage --answers "$work/stage.json" | json '["result"]["revision_id"]')")
  done
  for revision in "${revisions[@]}"; do
    echo "{\"environment_id\":\"local\",\"revision_id\":\"$revision\"}" >"$work/warm.json"
    GREENTIC_HOME=$home "$binary" op revisions warm --answers "$work/warm.json" >/dev/null
  done
  for _ in $(seq 300); do
    ready=$(GREENTIC_HOME=$home "$binary" op revisions list local --deployment "$deployment" |
      json '["result"]["revisions"]' | { grep -o "'lifecycle': 'ready'" || true; } | wc -l)
    [ "$ready" -ge "$n" ] && break
    sleep 0.2
  done
  [ "$ready" -ge "$n" ] || fail "revisions of $id never became ready"
  v1=${revisions[0]}; v2=${revisions[1]:-}
  if [ "$n" = 2 ]; then
    entries="{\"revision_id\":\"$v1\",\"weight_percent\":90},{\"revision_id\":\"$v2\",\"weight_percent\":10}"
  else
    entries="{\"revision_id\":\"$v1\",\"weight_percent\":100}"
  fi
  echo "{\"environment_id\":\"local\",\"deployment_id\":\"$deployment\",\"idempotency_key\":\"bench-$deployment\",\"entries\":[$entries]}" >"$work/split.json"
  GREENTIC_HOME=$home "$binary" op traffic set --answers "$work/split.json" >/dev/null
}
# Route bindings of the other deployment: <hosts> x <prefixes> routes.
binding() { python3 -c 'import json,sys; d,h,p=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]); print(json.dumps({"hosts":[f"h{i}.d{d}.bench.example" for i in range(h)],"path_prefixes":[f"/p{j}" for j in range(p)]}))' "$1" "$2" "$3"; }
# A node with the bench deployment (any host, `/`, 90/10) and <n> other
# deployments with <hosts> x <prefixes> routes each, all ahead of it in the
# table (exact hosts rank before any host). A deployment takes at most 64
# hosts and 64 prefixes.
bench_node() { # <binary> <home> <n> <hosts> <prefixes> -> node_pid node_listen v1 v2
  start_node "$1" "$2"
  local pid=$node_pid listen=$node_listen d
  for d in $(seq "$3"); do deploy "$1" "$2" "other$d" "$(binding "$d" "$4" "$5")" 1; done
  deploy "$1" "$2" bench '{}' 2
  node_pid=$pid; node_listen=$listen
  wait_split "$node_listen"
}

# Waits until the router at <addr> serves both revisions (the split is live).
wait_split() { # <addr> [host]
  local addr=$1 host=${2:-localhost} seen
  for _ in $(seq 200); do
    seen=$(for _ in $(seq 20); do curl -s -o /dev/null -D - -H "Host: $host" "http://$addr/" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-greentic-revision" {print $2}'; done | sort -u | wc -l)
    [ "$seen" -ge 2 ] && return 0
    sleep 0.1
  done
  fail "the router at $addr never served both revisions"
}

# The instances the node runs: listening ports of its child processes, by
# the revision each one reports (x-served-by).
instances_of() { # <node pid> -> lines "<port> <revision>"
  local children port
  children=$(pgrep -P "$1" | paste -sd'|')
  [ -n "$children" ] || fail "the node runs no instance"
  ss -ltnpH | grep -E "pid=($children)," | awk '{print $4}' | sed 's/.*://' | sort -u | while read -r port; do
    echo "$port $(curl -s -o /dev/null -D - "http://127.0.0.1:$port/" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-served-by" {print $2}')"
  done
}

# wrk's Lua hooks: percentiles in microseconds, errors, and (for the smoke)
# the revision of every response.
cat >"$work/report.lua" <<'LUA'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) served = {} end
function response(status, headers, body)
  local r = headers["x-greentic-revision"] or headers["X-Greentic-Revision"] or "-"
  served[r] = (served[r] or 0) + 1
end
function done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout + e.status
  local counts = {}
  for _, t in ipairs(threads) do
    local s = t:get("served")
    for k, v in pairs(s) do counts[k] = (counts[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(counts) do table.insert(parts, k .. "=" .. v) end
  io.write(string.format("RESULT %d %.3f %d %d %d %d %s\n", summary.requests, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), errors, table.concat(parts, ",")))
end
LUA
# The same without the per-response hook (it costs wrk CPU on every response).
sed '/^function response/,/^end/d' "$work/report.lua" >"$work/fast.lua"
sed 's/^function init(args) served = {} end/function init(args) served = {} end\nfunction delay() return 4 end/' "$work/fast.lua" >"$work/paced.lua"

# One wrk run: prints "rps p50_us p99_us p999_us errors cpu_us_per_request served".
run_wrk() { # <addr> <connections> <seconds> <lua> <host> <pids of the proxy...>
  local addr=$1 c=$2 s=$3 lua=$4 host=$5; shift 5
  local before after out
  before=$(ticks "$@")
  out=$(wrk -t2 -c"$c" -d"${s}s" -H "Host: $host" -s "$lua" "http://$addr/" 2>&1) || fail "wrk failed: $out"
  after=$(ticks "$@")
  echo "$out" | awk -v cpu=$((after - before)) -v hz="$hz" '/^RESULT/ {
    rps = $2 / $3; cpu_us = (cpu / hz) * 1e6 / ($2 > 0 ? $2 : 1);
    printf "%.0f %d %d %d %d %.1f %s\n", rps, $4, $5, $6, $7, cpu_us, ($8 == "" ? "-" : $8) }'
}

# The node under test, with its committed split.
# The node under test: 10 routes (the bench deployment's and 9 others).
bench_node "$gtc" "$work/home" 1 3 3
router=$node_listen
gtc_pid=$node_pid
mapfile -t inst < <(instances_of "$gtc_pid")
[ ${#inst[@]} -ge 4 ] || fail "expected 4 instances, found: ${inst[*]}"
direct=""
upstreams=""
for line in "${inst[@]}"; do
  read -r port revision <<<"$line"
  [ "$revision" = "$v1" ] || [ "$revision" = "$v2" ] || continue
  [ "$revision" = "$v1" ] && [ -z "$direct" ] && direct=127.0.0.1:$port
  weight=1; [ "$revision" = "$v1" ] && weight=9
  upstreams="$upstreams server 127.0.0.1:$port weight=$weight;"
done
[ -n "$direct" ] || fail "no instance reports revision $v1"
threads=$(awk '/^Threads/ {print $2}' "/proc/$gtc_pid/status")

if [ "$smoke" = 1 ]; then
  # CI smoke: the real node under wrk for a few seconds; any error, any
  # non-2xx answer or a lost split fails, the speed does not.
  read -r rps p50 p99 p999 errors cpu served < <(run_wrk "$router" 16 "$seconds" "$work/report.lua" localhost "$gtc_pid")
  echo "smoke: $rps req/s, p99 ${p99} us, errors $errors, served $served"
  [ "$errors" = 0 ] || fail "the router answered $errors requests with an error"
  python3 - "$served" "$v1" "$v2" <<'PY' || fail "the split was not kept"
import sys
counts = dict(kv.split("=") for kv in sys.argv[1].split(","))
a, b = int(counts.get(sys.argv[2], 0)), int(counts.get(sys.argv[3], 0))
other = sum(int(v) for k, v in counts.items() if k not in sys.argv[2:4])
share = 100 * a / max(a + b, 1)
print(f"smoke: {a} + {b} requests, {share:.2f}% on v1 (90 expected), {other} unattributed")
sys.exit(0 if a + b > 100 and other == 0 and abs(share - 90) <= 1.0 else 1)
PY
  echo "smoke: ok"
  exit 0
fi

# A second node binary for before/after in the same run (its own store and
# instances, the same bundle and split).
if [ -n "$gtc_before" ]; then
  bench_node "$gtc_before" "$work/before" 1 3 3
  before_pid=$node_pid
  router_before=$node_listen
fi

# nginx: weights 9:1 per instance, upstream keep-alive, workers = router threads.
workers=$(nproc)
port_nginx=$(free_port); port_nginx_h2=$(free_port)
cat >"$work/nginx.conf" <<NGINX
worker_processes $workers;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  # nginx closes a keep-alive (and HTTP/2) connection after 1000 requests
  # by default; the router does not, so neither does nginx here.
  keepalive_requests 100000000;
  upstream instances { $upstreams keepalive 128; keepalive_requests 100000000; }
  server {
    listen 127.0.0.1:$port_nginx;
    listen 127.0.0.1:$port_nginx_h2 http2;
    location / { proxy_pass http://instances; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGINX
nginx -c "$work/nginx.conf" -g 'daemon off;' & nginx_pid=$!; pids+=("$nginx_pid")
wait_port "$port_nginx"
nginx_pids() { echo "$nginx_pid $(pgrep -P "$nginx_pid" | tr '\n' ' ')"; }

legs=(direct nginx gtc)
[ -n "$gtc_before" ] && legs+=(gtc-before)
leg_addr() { case $1 in direct) echo "$direct" ;; nginx) echo "127.0.0.1:$port_nginx" ;; gtc) echo "$router" ;; gtc-before) echo "$router_before" ;; esac; }
leg_pids() { case $1 in direct) echo "" ;; nginx) nginx_pids ;; gtc) echo "$gtc_pid" ;; gtc-before) echo "$before_pid" ;; esac; }

for leg in "${legs[@]}"; do wrk -t1 -c4 -d1s "http://$(leg_addr "$leg")/" >/dev/null; done

# BENCH_SYSCALLS=1: system calls per request of nginx and gtc under the
# same load (strace -c -f on the proxy's processes; strace slows both, so
# only the counts matter), then stop.
if [ "${BENCH_SYSCALLS:-0}" = 1 ]; then
  command -v strace >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null; }
  for leg in nginx gtc; do
    args=(); for p in $(leg_pids "$leg"); do args+=(-p "$p"); done
    strace -f -c -o "$work/strace-$leg" "${args[@]}" 2>/dev/null & tracer=$!
    sleep 1
    requests=$(wrk -t2 -c16 -d3s -s "$work/fast.lua" "http://$(leg_addr "$leg")/" | awk '/^RESULT/ {print $2}')
    kill -INT "$tracer"; wait "$tracer" || true
    echo "== $leg: system calls per request ($requests requests, wrk -c16 -d3s under strace)"
    awk -v n="$requests" '$4 ~ /^[0-9]+$/ && NF >= 5 && $NF != "total" { name = $NF; calls = $4; if (calls / n >= 0.01) printf "  %-16s %6.2f\n", name, calls / n; total += calls }
      END { printf "  %-16s %6.2f\n", "total", total / n }' "$work/strace-$leg"
  done
  exit 0
fi
results=$work/results
: >"$results"
for c in $conn_list; do
  for round in $(seq "$rounds"); do
    for leg in "${legs[@]}"; do
      # shellcheck disable=SC2046
      echo "$c $round $leg $(run_wrk "$(leg_addr "$leg")" "$c" "$seconds" "$work/fast.lua" localhost $(leg_pids "$leg"))" >>"$results"
    done
  done
done

# HTTP/2 with prior knowledge: nginx `http2` listener against gtc.
h2() { # <addr> <pids...> -> "rps cpu_us_per_request"
  local addr=$1; shift
  local before after out
  before=$(ticks "$@")
  out=$(h2load -c16 -m10 -t2 -D"$seconds" "http://$addr/" 2>&1)
  after=$(ticks "$@")
  local done_ rps
  done_=$(echo "$out" | awk '/^requests:/ {print $8}')
  rps=$(echo "$out" | awk '/^finished in/ {gsub(",","",$4); print $4}')
  echo "$rps $(python3 -c "print(f'{($after-$before)/$hz*1e6/max($done_,1):.1f}')") $(echo "$out" | awk '/^requests:/ {print $10}')"
}
wait_port "$port_nginx_h2"
for round in $(seq "$rounds"); do
  # shellcheck disable=SC2046
  echo "h2 $round nginx $(h2 "127.0.0.1:$port_nginx_h2" $(nginx_pids))" >>"$results"
  echo "h2 $round gtc $(h2 "$router" "$gtc_pid")" >>"$results"
done

# Added p99 at about half of gtc's peak: each connection sends a request,
# waits for the answer, pauses 4 ms; the connections are chosen so the
# offered rate is about half the best 16-connection rate gtc reached.
peak=$(awk '$1==16 && $3=="gtc" {if ($4>m) m=$4} END {print m+0}' "$results")
half_c=$(python3 -c "print(max(2, round($peak / 2 * 0.0045)))")
for round in $(seq "$rounds"); do
  for leg in direct gtc nginx; do
    # shellcheck disable=SC2046
    echo "half $round $leg $(run_wrk "$(leg_addr "$leg")" "$half_c" "$seconds" "$work/paced.lua" localhost $(leg_pids "$leg"))" >>"$results"
  done
done

# 10 000 routes against 10: a second node whose 4 other deployments claim
# 50 hosts x 50 path prefixes each, all ranked ahead of the bench route
# (any host), alternating with the 10-route node.
bench_node "$gtc" "$work/many" 4 50 50
many_pid=$node_pid
router_many=$node_listen
for round in $(seq "$rounds"); do
  echo "routes $round gtc-10 $(run_wrk "$router" 16 "$seconds" "$work/fast.lua" localhost "$gtc_pid")" >>"$results"
  echo "routes $round gtc-10k $(run_wrk "$router_many" 16 "$seconds" "$work/fast.lua" localhost "$many_pid")" >>"$results"
done

# Idle RSS of a node with nothing deployed.
start_node "$gtc" "$work/idle"
sleep 3
idle_rss=$(awk '/VmRSS/ {print $2}' "/proc/$node_pid/status")
idle_rss_before=0
if [ -n "$gtc_before" ]; then
  start_node "$gtc_before" "$work/idle-before"
  sleep 3
  idle_rss_before=$(awk '/VmRSS/ {print $2}' "/proc/$node_pid/status")
fi

cat "$results" >&2
python3 - "$results" "$threads" "$workers" "$idle_rss" "$idle_rss_before" <<'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
def med(kind, leg, col):
    vals = [float(r[col]) for r in rows if r[0] == kind and r[2] == leg and len(r) > col and r[col] not in ("-", "")]
    return st.median(vals) if vals else float("nan")
print(f"gtc node: {sys.argv[2]} threads; nginx: {sys.argv[3]} workers")
print("| connections | leg | requests/s | p50 us | p99 us | p99.9 us | CPU us/request | errors |")
print("|---|---|---|---|---|---|---|---|")
kinds = sorted({r[0] for r in rows if r[0].isdigit()}, key=int)
for kind in kinds:
    for leg in sorted({r[2] for r in rows if r[0] == kind}, key=["direct", "nginx", "gtc", "gtc-before"].index):
        print(f"| {kind} | {leg} | {med(kind, leg, 3):.0f} | {med(kind, leg, 4):.0f} | {med(kind, leg, 5):.0f} | {med(kind, leg, 6):.0f} | {med(kind, leg, 8):.1f} | {med(kind, leg, 7):.0f} |")
for kind in kinds:
    ratios = [float(g[3]) / float(n[3]) for g in rows for n in rows
              if g[0] == n[0] == kind and g[1] == n[1] and g[2] == "gtc" and n[2] == "nginx"]
    print(f"{kind} connections: gtc/nginx throughput per round {', '.join(f'{r:.2f}' for r in ratios)} (target >= 1.1); "
          f"CPU/request gtc {med(kind, 'gtc', 8):.1f} us vs nginx {med(kind, 'nginx', 8):.1f} us (target <=)")
    if any(r[2] == "gtc-before" for r in rows):
        before = [float(g[3]) / float(b[3]) for g in rows for b in rows
                  if g[0] == b[0] == kind and g[1] == b[1] and g[2] == "gtc" and b[2] == "gtc-before"]
        print(f"{kind} connections: gtc/gtc-before per round {', '.join(f'{r:.2f}' for r in before)}")
print(f"HTTP/2 (h2load -c16 -m10): gtc {med('h2', 'gtc', 3):.0f} req/s, {med('h2', 'gtc', 4):.1f} us CPU/request; "
      f"nginx {med('h2', 'nginx', 3):.0f} req/s, {med('h2', 'nginx', 4):.1f} us CPU/request")
print(f"half of gtc's peak: gtc {med('half', 'gtc', 3):.0f} req/s, p99 {med('half', 'gtc', 5):.0f} us, "
      f"direct p99 {med('half', 'direct', 5):.0f} us: added {med('half', 'gtc', 5) - med('half', 'direct', 5):.0f} us (target <= 200); "
      f"nginx p99 {med('half', 'nginx', 5):.0f} us")
print(f"10 000 routes: {med('routes', 'gtc-10k', 3):.0f} req/s vs 10 routes {med('routes', 'gtc-10', 3):.0f}: "
      f"{med('routes', 'gtc-10k', 3) / med('routes', 'gtc-10', 3):.2f}x (target >= 0.95)")
print(f"idle node RSS: {int(sys.argv[4]) / 1024:.1f} MiB (target < 40 MiB)"
      + (f"; gtc-before {int(sys.argv[5]) / 1024:.1f} MiB" if int(sys.argv[5]) else ""))
print(f"(wrk -t2, BENCH_SECONDS per leg, median of rounds; one {__import__('os').cpu_count()}-core machine)")
PY
