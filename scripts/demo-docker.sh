#!/usr/bin/env bash
# The main demo with containers: revisions run on the local Docker engine
# through the Docker deployer (`greentic.deployer.docker@0.1.0`) instead of
# as local processes. It
#   - builds gtc (release) and a static example service (musl, else static
#     glibc; reuses target/image-service/demo-service from scripts/image.sh),
#     and an image `FROM scratch` around it (gtc-demo-service:demo);
#   - in a throwaway GREENTIC_HOME binds the environment's deployer slot to
#     the Docker deployer, builds two bundles whose runtime names that image
#     (reference + digest; DEMO_VERSION v1 / v2, two instances each), starts
#     a node, stages and warms both and prints each one's warm → ready time;
#   - splits 90/10, runs a load generator (wrk, else a curl loop) while the
#     split shifts to 0/100, and prints requests answered and failed (must be
#     0, else exit 1) and the share each revision served, per split;
#   - shows the containers with their labels, drains and archives v1 (its
#     containers go), stops the node with SIGTERM (no container is left).
# Needs a running Docker engine; no registry (the image is built locally).
# `--keep` keeps the home directory and the image. Knobs: DEMO_SECONDS
# (load, default 6), DEMO_BUILD=0 (use the binaries already built),
# DEMO_LOADER=curl (the curl loop even where wrk is installed).
set -euo pipefail
cd "$(dirname "$0")/.."

keep=0
for arg in "$@"; do
  case $arg in
    --keep) keep=1 ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo-docker: unknown argument $arg (only --keep)" >&2; exit 2 ;;
  esac
done
seconds=${DEMO_SECONDS:-6}
build=${DEMO_BUILD:-1}
tag=gtc-demo-service:demo

fail() { echo "demo-docker: $*" >&2; exit 1; }
json() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }
now_ms() { date +%s%3N; }

command -v docker >/dev/null ||
  fail "docker is not installed: this demo runs revisions as Docker containers (Debian: apt-get install docker.io)"
engine=$(docker version --format '{{.Server.Version}}' 2>&1) ||
  fail "the Docker engine does not answer (is it running? is /var/run/docker.sock, or DOCKER_HOST, reachable by this user?): $(echo "$engine" | sed '/^$/d')"
command -v python3 >/dev/null || fail "python3 is needed to read gtc's JSON answers"
command -v curl >/dev/null || fail "curl is needed to reach the router"
echo "Docker engine $engine"

# --- Build: gtc, and a static example service (the image has no libc).
target_dir=${CARGO_TARGET_DIR:-target}
[ "$build" = 0 ] || cargo build --release --quiet --bin gtc
gtc=$target_dir/release/gtc
[ -x "$gtc" ] || fail "$gtc is missing (run without DEMO_BUILD=0)"
if [ -x target/image-service/demo-service ]; then
  service=target/image-service/demo-service
else
  musl=x86_64-unknown-linux-musl
  if ! rustup target list --installed 2>/dev/null | grep -q "^$musl$"; then
    rustup target add "$musl" >/dev/null 2>&1 || musl=""
  fi
  if [ -n "$musl" ] && ! command -v x86_64-linux-musl-gcc >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools) >/dev/null 2>&1 || musl=""
  fi
  if [ -n "$musl" ]; then
    [ "$build" = 0 ] || cargo build --release --quiet --locked --target "$musl" --bin demo-service
    service=$target_dir/$musl/release/demo-service
  else
    echo "musl is not available here; building a static glibc demo-service instead" >&2
    [ "$build" = 0 ] || RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --quiet --locked \
      --target x86_64-unknown-linux-gnu --bin demo-service
    service=$target_dir/x86_64-unknown-linux-gnu/release/demo-service
  fi
fi
[ -x "$service" ] || fail "$service is missing (run without DEMO_BUILD=0)"

