{{/*
Templates of this chart stay inside a small subset of Go templates (if/else, with, range, include, define,
toYaml, nindent, default, printf, quote, eq, and, or, not, list, dict, trunc, trimSuffix, sha256sum): the
chart's tests render them without a helm binary (tests/packaging/eftpkg_gotemplate.py).
*/}}

{{- define "eft.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "eft.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "eft.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "eft.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "eft.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eft.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "eft.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "eft.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: embedding-finetune-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "eft.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "eft.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* An image reference: include "eft.image" (dict "root" $ "image" .Values.images.pipeline) */}}
{{- define "eft.image" -}}
{{- if .image.override -}}
{{- .image.override -}}
{{- else -}}
{{- printf "%s/%s:%s" .root.Values.images.registry .image.repository (default .root.Chart.AppVersion .root.Values.images.tag) -}}
{{- end -}}
{{- end -}}

{{/* The operator's defaults file (mounted from the ConfigMap; its hash restarts the pod when it changes). */}}
{{- define "eft.defaults" -}}
# Defaults the operator applies to every EmbeddingFinetune; spec.runtime and spec.deploy override them.
stages:
{{- toYaml .Values.stageDefaults | nindent 2 }}
server:
{{- toYaml .Values.serverDefaults | nindent 2 }}
{{- end -}}
