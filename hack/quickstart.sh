#!/usr/bin/env bash
# The quickstart: run the embedded registry, push the example model with its
# metrics, pull it into a fresh directory, inspect it, and stop cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
barge=$PWD/bin/barge
work=$PWD/.quickstart
rm -rf "$work"
mkdir -p "$work"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Start the embedded registry (storage in $work/registry)"
"$barge" serve --addr 127.0.0.1:0 --root "$work/registry" 2>"$work/registry.log" &
registry_pid=$!
stop() {
  if kill -0 "$registry_pid" 2>/dev/null; then
    kill -TERM "$registry_pid"
    wait "$registry_pid" || true
  fi
}
trap stop EXIT
addr=""
for _ in $(seq 1 100); do
  addr=$(sed -n 's|^Serving an OCI registry on http://\([^,]*\),.*|\1|p' "$work/registry.log")
  [ -n "$addr" ] && break
  kill -0 "$registry_pid" 2>/dev/null || { cat "$work/registry.log"; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { echo "the registry did not start:"; cat "$work/registry.log"; exit 1; }
echo "registry at $addr"
ref=$addr/models/tiny-classifier:1.0.0

step "Push examples/models/tiny-classifier as $ref"
"$barge" push examples/models/tiny-classifier "$ref" \
  --name tiny-classifier --task image-classification --framework onnx \
  --labels-file examples/models/tiny-classifier/labels.txt

step "Attach evaluation metrics (a referrer: the model's digest does not change)"
"$barge" metrics attach "$ref" examples/metrics/tiny-classifier.json

step "Pull it into a fresh directory"
"$barge" pull --cache "$work/cache" "$ref" "$work/pulled/tiny-classifier"
find "$work/pulled/tiny-classifier" -type f ! -name .barge-pull | sort | sed "s|$work/||"

step "Inspect it"
"$barge" inspect "$ref"

step "List its versions"
"$barge" versions "$addr/models/tiny-classifier"

dsref=$addr/datasets/vibration:1
step "Push the example dataset (statistics go into its config)"
"$barge" push --kind dataset examples/datasets/vibration "$dsref"

step "Pull the dataset and show the statistics it carries"
"$barge" pull --cache "$work/cache" "$dsref" "$work/pulled/vibration"
"$barge" inspect "$dsref"

step "Stop the registry"
stop
trap - EXIT
cat <<MSG

Done. Where everything is:
  registry storage   $work/registry
  content store      $work/cache   (blobs/sha256/<hex>: pulled layers, shared across artifacts)
  pulled files       $work/pulled/tiny-classifier, $work/pulled/vibration
Run 'make quickstart' again to start over.
MSG
