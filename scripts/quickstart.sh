#!/usr/bin/env bash
# The operator journey on the embedded default (state under $GREENTIC_HOME,
# default ~/.greentic): bootstrap `local`, add a bundle deployment, build the
# example bundle and stage it as two revisions, warm them on a node (a
# revision takes traffic only once a node can serve it), split traffic
# 90/10, then roll the split back. The node started here stops at the end;
# a node already serving `local` is used instead.
# Safe to re-run: each run adds its own uniquely named deployment.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --release --bin gtc --bin demo-service
gtc=target/release/gtc
work=$(mktemp -d)
node_pid=
cleanup() {
  if [ -n "$node_pid" ]; then kill -TERM "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
run=$(date +%s)

json() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }

$gtc op env init --output table

# The example bundle: the example service with a runtime section.
mkdir -p "$work/src/bin" "$work/src/packs"
cp target/release/demo-service "$work/src/bin/server"
cat > "$work/src/bundle.yaml" <<YAML
schema_version: 1
bundle_id: quickstart-$run
runtime:
  command: [bin/server]
  health_path: /healthz
  startup_timeout_seconds: 10
  instances: 1
YAML
printf 'PK\005\006\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000\000' > "$work/src/packs/app.gtpack"
$gtc bundle build "$work/src" -o "$work/quickstart.gtbundle" > /dev/null

# A node to run the revisions (unless one already serves `local`).
$gtc node run --listen 127.0.0.1:0 --admin 127.0.0.1:0 > "$work/node.out" 2> "$work/node.err" &
node_pid=$!
for _ in $(seq 50); do
  [ -s "$work/node.out" ] && break
  if ! kill -0 "$node_pid" 2>/dev/null; then node_pid=; break; fi
  sleep 0.2
done
if [ -n "$node_pid" ]; then
  echo "node $(json '["listen"]' < "$work/node.out")"
else
  echo "no new node ($(tail -1 "$work/node.err")); using the one that serves local"
fi

cat > "$work/bundle.json" <<JSON
{"environment_id":"local","bundle_id":"quickstart-$run","route_binding":{"path_prefixes":["/quickstart-$run"]}}
JSON
deployment=$($gtc op bundles add --answers "$work/bundle.json" | json '["result"]["deployment_id"]')
echo "deployment $deployment"
cat > "$work/stage.json" <<JSON
{"environment_id":"local","deployment_id":"$deployment","bundle_path":"$work/quickstart.gtbundle"}
JSON
v1=$($gtc op revisions stage --answers "$work/stage.json" | json '["result"]["revision_id"]')
v2=$($gtc op revisions stage --answers "$work/stage.json" | json '["result"]["revision_id"]')
for revision in "$v1" "$v2"; do
  echo "{\"environment_id\":\"local\",\"revision_id\":\"$revision\"}" > "$work/warm.json"
  $gtc op revisions warm --answers "$work/warm.json" > /dev/null
done
echo "== waiting for both revisions to be ready"
for _ in $(seq 150); do
  # grep finds nothing until the first revision is ready: not an error.
  ready=$($gtc op revisions list local --deployment "$deployment" \
    | json '["result"]["revisions"]' | { grep -o "'lifecycle': 'ready'" || true; } | wc -l)
  [ "$ready" -ge 2 ] && break
  sleep 0.2
done
cat > "$work/split.json" <<JSON
{"environment_id":"local","deployment_id":"$deployment","idempotency_key":"quickstart-$run-a",
 "entries":[{"revision_id":"$v1","weight_percent":100}]}
JSON
$gtc op traffic set --answers "$work/split.json" > /dev/null
cat > "$work/split.json" <<JSON
{"environment_id":"local","deployment_id":"$deployment","idempotency_key":"quickstart-$run-b",
 "entries":[{"revision_id":"$v1","weight_percent":90},{"revision_id":"$v2","weight_percent":10}]}
JSON
echo "== traffic set 90/10"
$gtc op traffic set --answers "$work/split.json" --output table
echo "{\"environment_id\":\"local\",\"deployment_id\":\"$deployment\"}" > "$work/rollback.json"
echo "== traffic rollback"
$gtc op traffic rollback --answers "$work/rollback.json" --output table
echo "== revisions"
$gtc op revisions list local --deployment "$deployment" --output table
echo "== doctor"
$gtc op env doctor local --output table
