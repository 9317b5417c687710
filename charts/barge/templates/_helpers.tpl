{{/* Chart name, overridable. */}}
{{- define "barge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every object name: RELEASE-barge, or RELEASE when it already says barge. */}}
{{- define "barge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Component object names; the component is appended so that names stay under 63 characters. */}}
{{- define "barge.controller.fullname" -}}
{{- printf "%s-controller" (include "barge.fullname" . | trunc 52 | trimSuffix "-") }}
{{- end }}
{{- define "barge.edgePuller.fullname" -}}
{{- printf "%s-edgepuller" (include "barge.fullname" . | trunc 52 | trimSuffix "-") }}
{{- end }}
{{- define "barge.registry.fullname" -}}
{{- printf "%s-registry" (include "barge.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{- define "barge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels. Call with (dict "ctx" $ "component" "controller"). */}}
{{- define "barge.labels" -}}
helm.sh/chart: {{ include "barge.chart" .ctx }}
{{ include "barge.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: barge
{{- end }}

{{/* Selector labels: immutable on Deployments and DaemonSets, so never the version. */}}
{{- define "barge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "barge.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The image, pinned by digest when the tag is one. */}}
{{- define "barge.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag | toString }}
{{- if hasPrefix "sha256:" $tag }}
{{- printf "%s@%s" .Values.image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The registry's in-cluster address, HOST:PORT. */}}
{{- define "barge.registry.address" -}}
{{- printf "%s.%s.svc:%v" (include "barge.registry.fullname" .) .Release.Namespace .Values.registry.service.port }}
{{- end }}

{{/* "true" when the ServiceMonitors are to be rendered. */}}
{{- define "barge.serviceMonitor.enabled" -}}
{{- $e := toString .Values.metrics.serviceMonitor.enabled }}
{{- if not (has $e (list "auto" "true" "false")) }}
{{- fail (printf "metrics.serviceMonitor.enabled is %q: use auto, true or false" $e) }}
{{- end }}
{{- if or (eq $e "true") (and (eq $e "auto") (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1/ServiceMonitor")) }}true{{ end }}
{{- end }}
