#!/usr/bin/env bash
# Router benchmark, side by side in one run on this machine:
#   direct   wrk -> one example-service instance
#   router   wrk -> our router (90/10 split) -> two example-service instances
#   nginx    wrk -> nginx (weighted upstream 9:1) -> the same two instances
# Then the idle RSS of `gtc node run`. Installs nginx and wrk from the
# distribution's packages if they are missing. Results go to stdout as a
# Markdown table; copy them into BENCHMARKS.md.
#
# Knobs: BENCH_SECONDS (default 10), BENCH_CONNECTIONS (default 32).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${BENCH_SECONDS:-10}
connections=${BENCH_CONNECTIONS:-32}

if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk >/dev/null
fi
cargo build --release --quiet --bin gtc --bin demo-service
cargo build --release --quiet -p router --example bench_proxy
gtc=target/release/gtc

work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; return 1; }

# The committed state: one deployment, two ready revisions, a 90/10 split.
export GREENTIC_HOME="$work/home"
json() { python3 -c 'import json,sys; print(json.load(sys.stdin)["result"][sys.argv[1]])' "$1"; }
$gtc op env init >/dev/null
echo '{"environment_id":"local","bundle_id":"bench"}' > "$work/bundle.json"
deployment=$($gtc op bundles add --answers "$work/bundle.json" | json deployment_id)
echo "{\"environment_id\":\"local\",\"deployment_id\":\"$deployment\"}" > "$work/stage.json"
v1=$($gtc op revisions stage --answers "$work/stage.json" | json revision_id)
v2=$($gtc op revisions stage --answers "$work/stage.json" | json revision_id)
for revision in "$v1" "$v2"; do
  echo "{\"environment_id\":\"local\",\"revision_id\":\"$revision\"}" > "$work/warm.json"
  $gtc op revisions warm --answers "$work/warm.json" >/dev/null
done
echo "{\"environment_id\":\"local\",\"deployment_id\":\"$deployment\",\"idempotency_key\":\"bench\",\"entries\":[{\"revision_id\":\"$v1\",\"weight_percent\":90},{\"revision_id\":\"$v2\",\"weight_percent\":10}]}" > "$work/split.json"
$gtc op traffic set --answers "$work/split.json" >/dev/null

# Two instances of the example service.
port_a=$(free_port); port_b=$(free_port)
PORT=$port_a GREENTIC_REVISION=$v1 target/release/demo-service >/dev/null 2>&1 & pids+=($!)
PORT=$port_b GREENTIC_REVISION=$v2 target/release/demo-service >/dev/null 2>&1 & pids+=($!)
wait_port "$port_a"; wait_port "$port_b"

# Our router.
port_router=$(free_port)
target/release/examples/bench_proxy "$GREENTIC_HOME/environments/local/environment.json" "127.0.0.1:$port_router" \
  "$v1=127.0.0.1:$port_a" "$v2=127.0.0.1:$port_b" >/dev/null 2>&1 & pids+=($!)
wait_port "$port_router"

# nginx with the same weights and keep-alive to the same instances.
port_nginx=$(free_port)
cat > "$work/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  upstream instances { server 127.0.0.1:$port_a weight=9; server 127.0.0.1:$port_b weight=1; keepalive 64; }
  server {
    listen 127.0.0.1:$port_nginx;
    location / { proxy_pass http://instances; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGINX
nginx -c "$work/nginx.conf" -g 'daemon off;' & pids+=($!)
wait_port "$port_nginx"

# wrk prints "Requests/sec: N" and, with --latency, the 50% and 99% lines.
measure() {
  local out
  out=$(wrk -t2 -c"$connections" -d"${seconds}s" --latency "http://127.0.0.1:$1/")
  local rps p50 p99
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  echo "$rps $p50 $p99"
}
to_ms() { python3 -c 'import sys,re; v=sys.argv[1]; m=re.match(r"([0-9.]+)(us|ms|s)",v); f={"us":0.001,"ms":1,"s":1000}[m.group(2)]; print(f"{float(m.group(1))*f:.3f}")' "$1"; }

for port in "$port_router"; do wrk -t1 -c4 -d1s "http://127.0.0.1:$port/" >/dev/null; done
rp=$(pgrep -f examples/bench_proxy | head -1)
wrk -t2 -c16 -d12s "http://127.0.0.1:$port_router/" > /tmp/prof-wrk.txt &
sleep 1
perf record -e cpu-clock -F 1999 -g -p $rp -o /tmp/perf.data -- sleep 8 2>/tmp/perf-rec.txt
wait
cat /tmp/prof-wrk.txt | grep Requests
