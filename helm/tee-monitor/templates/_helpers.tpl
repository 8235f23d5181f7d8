{{/* Names, labels and the paths both containers agree on. */}}

{{- define "tee-monitor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tee-monitor.fullname" -}}
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

{{- define "tee-monitor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tee-monitor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tee-monitor.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tee-monitor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tee-monitor
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "tee-monitor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tee-monitor.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tee-monitor.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Mount points inside the containers. */}}
{{- define "tee-monitor.journalPath" -}}/var/lib/tee-monitor/journal/journal.jsonl{{- end }}
{{- define "tee-monitor.journalDir" -}}/var/lib/tee-monitor/journal{{- end }}
{{- define "tee-monitor.spoolDir" -}}/var/lib/tee-monitor/spool{{- end }}
{{- define "tee-monitor.storeDir" -}}/var/lib/tee-monitor/store{{- end }}
{{- /* Sibling directories, never one mounted inside another: kubelet's atomic ConfigMap/Secret writer owns its
mount point's content. */}}
{{- define "tee-monitor.exporterConfigDir" -}}/etc/tee-exporter/config{{- end }}
{{- define "tee-monitor.policyDir" -}}/etc/tee-exporter/policy{{- end }}
{{- define "tee-monitor.auditConfigDir" -}}/etc/tee-audit/config{{- end }}
{{- define "tee-monitor.webConfigDir" -}}/etc/tee-exporter/web{{- end }}
{{- define "tee-monitor.evidenceDir" -}}/var/lib/tee-attestation/evidence{{- end }}
{{- define "tee-monitor.collateralDir" -}}/var/lib/tee-attestation/collateral{{- end }}
{{- define "tee-monitor.attestationLogDir" -}}/var/log/tee-monitor/attestation-service{{- end }}
{{- define "tee-monitor.kbsLogDir" -}}/var/log/tee-monitor/kbs{{- end }}
{{- define "tee-monitor.qgsSocketDir" -}}/host/run/tdx-qgs{{- end }}
{{- define "tee-monitor.secretsDir" -}}/etc/tee-audit/secrets{{- end }}

{{/* A Kubernetes object name from a file name: lower case, [a-z0-9-], at most 63 characters. */}}
{{- define "tee-monitor.fileObjectName" -}}
{{- $base := .file | base | trimSuffix ".json" | trimSuffix ".yml" | trimSuffix ".yaml" | lower }}
{{- $base = regexReplaceAll "[^a-z0-9-]+" $base "-" }}
{{- $name := printf "%s-%s-%s" .fullname .kind $base }}
{{- if gt (len $name) 63 }}
{{- /* Truncated names could collide: keep them apart with a digest of the file name. */}}
{{- $name = printf "%s-%s" ($name | trunc 54 | trimSuffix "-") (sha256sum .file | trunc 8) }}
{{- end }}
{{- $name }}
{{- end }}

{{/* The Secret holding the checkpoint signing key; the chart references it and never creates it. */}}
{{- define "tee-monitor.signingKeySecretName" -}}
{{- default (printf "%s-signing-key" (include "tee-monitor.fullname" .)) .Values.audit.signingKeySecret.name }}
{{- end }}

{{/* The local store is on when asked for, and always when there is no Elasticsearch (one sink is required). */}}
{{- define "tee-monitor.localStore" -}}
{{- if or .Values.audit.localStore (not .Values.audit.elasticsearch.enabled) }}true{{ end }}
{{- end }}
