{{- define "iwd.name" -}}iwd-sidecar{{- end -}}

{{- define "iwd.fullname" -}}
{{- printf "%s-iwd-sidecar" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "iwd.labels" -}}
app.kubernetes.io/name: iwd-sidecar
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "iwd.selectorLabels" -}}
app.kubernetes.io/name: iwd-sidecar
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "iwd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "iwd.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "iwd.secretName" -}}
{{- default (printf "%s-secret" (include "iwd.fullname" .)) .Values.existingSecret -}}
{{- end -}}

{{/* imagePullSecrets of a pod spec from a list of names or of {name: ...} (both are documented). */}}
{{- define "iwd.imagePullSecrets" -}}
{{- with . }}
imagePullSecrets:
{{- range . }}
  - name: {{ if kindIs "map" . }}{{ .name | quote }}{{ else }}{{ . | quote }}{{ end }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "iwd.redisNodes" -}}
{{- if kindIs "slice" .Values.redis.nodes -}}{{ join "," .Values.redis.nodes }}{{- else -}}{{ .Values.redis.nodes }}{{- end -}}
{{- end -}}

{{/* The Redis nodes as a list, whether given as a list or as comma-separated text. */}}
{{- define "iwd.redisNodeList" -}}
{{- if kindIs "slice" .Values.redis.nodes -}}
{{- toJson .Values.redis.nodes -}}
{{- else -}}
{{- toJson (compact (splitList "," (nospace .Values.redis.nodes))) -}}
{{- end -}}
{{- end -}}

{{/* The TCP ports the sidecar reaches Redis on (6379 when a node names none), as a JSON list. */}}
{{- define "iwd.redisPorts" -}}
{{- $ports := list -}}
{{- range (include "iwd.redisNodeList" . | fromJsonArray) -}}
{{- $hostPort := trimPrefix "redis://" . -}}
{{- if contains ":" $hostPort -}}
{{- $ports = append $ports (last (splitList ":" $hostPort) | int) -}}
{{- else -}}
{{- $ports = append $ports 6379 -}}
{{- end -}}
{{- end -}}
{{- toJson (uniq $ports) -}}
{{- end -}}

{{/* The Pushgateway's TCP port (80 when the URL names none). */}}
{{- define "iwd.pushgatewayPort" -}}
{{- $hostPort := regexReplaceAll "/.*$" (trimPrefix "http://" .Values.iwddm.env.monitoring.pushgateway_url) "" -}}
{{- if contains ":" $hostPort -}}{{ last (splitList ":" $hostPort) | int }}{{- else -}}80{{- end -}}
{{- end -}}

{{/* Combinations of values that the schema cannot express, refused with the reason. */}}
{{- define "iwd.validate" -}}
{{- if and (not .Values.redis.enableTLS) (or .Values.redis.tls.caSecret .Values.redis.tls.clientSecret .Values.redis.tls.serverName) -}}
{{- fail "redis.tls.* applies to TLS connections: set redis.enableTLS: true" -}}
{{- end -}}
{{- if and .Values.hpa.enabled (gt (int .Values.hpa.minReplicas) (int .Values.hpa.maxReplicas)) -}}
{{- fail "hpa.minReplicas must not exceed hpa.maxReplicas" -}}
{{- end -}}
{{- if eq (int .Values.monitoring.port) (int .Values.service.port) -}}
{{- fail "monitoring.port must differ from service.port: the metrics listener is a port of its own" -}}
{{- end -}}
{{- if and .Values.iwddm.env.monitoring.enabled (not .Values.iwddm.env.monitoring.pushgateway_url) -}}
{{- fail "iwddm.env.monitoring.enabled needs iwddm.env.monitoring.pushgateway_url" -}}
{{- end -}}
{{- end -}}
