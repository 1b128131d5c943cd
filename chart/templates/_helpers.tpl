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

{{- define "iwd.redisNodes" -}}
{{- if kindIs "slice" .Values.redis.nodes -}}{{ join "," .Values.redis.nodes }}{{- else -}}{{ .Values.redis.nodes }}{{- end -}}
{{- end -}}
