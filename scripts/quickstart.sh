#!/usr/bin/env bash
# The operator journey on the embedded default (state under $GREENTIC_HOME,
# default ~/.greentic): bootstrap `local`, add a bundle deployment, stage and
# warm two revisions, split traffic 90/10, then roll the split back.
# Safe to re-run: each run adds its own uniquely named deployment.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet --release --bin gtc
gtc=target/release/gtc
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
run=$(date +%s)

json() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }

$gtc op env init --output table
cat > "$work/bundle.json" <<JSON
{"environment_id":"local","bundle_id":"quickstart-$run","route_binding":{"path_prefixes":["/quickstart-$run"]}}
JSON
deployment=$($gtc op bundles add --answers "$work/bundle.json" | json '["result"]["deployment_id"]')
echo "deployment $deployment"
cat > "$work/stage.json" <<JSON
{"environment_id":"local","deployment_id":"$deployment"}
JSON
v1=$($gtc op revisions stage --answers "$work/stage.json" | json '["result"]["revision_id"]')
v2=$($gtc op revisions stage --answers "$work/stage.json" | json '["result"]["revision_id"]')
for revision in "$v1" "$v2"; do
  echo "{\"environment_id\":\"local\",\"revision_id\":\"$revision\"}" > "$work/warm.json"
  $gtc op revisions warm --answers "$work/warm.json" > /dev/null
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