work=$(mktemp -d)
home=$work/home
node_pid=""
revisions=()
cleanup() {
  local status=$? revision
  if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
    kill -TERM "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
  fi
  # After a failure, whatever containers of these revisions are left.
  for revision in "${revisions[@]}"; do
    docker ps -aq --filter "label=greentic.revision=$revision" | xargs -r docker rm -f >/dev/null 2>&1 || true
  done
  if [ "$keep" = 1 ]; then
    echo "kept: GREENTIC_HOME=$home and the image $tag"
  else
    docker rmi -f "$tag" >/dev/null 2>&1 || true
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT
op() { GREENTIC_HOME=$home "$gtc" op "$@"; }
answers() { # <name> <json> -> the path of an answers file
  printf '%s\n' "$2" >"$work/$1.json"
  echo "$work/$1.json"
}
containers() { docker ps -aq --filter "label=greentic.revision=$1" | wc -l; }

# --- The image: FROM scratch + the static service, pinned by its id.
mkdir -p "$work/image"
cp "$service" "$work/image/demo-service"
printf 'FROM scratch\nCOPY demo-service /demo-service\nENTRYPOINT ["/demo-service"]\n' >"$work/image/Dockerfile"
docker build --quiet -t "$tag" "$work/image" >/dev/null 2>"$work/build.err" ||
  fail "docker build of $tag failed: $(cat "$work/build.err")"
digest=$(docker image inspect --format '{{.Id}}' "$tag")
echo "image $tag: $digest ($(( $(docker image inspect --format '{{.Size}}' "$tag") / 1024 )) KiB, FROM scratch)"

# --- The environment, bound to the Docker deployer, and one deployment.
op env init >/dev/null
op env-packs update --answers "$(answers deployer \
  '{"environment_id":"local","slot":"deployer","kind":"greentic.deployer.docker@0.1.0"}')" >/dev/null
echo "environment local: deployer slot bound to greentic.deployer.docker@0.1.0"
deployment=$(op bundles add --answers "$(answers bundle '{"environment_id":"local","bundle_id":"shop"}')" |
  json '["result"]["deployment_id"]')

# Two bundles of the same image, told apart by DEMO_VERSION.
for version in v1 v2; do
  mkdir -p "$work/src-$version/packs"
  cat >"$work/src-$version/bundle.yaml" <<YAML
schema_version: 1
bundle_id: shop
runtime:
  command: [/demo-service]
  health_path: /healthz
  startup_timeout_seconds: 20
  instances: 2
  env:
    DEMO_VERSION: "$version"
  image:
    reference: $tag
    digest: "$digest"
YAML
  # An empty ZIP archive as the bundle's one pack.
  printf 'PK\005\006\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000' >"$work/src-$version/packs/app.gtpack"
  GREENTIC_HOME=$home "$gtc" bundle build "$work/src-$version" -o "$work/$version.gtbundle" >/dev/null
done

# --- A node; its first line announces the addresses it listens on.
GREENTIC_HOME=$home "$gtc" node run --listen 127.0.0.1:0 --admin 127.0.0.1:0 --poll-ms 50 \
  >"$work/node.out" 2>"$work/node.err" &
node_pid=$!
for _ in $(seq 100); do
  [ -s "$work/node.out" ] && break
  kill -0 "$node_pid" 2>/dev/null || fail "the node exited: $(tail -5 "$work/node.err")"
  sleep 0.1
done
listen=$(head -1 "$work/node.out" | json '["listen"]')
admin=$(head -1 "$work/node.out" | json '["admin"]')
echo "node: traffic on $listen, admin on $admin"

# --- Stage and warm both; time each one's warm → ready.
declare -A warmed ready_ms name
for version in v1 v2; do
  revision=$(op revisions stage --answers "$(answers "stage-$version" \
    "{\"environment_id\":\"local\",\"deployment_id\":\"$deployment\",\"bundle_path\":\"$work/$version.gtbundle\"}")" |
    json '["result"]["revision_id"]')
  revisions+=("$revision")
  name[$revision]=$version
done
v1=${revisions[0]}; v2=${revisions[1]}
for revision in "${revisions[@]}"; do
  warmed[$revision]=$(now_ms)
  op revisions warm --answers "$(answers "warm-${name[$revision]}" \
    "{\"environment_id\":\"local\",\"revision_id\":\"$revision\"}")" >/dev/null
done
deadline=$(( $(now_ms) + 90000 ))
while :; do
  listed=$(op revisions list local)
  for revision in "${revisions[@]}"; do
    [ -z "${ready_ms[$revision]:-}" ] || continue
    state=$(echo "$listed" | python3 -c 'import json,sys
for r in json.load(sys.stdin)["result"]["revisions"]:
    if r["revision_id"] == sys.argv[1]: print(r["lifecycle"])' "$revision")
    case $state in
      ready) ready_ms[$revision]=$(( $(now_ms) - ${warmed[$revision]} )) ;;
      failed) fail "revision ${name[$revision]} failed to warm: $(echo "$listed" | tr -d '\n' | cut -c1-800)" ;;
    esac
  done
  [ -n "${ready_ms[$v1]:-}" ] && [ -n "${ready_ms[$v2]:-}" ] && break
  [ "$(now_ms)" -lt "$deadline" ] || fail "the revisions were not ready within 90 s: $(tail -5 "$work/node.err")"
  sleep 0.05
