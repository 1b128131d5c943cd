#!/usr/bin/env bash
# Chart tests: helm lint and helm template with the default values and every sample override under
# chart/ci/, with assertions on the rendered objects; values.schema.json must reject bad values.
# Ends with "chart: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
top=$(pwd)
helm=$(chart/tests/get-helm.sh "$top/.tools/bin") || { echo "chart: cannot get helm"; echo "chart: 0 passed, 1 failed"; exit 1; }
python3 -c 'import yaml' 2>/dev/null || { echo "chart: python3-yaml is missing"; echo "chart: 0 passed, 1 failed"; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0; failed=0
check() { if [ "$2" = "$3" ]; then passed=$((passed + 1)); echo "ok - $1"; else failed=$((failed + 1)); echo "not ok - $1: expected '$2', got '$3'"; fi; }

# render NAME [helm args...] -> $work/NAME.yaml
render() {
    local name=$1; shift
    "$helm" template iwd chart --namespace iwd "$@" > "$work/$name.yaml" 2> "$work/$name.err"
}

# q NAME PYTHON-EXPRESSION over docs (the rendered objects) -> printed result
q() {
    python3 - "$work/$1.yaml" "$2" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = {}
for d in docs:
    kinds.setdefault(d["kind"], []).append(d)
def one(kind):
    return kinds[kind][0]
def container(d):
    return d["spec"]["template"]["spec"]["containers"][0]
print(eval(sys.argv[2]))
PY
}

"$helm" lint chart > "$work/lint.log" 2>&1; check "helm lint with the default values" "0" "$?"
for f in chart/ci/*.yaml; do
    "$helm" lint chart -f "$f" >> "$work/lint.log" 2>&1; check "helm lint with $(basename "$f")" "0" "$?"
done

render default; check "helm template with the default values" "0" "$?"
check "default: a Deployment" "Deployment" "$(q default 'one("Deployment")["kind"]')"
check "default: 2 replicas" "2" "$(q default 'one("Deployment")["spec"]["replicas"]')"
check "default: liveness probe on /iwd/v3/health/live" "/iwd/v3/health/live" \
    "$(q default 'container(one("Deployment"))["livenessProbe"]["httpGet"]["path"]')"
check "default: readiness probe on /iwd/v3/health/ready" "/iwd/v3/health/ready" \
    "$(q default 'container(one("Deployment"))["readinessProbe"]["httpGet"]["path"]')"
check "default: resources 2000m/2000Mi limits, 300m/500Mi requests" "2000m 2000Mi 300m 500Mi" \
    "$(q default '" ".join([container(one("Deployment"))["resources"][k][r] for k in ("limits", "requests") for r in ("cpu", "memory")])')"
check "default: non-root, read-only root file system, no privilege escalation" "True True False" \
    "$(q default '" ".join(str(x) for x in (one("Deployment")["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"], container(one("Deployment"))["securityContext"]["readOnlyRootFilesystem"], container(one("Deployment"))["securityContext"]["allowPrivilegeEscalation"]))')"
check "default: dnsConfig ndots 3" "3" \
    "$(q default '[o["value"] for o in one("Deployment")["spec"]["template"]["spec"]["dnsConfig"]["options"] if o["name"] == "ndots"][0]')"
check "default: Service on 4024" "4024" "$(q default 'one("Service")["spec"]["ports"][0]["port"]')"
check "default: no HPA, PDB, Ingress, NetworkPolicy, ServiceMonitor, PrometheusRule, Job" "0" \
    "$(q default 'sum(len(kinds.get(k, [])) for k in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress", "NetworkPolicy", "ServiceMonitor", "PrometheusRule", "Job"))')"
check "no secret value in any ConfigMap" "[]" \
    "$(q default '[k for d in kinds.get("ConfigMap", []) for k in d.get("data", {}) if any(s in k for s in ("KEY", "PASSWORD", "CONTROL_DB", "SECRET"))]')"
check "the secrets come from a Secret" "True" \
    "$(q default 'any("secretRef" in e for e in container(one("Deployment"))["envFrom"]) and "IWD_ADMIN_API_KEY" in one("Secret")["stringData"]')"
check "every contract variable is set" "[]" \
    "$(q default 'sorted(set(["IWD_LISTEN","IWD_PORT","IWD_THREADS","IWD_MAX_BODY_BYTES","IWD_LOG_LEVEL","IWD_REDIS_NODES","IWD_REDIS_TLS","IWD_REDIS_CLUSTER","IWD_ADMIN_API_KEY","IWD_CONTROL_DB","IWD_REDIS_PASSWORD"]) - set(list(one("ConfigMap")["data"]) + list(one("Secret")["stringData"])))')"

render monitoring -f chart/ci/monitoring-values.yaml --api-versions monitoring.coreos.com/v1
check "monitoring: ServiceMonitor scrapes /iwd/v3/metrics every 15s" "/iwd/v3/metrics 15s" \
    "$(q monitoring 'one("ServiceMonitor")["spec"]["endpoints"][0]["path"] + " " + one("ServiceMonitor")["spec"]["endpoints"][0]["interval"]')"
check "monitoring: four documented alerts" "IwdDatabaseConnections IwdDatabaseErrors IwdErrorRate IwdMemory" \
    "$(q monitoring '" ".join(sorted(r["alert"] for r in one("PrometheusRule")["spec"]["groups"][0]["rules"]))')"
exported=$(grep -ohE '\biwd[A-Za-z_]+' sidecar/metrics.c | sort -u)
used=$(q monitoring '" ".join(sorted(set(__import__("re").findall(r"\b(iwd[A-Za-z_]*?)(?:_bucket)?\b", " ".join([r["expr"] for r in one("PrometheusRule")["spec"]["groups"][0]["rules"]] + [t["expr"] for p in __import__("json").loads([d for d in kinds["ConfigMap"] if d["metadata"]["name"].endswith("-dashboard")][0]["data"]["iwd.json"])["panels"] for t in p["targets"]])))))')
unknown=""
for m in $used; do grep -qx "$m" <<<"$exported" || unknown="$unknown $m"; done
check "alerts and dashboard query only metrics the sidecar exports" "" "$unknown"
check "monitoring: the Pushgateway URL reaches the sidecar" "http://pushgateway.monitoring:9091" \
    "$(q monitoring 'one("ConfigMap")["data"]["IWD_PUSHGATEWAY_URL"]')"
render monitoring-noop -f chart/ci/monitoring-values.yaml
check "monitoring without the Prometheus operator: scrape annotations" "/iwd/v3/metrics" \
    "$(q monitoring-noop 'one("Deployment")["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]')"

render ingress -f chart/ci/ingress-tls-values.yaml
check "ingress: TLS and the /iwd/ path" "iwd-tls /iwd/" \
    "$(q ingress 'one("Ingress")["spec"]["tls"][0]["secretName"] + " " + one("Ingress")["spec"]["rules"][0]["http"]["paths"][0]["path"]')"

render hpa -f chart/ci/hpa-pdb-values.yaml
check "hpa: present with its bounds and no fixed replicas" "3 12 60 None" \
    "$(q hpa '" ".join(str(x) for x in (one("HorizontalPodAutoscaler")["spec"]["minReplicas"], one("HorizontalPodAutoscaler")["spec"]["maxReplicas"], one("HorizontalPodAutoscaler")["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], one("Deployment")["spec"].get("replicas")))')"
check "pdb: minAvailable 2" "2" "$(q hpa 'one("PodDisruptionBudget")["spec"]["minAvailable"]')"

render netpol -f chart/ci/network-policies-values.yaml
check "network policies: ingress on 4024 only" "4024" "$(q netpol 'one("NetworkPolicy")["spec"]["ingress"][0]["ports"][0]["port"]')"

render existing -f chart/ci/existing-secret-values.yaml
check "existingSecret: no Secret made, the given one used" "0 iwd-secrets" \
    "$(q existing 'str(len(kinds.get("Secret", []))) + " " + [e["secretRef"]["name"] for e in container(one("Deployment"))["envFrom"] if "secretRef" in e][0]')"
check "redis nodes list and cluster flag" "redis://redis-0.redis:6379,redis://redis-1.redis:6379 true" \
    "$(q existing 'one("ConfigMap")["data"]["IWD_REDIS_NODES"] + " " + one("ConfigMap")["data"]["IWD_REDIS_CLUSTER"]')"

render rs -f chart/ci/replicaset-iwddm-values.yaml
check "deploymentType ReplicaSet" "ReplicaSet" "$(q rs 'kinds["ReplicaSet"][0]["kind"]')"
check "iwddm settings applied by a hook Job" "post-install,post-upgrade" \
    "$(q rs 'one("Job")["metadata"]["annotations"]["helm.sh/hook"]')"
check "the Job maps schedule, suspend, chain and batch size" "True" \
    "$(q rs 'all(any(x in c for c in container(one("Job"))["command"]) for x in ("iwd_dm.schedule = '"'"'*/5 * * * *'"'"'", "iwd_dm.suspend = off", "iwd_dm.execution_chain = '"'"'intraday'"'"'", "iwd_dm.batch_size = 5000"))')"
check "the Job reads the password from a Secret" "tenant-a-db" \
    "$(q rs '[e["valueFrom"]["secretKeyRef"]["name"] for e in container(one("Job"))["env"] if e["name"] == "PGPASSWORD"][0]')"

# the schema rejects bad values
for bad in "replicaCount=0" "deploymentType=StatefulSet" "image.pullPolicy=Sometimes" "service.type=Magic" \
           "iwddm.env.executionChain=weekly" "iwddm.cronjob.schedule=hourly" "hpa.targetCPUPercent=500" \
           "sidecar.logLevel=loud"; do
    "$helm" template iwd chart --set "$bad" >/dev/null 2>&1
    check "values.schema.json rejects $bad" "1" "$?"
done

echo "chart: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
