{{/* Names and labels. */}}
{{- define "mandate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mandate.fullname" -}}
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

{{- define "mandate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mandate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mandate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: authorizer
{{- end }}

{{- define "mandate.labels" -}}
helm.sh/chart: {{ include "mandate.chart" . }}
app.kubernetes.io/name: {{ include "mandate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mandate
{{- end }}

{{- define "mandate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mandate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mandate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The ConfigMap holding the policy files, and the Secret holding the chain key. */}}
{{- define "mandate.policiesConfigMap" -}}
{{- default (printf "%s-policies" (include "mandate.fullname" .)) .Values.policies.existingConfigMap }}
{{- end }}

{{- define "mandate.chainKeySecret" -}}
{{- default (printf "%s-chain-key" (include "mandate.fullname" .)) .Values.chainKey.existingSecret }}
{{- end }}

{{- define "mandate.chainKeyFile" -}}
{{- printf "%s/%s" (trimSuffix "/" .Values.mandate.chainKeyDir) .Values.chainKey.secretKey }}
{{- end }}

{{/* Redis: which source, if any, feeds --redis. */}}
{{- define "mandate.redisName" -}}
{{- printf "%s-redis" (include "mandate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mandate.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "mandate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: chain-store
{{- end }}

{{/*
NetworkPolicy peers from a map of named peers (networkPolicy.grpcFrom, metricsFrom), as a
YAML list in key order; a peer set to null is dropped. Empty when no peer is left.
*/}}
{{- define "mandate.networkPolicyPeers" -}}
{{- $peers := list }}
{{- range $name, $peer := . }}
{{- if $peer }}
{{- $peers = append $peers $peer }}
{{- end }}
{{- end }}
{{- if $peers }}
{{- toYaml $peers }}
{{- end }}
{{- end }}

{{- define "mandate.redisMode" -}}
{{- if .Values.redis.url }}url
{{- else if .Values.redis.existingSecret }}secret
{{- else if .Values.redis.internal.enabled }}internal
{{- else }}none
{{- end }}
{{- end }}

{{/*
Refuse what cannot work: replicas (or workers) that would each keep their own delegation
chains, or a NetworkPolicy no proxy passes. The schema leaves these to the templates, whose
messages say what to set; they hold under --skip-schema-validation too.
*/}}
{{- define "mandate.validate" -}}
{{- $redis := include "mandate.redisMode" . }}
{{- $several := or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled }}
{{- if and $several (eq $redis "none") }}
{{- fail "mandate: more than one replica (replicaCount > 1 or autoscaling.enabled) shares delegation chains, so it needs a chain store: set redis.url or redis.existingSecret to your Redis (production, helm/examples/values-production.yaml), or add -f helm/mandate/values-trial.yaml for the in-chart trial Redis (not for production), or replicaCount=1 (chains in-process, helm/examples/values-dev.yaml)" }}
{{- end }}
{{- if and (gt (int .Values.mandate.workers) 1) (eq $redis "none") }}
{{- fail "mandate: mandate.workers > 1 needs a shared chain store: set redis.url or redis.existingSecret, or add -f helm/mandate/values-trial.yaml (trials only)" }}
{{- end }}
{{- if and .Values.policies.existingConfigMap .Values.policies.files }}
{{- fail "mandate: set either policies.existingConfigMap or policies.files, not both" }}
{{- end }}
{{- if eq (int .Values.mandate.grpcPort) (int .Values.mandate.metricsPort) }}
{{- fail "mandate: mandate.grpcPort and mandate.metricsPort must differ" }}
{{- end }}
{{- if and .Values.networkPolicy.enabled (not (include "mandate.networkPolicyPeers" .Values.networkPolicy.grpcFrom)) }}
{{- fail "mandate: networkPolicy.grpcFrom admits no one: no proxy could ask Mandate, and every governed request would be refused. Name the proxies' pods there, or set networkPolicy.enabled=false" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (lt (int .Values.autoscaling.minReplicas) 2) }}
{{- fail "mandate: autoscaling.minReplicas must be at least 2 (failOpen: false means no authorizer, no traffic)" }}
{{- end }}
{{- end }}
