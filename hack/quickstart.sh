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

# The local cluster at the end needs kube-apiserver, etcd and kubectl, built from
# Go modules: minutes on a fresh machine, nothing once built. Build them while the
# registry and CLI part runs.
${MAKE:-make} --no-print-directory controlplane >"$work/controlplane-build.log" 2>&1 &
build_pid=$!

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

step "A pull killed half way resumes where it stopped"
mkdir -p "$work/big-model"
head -c $((64 << 20)) /dev/urandom >"$work/big-model/weights.bin"
bigref=$addr/models/big:1
"$barge" push "$work/big-model" "$bigref" >/dev/null 2>&1
"$barge" pull --cache "$work/cache" --limit-rate 16M "$bigref" "$work/pulled/big" >/dev/null 2>&1 &
pull_pid=$!
while :; do
  size=$(find "$work/cache/ingest" -name data -printf '%s\n' 2>/dev/null | sort -n | tail -1)
  [ "${size:-0}" -ge $((32 << 20)) ] && break
  kill -0 "$pull_pid" 2>/dev/null || break
  sleep 0.1
done
kill -KILL "$pull_pid" 2>/dev/null || true
wait "$pull_pid" 2>/dev/null || true
echo "killed the pull (SIGKILL) with $((size >> 20)) MiB of 64 MiB downloaded; running it again:"
"$barge" pull --cache "$work/cache" "$bigref" "$work/pulled/big"

dsref=$addr/datasets/vibration:1
step "Push the example dataset (statistics go into its config)"
"$barge" push --kind dataset examples/datasets/vibration "$dsref"

step "Pull the dataset and show the statistics it carries"
"$barge" pull --cache "$work/cache" "$dsref" "$work/pulled/vibration"
"$barge" inspect "$dsref"

step "Start a local cluster: kube-apiserver and etcd (built from Go modules), two edge nodes"
if kill -0 "$build_pid" 2>/dev/null; then
  echo "waiting for the control plane build to finish (the first run only; log: $work/controlplane-build.log)"
fi
wait "$build_pid" || { echo "building the control plane failed:"; cat "$work/controlplane-build.log"; exit 1; }
kubectl() { "$PWD/bin/kubectl" --kubeconfig "$work/kubeconfig" "$@"; }
pids=()
start() { # name, command...: run in the background, log to $work/<name>.log
  local name=$1; shift
  "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
}
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  stop
}
trap stop_all EXIT
# --run-pods: a stand-in for the kubelet runs the training Jobs as local
# processes (PATH gives them bin/barge, as the barge image would).
start localcluster env PATH="$PWD/bin:$PATH" bin/localcluster --out "$work/kubeconfig" --nodes edge-1,edge-2 \
  --run-pods default --nodes-dir "$work/nodes" --hosts-dir "$work/hosts"
for _ in $(seq 1 600); do [ -f "$work/kubeconfig" ] && break; sleep 0.1; done
[ -f "$work/kubeconfig" ] || { echo "the control plane did not start:"; cat "$work/localcluster.log"; exit 1; }
kubectl get nodes

step "Start barge-controller and a barge-edgepuller for each node"
start controller bin/barge-controller --kubeconfig "$work/kubeconfig" --metrics-bind-address 0 --health-probe-bind-address 0
for n in edge-1 edge-2; do
  start "puller-$n" bin/barge-edgepuller --kubeconfig "$work/kubeconfig" --node-name "$n" \
    --root "$work/nodes/$n" --metrics-addr 127.0.0.1:0
done

step "Ask for the model and the dataset on every edge node"
sed "s|REGISTRY|$addr|" examples/k8s/inferencemodel.yaml | kubectl apply -f -
sed "s|REGISTRY|$addr|" examples/k8s/dataset.yaml | kubectl apply -f -
kubectl wait --for=condition=Ready --timeout=180s inferencemodel/tiny-classifier dataset/vibration
kubectl get inferencemodels,datasets,nodeartifacts
for n in edge-1 edge-2; do
  echo "files on $n:"
  find -L "$work/nodes/$n/artifacts" -path '*/current/*' -type f 2>/dev/null | sed "s|$work/||" | sort
done

step "Choose a version by its metrics: push detector 1.0.0 (accuracy 0.93) and 1.1.0 (0.89)"
detector=$addr/models/detector
version() { # version, accuracy: push a detector version and attach its evaluation
  mkdir -p "$work/detector-$1"
  echo "detector weights $1" >"$work/detector-$1/weights.bin"
  echo "{\"metrics\": {\"accuracy\": $2}}" >"$work/detector-$1/eval.json"
  "$barge" push --name detector --framework onnx "$work/detector-$1" "$detector:$1" >/dev/null
  "$barge" metrics attach "$detector:$1" "$work/detector-$1/eval.json" >/dev/null
}
version 1.0.0 0.93
version 1.1.0 0.89
echo "what the controller will choose, tried locally with the same code:"
"$barge" versions "$detector" --require 'metrics.accuracy >= 0.9' --order metrics.accuracy
sed "s|REGISTRY|$addr|" examples/k8s/inferencemodel-selection.yaml | kubectl apply -f -
kubectl wait --for=condition=Ready --timeout=120s inferencemodel/detector
kubectl get inferencemodel detector -o wide
echo "why this version:"
kubectl get inferencemodel detector -o jsonpath='  {.status.resolved.version}: {.status.resolved.reason}{"\n"}'

