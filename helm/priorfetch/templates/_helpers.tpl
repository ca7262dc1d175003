{{/* Names and labels. */}}
{{- define "priorfetch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "priorfetch.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "priorfetch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "priorfetch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "priorfetch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "priorfetch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: priorfetch
{{- end -}}

{{- define "priorfetch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "priorfetch.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "priorfetch.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "priorfetch.secretName" -}}
{{- default (include "priorfetch.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* The admin port, taken from config.service.admin_listen ("0.0.0.0:9464"). */}}
{{- define "priorfetch.adminPort" -}}
{{- splitList ":" .Values.config.service.admin_listen | last | int -}}
{{- end -}}

{{/*
The configuration file. Helm reads every number in values as a float64, and toToml writes
floats as `10.0` (or `1e+06`), which the typed config rejects for an integer field: whole
numbers are turned back into integers first (float fields such as backoff.factor accept them).
*/}}
{{- define "priorfetch.configToml" -}}
{{- $config := deepCopy .Values.config -}}
{{- $_ := include "priorfetch.wholeNumbersToInt" $config -}}
{{- toToml $config -}}
{{- end -}}

{{/* Recursively, in place: whole float64 values of a map and of its lists to int64. */}}
{{- define "priorfetch.wholeNumbersToInt" -}}
{{- $map := . -}}
{{- range $key, $value := $map -}}
{{- if kindIs "float64" $value -}}
{{- if and (eq $value (floor $value)) (lt $value 9.0e15) (gt $value -9.0e15) -}}
{{- $_ := set $map $key (int64 $value) -}}
{{- end -}}
{{- else if kindIs "map" $value -}}
{{- $_ := include "priorfetch.wholeNumbersToInt" $value -}}
{{- else if kindIs "slice" $value -}}
{{- $items := list -}}
{{- range $item := $value -}}
{{- if and (kindIs "float64" $item) (eq $item (floor $item)) (lt $item 9.0e15) (gt $item -9.0e15) -}}
{{- $items = append $items (int64 $item) -}}
{{- else -}}
{{- if kindIs "map" $item -}}
{{- $_ := include "priorfetch.wholeNumbersToInt" $item -}}
{{- end -}}
{{- $items = append $items $item -}}
{{- end -}}
{{- end -}}
{{- $_ := set $map $key $items -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Secret data (chart-managed Secret and its copy for the migration hook). */}}
{{- define "priorfetch.secretData" -}}
{{- with .Values.secrets.databasePassword }}
database-password: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.secrets.rabbitmqUrl }}
rabbitmq-url: {{ . | b64enc | quote }}
{{- end }}
{{- with .Values.secrets.kafkaPassword }}
kafka-password: {{ . | b64enc | quote }}
{{- end }}
{{- end -}}

{{/* Environment shared by every container: secrets, OTEL, pod identity. */}}
{{- define "priorfetch.env" -}}
{{- $secret := .secretName -}}
- name: PRIORFETCH__DATABASE__PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: database-password, optional: true}
- name: PRIORFETCH__INTAKE__RABBITMQ__URL
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: rabbitmq-url, optional: true}
- name: PRIORFETCH__INTAKE__KAFKA__PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: kafka-password, optional: true}
- name: PRIORFETCH__TELEMETRY__SERVICE_NAME
  value: {{ printf "%s-%s" (.root.Values.config.telemetry.service_name | default "priorfetch") .component | quote }}
- name: POD_NAME
  valueFrom:
    fieldRef: {fieldPath: metadata.name}
{{- with .root.Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with .root.Values.otel.protocol }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ . | quote }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "service.instance.id=$(POD_NAME),k8s.pod.name=$(POD_NAME)%s" (ternary (printf ",%s" .root.Values.otel.resourceAttributes) "" (ne .root.Values.otel.resourceAttributes "")) | quote }}
{{- with .root.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* HTTPS when config.service.admin_tls is set (the admin listener then serves TLS only). */}}
{{- define "priorfetch.adminScheme" -}}
{{- if .Values.config.service.admin_tls -}}HTTPS{{- else -}}HTTP{{- end -}}
{{- end -}}