done
for revision in "${revisions[@]}"; do
  count=$(containers "$revision")
  echo "${name[$revision]} ($revision): warm -> ready in ${ready_ms[$revision]} ms, $count containers"
  [ "$count" = 2 ] || fail "expected 2 containers of ${name[$revision]}, found $count"
done

# --- Traffic: 90/10, then 0/100 under load.
# The answers of `traffic set` (their JSON Schema: `gtc op traffic set
# --schema`); a retried set with the same idempotency_key applies once.
split() { # <key> <entries> -> the committed generation
  local file
  file=$(answers "$1" \
    "{\"environment_id\":\"local\",\"deployment_id\":\"$deployment\",\"idempotency_key\":\"$1\",\"entries\":$2}")
  echo "gtc op traffic set --answers: $(cat "$file")" >&2
  op traffic set --answers "$file" | json '["generation"]'
}
echo
wait_generation() { # <generation>: until the router answers under it
  local g
  for _ in $(seq 200); do
    g=$(curl -s -o /dev/null -D - -H 'Host: shop.test' "http://$listen/" | tr -d '\r' |
      awk -F': ' 'tolower($1)=="x-greentic-generation" {print $2}')
    [ -n "$g" ] && [ "$g" -ge "$1" ] && return 0
    sleep 0.05
  done
  fail "the router never served generation $1"
}
g1=$(split ninety-ten "[{\"revision_id\":\"$v1\",\"weight_percent\":90},{\"revision_id\":\"$v2\",\"weight_percent\":10}]")
wait_generation "$g1"
echo "split 90/10 (generation $g1): v1 $v1, v2 $v2"

# Each answer is counted under "<generation> <revision>" (the router's
# x-greentic-generation and x-greentic-revision headers); a non-2xx answer
# or a connection error counts as failed.
shift_at=$(( seconds / 2 ))
if [ "${DEMO_LOADER:-wrk}" = wrk ] && command -v wrk >/dev/null; then
  loader="wrk (2 threads, 16 connections, ${seconds} s)"
  cat >"$work/count.lua" <<'LUA'
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) served = {}; bad = 0 end
function response(status, headers, body)
  if status < 200 or status > 299 then bad = bad + 1; return end
  local k = (headers["x-greentic-generation"] or headers["X-Greentic-Generation"] or "-") .. " " ..
    (headers["x-greentic-revision"] or headers["X-Greentic-Revision"] or "-")
  served[k] = (served[k] or 0) + 1
end
function done(summary, latency, requests)
  local e = summary.errors
  local bad = e.connect + e.read + e.write + e.timeout
  for _, t in ipairs(threads) do
    bad = bad + t:get("bad")
    for k, v in pairs(t:get("served")) do io.write("SERVED ", k, " ", v, "\n") end
  end
  io.write("FAILED ", bad, "\n")
end
LUA
  wrk -t2 -c16 -d"${seconds}s" -H 'Host: shop.test' -s "$work/count.lua" "http://$listen/" >"$work/load.out" 2>&1 &
  load_pids=($!)
else
  loader="a curl loop (4 clients, ${seconds} s)"
  load_client() { # appends "<generation> <revision> <status>" per request
    local end=$(( $(now_ms) + seconds * 1000 ))
    while [ "$(now_ms)" -lt "$end" ]; do
      curl -s -o /dev/null -D - -H 'Host: shop.test' --max-time 10 "http://$listen/" | tr -d '\r' |
        awk -F': ' 'NR==1 {s=$0; sub(/^HTTP\/[0-9.]+ /, "", s); s=substr(s,1,3)}
          tolower($1)=="x-greentic-generation" {g=$2} tolower($1)=="x-greentic-revision" {r=$2}
          END {print (g==""?"-":g), (r==""?"-":r), (s==""?"000":s)}' || echo "- - 000"
    done >>"$work/load.$1"
  }
  load_pids=()
  for c in 1 2 3 4; do load_client "$c" & load_pids+=($!); done
