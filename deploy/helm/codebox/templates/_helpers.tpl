{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "codebox.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name prefix: <release>-codebox unless the release name already says codebox. */}}
{{- define "codebox.fullname" -}}
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

{{- define "codebox.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every resource. */}}
{{- define "codebox.labels" -}}
helm.sh/chart: {{ include "codebox.chart" . }}
app.kubernetes.io/name: {{ include "codebox.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: call with (dict "root" $ "component" "api"). */}}
{{- define "codebox.selectorLabels" -}}
app.kubernetes.io/name: {{ include "codebox.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "codebox.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "codebox.secretName" -}}
{{- default (include "codebox.fullname" .) .Values.secret.name -}}
{{- end -}}

{{/* One variable from the Secret: (dict "root" $ "key" "JWT_SECRET" "optional" false). */}}
{{- define "codebox.secretEnv" -}}
- name: {{ .key }}
  valueFrom:
    secretKeyRef:
      name: {{ include "codebox.secretName" .root }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/* The metrics port must be the one codebox listens on. */}}
{{- define "codebox.checkMetricsPort" -}}
{{- $configured := dig "monitoring" "metrics_port" nil .Values.config -}}
{{- if and $configured (ne (int $configured) (int .Values.metrics.port)) -}}
{{- fail (printf "metrics.port (%v) must equal config.monitoring.metrics_port (%v)" .Values.metrics.port $configured) -}}
{{- end -}}
{{- end -}}

{{/* node.labels as CODEBOX_NODE_LABELS: key=value pairs joined by commas, sorted. */}}
{{- define "codebox.nodeLabels" -}}
{{- $pairs := list -}}
{{- range $key, $value := . -}}
{{- $pairs = append $pairs (printf "%s=%s" $key $value) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}