step "A broken version: 1.2.0 evaluates best (0.97), but the registry serves its weights damaged"
version 1.2.0 0.97
layer=$(sha256sum "$work/detector-1.2.0/weights.bin" | cut -d' ' -f1) # a one-file layer is the file itself
printf X | dd of="$work/registry/docker/registry/v2/blobs/sha256/${layer:0:2}/$layer/data" bs=1 conv=notrunc status=none
echo "the controller asks the registry again within spec.interval (30s); 1.2.0 wins, edge-1 takes it first and fails:"
last=""
for _ in $(seq 1 240); do
  now=$(kubectl get inferencemodel detector -o jsonpath='{.status.rollout.phase} {.status.rollout.version}: {.status.rollout.message}')
  [ "$now" != "$last" ] && echo "  rollout $now" && last=$now
  case $now in RolledBack*) break ;; esac
  sleep 0.5
done
case $last in RolledBack*) ;; *) echo "the rollout did not roll back; see $work/controller.log"; exit 1 ;; esac
kubectl wait --for=condition=Stalled --timeout=60s inferencemodel/detector >/dev/null
kubectl get inferencemodel detector -o wide
echo "status.history (newest first):"
kubectl get inferencemodel detector -o jsonpath='{range .status.history[*]}  {.time} {.action} {.version} {.reason}{"\n"}{end}'
kubectl get events --field-selector involvedObject.name=detector --sort-by=.lastTimestamp
for n in edge-1 edge-2; do
  echo "$n serves: $(cat "$work/nodes/$n/artifacts/default/model-detector/current/weights.bin")"
done

step "Federated training: each node trains on its own data, the cloud averages the updates"
bin/logreg gen --seed 3 --samples 2000 --nodes 2 --out "$work/fl-data" # a synthetic 3-class dataset, one skewed shard per node
for k in 1 2; do # each node's shard is on the node only (the TrainingModel's localDataset)
  mkdir -p "$work/hosts/edge-$k/var/lib/sensors"
  cp "$work/fl-data/node-$k/train.csv" "$work/hosts/edge-$k/var/lib/sensors/"
done
bin/logreg init --features 4 --classes 3 --out "$work/classifier" # zero weights and train/config.json
"$barge" push --name classifier "$work/classifier" "$addr/models/classifier:1.0.0" >/dev/null
sed -e "s|REGISTRY|$addr|" -e "s|LOGREG|$PWD/bin/logreg|" examples/k8s/trainingmodel.yaml | kubectl apply -f -
kubectl wait --for=jsonpath='{.status.phase}'=Completed --timeout=180s trainingmodel/classifier
kubectl get trainingmodel classifier
echo "rounds (base -> aggregated, updates, sample-weighted validation accuracy), and held-out accuracy:"
for r in 0 1; do
  agg=$(kubectl get trainingmodel classifier -o jsonpath="{.status.rounds[$r].aggregated}")
  "$barge" pull --cache "$work/cache" "$addr/models/classifier@$agg" "$work/pulled/classifier-$r" >/dev/null
  printf '  round %s: %s, %s updates, accuracy %s; held out: %s\n' "$((r + 1))" "${agg:7:12}" \
    "$(kubectl get trainingmodel classifier -o jsonpath="{.status.rounds[$r].updates}")" \
    "$(kubectl get trainingmodel classifier -o jsonpath="{.status.rounds[$r].metrics.accuracy}")" \
    "$(bin/logreg eval --model "$work/pulled/classifier-$r" --data "$work/fl-data/test.csv")"
done
echo "promoted: $(kubectl get trainingmodel classifier -o jsonpath='{.status.promoted.version} {.status.promoted.digest}')"
"$barge" versions "$addr/models/classifier"
echo "the InferenceModel following >=1.0 rolls 1.1.0 out to the nodes:"
kubectl wait --for=jsonpath='{.status.resolved.version}'=1.1.0 --timeout=120s inferencemodel/classifier
kubectl wait --for=condition=Ready --timeout=120s inferencemodel/classifier
kubectl get inferencemodel classifier

step "Stop everything"
stop_all
trap - EXIT
cat <<MSG

Done. Where everything is:
  registry storage   $work/registry
  content store      $work/cache   (blobs/sha256/<hex>: pulled layers, shared across artifacts)
  pulled files       $work/pulled/tiny-classifier, $work/pulled/vibration
  edge nodes' files  $work/nodes/edge-1, $work/nodes/edge-2   (artifacts/<namespace>/<name>/current)
  logs               $work/*.log   (kubeconfig: $work/kubeconfig)
Run 'make quickstart' again to start over.
MSG