fi
echo "load: $loader against $listen (Host: shop.test); shifting to 0/100 after ${shift_at} s"
sleep "$shift_at"
g2=$(split all-to-v2 "[{\"revision_id\":\"$v2\",\"weight_percent\":100}]")
wait_generation "$g2"
echo "split 0/100 committed (generation $g2)"
for pid in "${load_pids[@]}"; do wait "$pid" || fail "the load generator failed: $(cat "$work/load.out" 2>/dev/null)"; done
if [ -f "$work/load.out" ]; then
  grep -q '^FAILED ' "$work/load.out" || fail "wrk did not finish: $(cat "$work/load.out")"
  failed=$(awk '/^FAILED/ {print $2}' "$work/load.out")
  awk '/^SERVED/ {print $2, $3, $4}' "$work/load.out" >"$work/served"
else
  cat "$work"/load.[1-4] >"$work/all"
  failed=$(awk '$3 !~ /^2/' "$work/all" | wc -l)
  awk '$3 ~ /^2/ {n[$1" "$2]++} END {for (k in n) print k, n[k]}' "$work/all" >"$work/served"
fi
answered=$(awk '{s+=$3} END {print s+0}' "$work/served")
echo
echo "requests answered: $answered, failed: $failed"
python3 - "$work/served" "$g1" "$g2" "$v1" "$v2" <<'PY'
import sys
path, g1, g2, v1, v2 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
counts = {}
for line in open(path):
    gen, rev, n = line.split()
    gen = int(gen) if gen.isdigit() else -1
    phase = "90/10" if g1 <= gen < g2 else "0/100" if gen >= g2 else "other"
    counts.setdefault(phase, {v1: 0, v2: 0}).setdefault(rev, 0)
    counts[phase][rev] += int(n)
label = {v1: "v1", v2: "v2"}
total = {}
for phase in ("90/10", "0/100", "other"):
    if phase not in counts:
        continue
    c = counts[phase]
    n = sum(c.values())
    for rev, k in c.items():
        total[rev] = total.get(rev, 0) + k
    shares = ", ".join(f"{label.get(r, r)} {k} ({100 * k / n:.1f} %)" for r, k in sorted(c.items(), key=lambda x: label.get(x[0], x[0])))
    print(f"  under the {phase} split: {n} requests: {shares}")
n = sum(total.values())
print("  whole run: " + ", ".join(f"{label.get(r, r)} {k} ({100 * k / n:.1f} %)" for r, k in sorted(total.items(), key=lambda x: label.get(x[0], x[0]))))
PY
[ "$failed" = 0 ] || fail "$failed requests failed during the shift"
[ "$answered" -gt 0 ] || fail "the load generator got no answer"

# --- The containers, drain and archive v1, stop the node.
echo
echo "docker ps --filter label=greentic.env=local (this deployment's containers):"
ps_format='table {{.Names}}\t{{.Image}}\t{{.Status}}\t{{.Ports}}\t{{.Label "greentic.revision"}}\t{{.Label "greentic.instance"}}\t{{.Label "greentic.node"}}'
docker ps --filter label=greentic.env=local --filter "label=greentic.deployment=$deployment" --format "$ps_format"
first=$(docker ps -q --filter "label=greentic.revision=$v1" | head -1)
echo "labels of one container: $(docker inspect --format '{{json .Config.Labels}}' "$first")"

op revisions drain --answers "$(answers drain "{\"environment_id\":\"local\",\"revision_id\":\"$v1\"}")" >/dev/null
for _ in $(seq 600); do
  state=$(op revisions list local | python3 -c 'import json,sys
for r in json.load(sys.stdin)["result"]["revisions"]:
    if r["revision_id"] == sys.argv[1]: print(r["lifecycle"])' "$v1")
  [ "$state" = inactive ] && break
  sleep 0.1
done
[ "$state" = inactive ] || fail "v1 did not become inactive after drain (it is $state)"
op revisions archive --answers "$(answers archive "{\"environment_id\":\"local\",\"revision_id\":\"$v1\"}")" >/dev/null
for _ in $(seq 300); do [ "$(containers "$v1")" = 0 ] && break; sleep 0.1; done
[ "$(containers "$v1")" = 0 ] || fail "v1's containers are still there after archive"
echo
echo "v1 drained and archived: $(containers "$v1") containers of v1 left; now:"
docker ps --filter label=greentic.env=local --filter "label=greentic.deployment=$deployment" --format "$ps_format"

kill -TERM "$node_pid"
wait "$node_pid" || true
node_pid=""
left=$(( $(containers "$v1") + $(containers "$v2") ))
echo
echo "node stopped (SIGTERM): $left containers left for v1 and v2"
[ "$left" = 0 ] || fail "$left containers outlived the node"
