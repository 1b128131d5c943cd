{{- define "iwddm.fullname" -}}
{{- printf "%s-iwddm" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The tenant id as text (the documentation gives it as a number too). */}}
{{- define "iwddm.tenant" -}}
{{- $t := .Values.iwddm.tenantId -}}
{{- if kindIs "float64" $t -}}{{ int64 $t }}{{- else -}}{{ $t }}{{- end -}}
{{- end -}}

{{- define "iwddm.labels" -}}
app.kubernetes.io/name: iwddm
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with include "iwddm.tenant" . }}
iwd.tenant: {{ . | quote }}
{{- end }}
{{- with .Values.iwddm.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "iwddm.image" -}}
{{- $i := .Values.image -}}
{{- if $i.tag -}}{{ printf "%s/%s:%s" $i.registry $i.repository $i.tag }}{{- else -}}{{ printf "%s/%s" $i.registry $i.repository }}{{- end -}}
{{- end -}}

{{/* The Secret holding the database password under key "password", or nothing. */}}
{{- define "iwddm.dbSecret" -}}
{{- $s := .Values.iwddm.db.secret -}}
{{- if $s.enabled -}}{{ default (printf "%s-db" (include "iwddm.fullname" .)) $s.secretName }}{{- else -}}{{ $s.secretName }}{{- end -}}
{{- end -}}

{{- define "iwddm.serviceAccountName" -}}
{{- if .Values.iwddm.serviceAccount.create -}}
{{- default (include "iwddm.fullname" .) .Values.iwddm.serviceAccount.name -}}
{{- else -}}
{{- .Values.iwddm.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The pod's volumes, given as a list or as YAML text of one. */}}
{{- define "iwddm.volumes" -}}
{{- $v := .Values.iwddm.volumes -}}
{{- if kindIs "string" $v -}}
{{- $v = tpl $v . | fromYamlArray -}}
{{- end -}}
{{- toJson $v -}}
{{- end -}}

{{/* The container's volume mounts, given as a list or as a map of volume name to mount. */}}
{{- define "iwddm.volumeMounts" -}}
{{- $m := .Values.iwddm.volumeMounts -}}
{{- if kindIs "map" $m -}}
{{- $list := list -}}
{{- range $name := keys $m | sortAlpha -}}
{{- $list = append $list (merge (dict "name" $name) (get $m $name)) -}}
{{- end -}}
{{- $m = $list -}}
{{- end -}}
{{- toJson $m -}}
{{- end -}}

{{/* The connection settings of the Job and the test, as env entries or a ConfigMap's data. */}}
{{- define "iwddm.connection" -}}
PGHOST: {{ .Values.iwddm.db.host | quote }}
PGPORT: {{ .Values.iwddm.db.port | int | quote }}
PGDATABASE: {{ .Values.iwddm.db.dbname | quote }}
PGUSER: {{ .Values.iwddm.db.user | quote }}
PGSSLMODE: {{ .Values.iwddm.db.sslmode | quote }}
{{- end -}}

{{/* The pod spec shared by the settings Job and the Helm test, up to its containers. */}}
{{- define "iwddm.podSpec" -}}
automountServiceAccountToken: false
{{- with include "iwddm.serviceAccountName" . }}
serviceAccountName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml .Values.iwddm.securityContext | nindent 2 }}
{{- with .Values.image.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ if kindIs "map" . }}{{ .name | quote }}{{ else }}{{ . | quote }}{{ end }}
{{- end }}
{{- end }}
{{- with .Values.iwddm.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.iwddm.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with include "iwddm.volumes" . | fromJsonArray }}
volumes:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The container's environment: the connection (from the ConfigMap or inline) and the password. */}}
{{- define "iwddm.containerEnv" -}}
{{- if .Values.iwddm.db.createConfigmap }}
envFrom:
  - configMapRef:
      name: {{ include "iwddm.fullname" . }}-db
{{- end }}
env:
  - {name: PGAPPNAME, value: iwddm-settings}
  {{- if not .Values.iwddm.db.createConfigmap }}
  {{- range $k, $v := include "iwddm.connection" . | fromYaml }}
  - {name: {{ $k }}, value: {{ $v | quote }}}
  {{- end }}
  {{- end }}
  {{- with include "iwddm.dbSecret" . }}
  - name: PGPASSWORD
    valueFrom:
      secretKeyRef: {name: {{ . | quote }}, key: password}
  {{- end }}
{{- with include "iwddm.volumeMounts" . | fromJsonArray }}
volumeMounts:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Values the schema cannot check alone, refused with the reason. */}}
{{- define "iwddm.validate" -}}
{{- $db := .Values.iwddm.db -}}
{{- if not (and $db.host $db.dbname $db.user) -}}
{{- fail "iwddm.db.host, iwddm.db.dbname and iwddm.db.user are required: the settings Job connects there" -}}
{{- end -}}
{{- if and $db.secret.enabled (not $db.secret.password) -}}
{{- fail "iwddm.db.secret.enabled needs iwddm.db.secret.password (or leave it false and name an existing Secret in secretName)" -}}
{{- end -}}
{{- end -}}
