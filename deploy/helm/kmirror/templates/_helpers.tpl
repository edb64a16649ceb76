{{/* Chart name, 63 characters at most. */}}
{{- define "kmirror.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "kmirror.fullname" -}}
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

{{- define "kmirror.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kmirror.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kmirror.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kmirror.labels" -}}
helm.sh/chart: {{ include "kmirror.chart" . }}
{{ include "kmirror.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kmirror
{{- end }}

{{- define "kmirror.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kmirror.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kmirror.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{- define "kmirror.configMapName" -}}
{{- .Values.existingConfigMap | default (printf "%s-config" (include "kmirror.fullname" .)) }}
{{- end }}

{{/*
The user's configuration as a dict: .Values.config is YAML in values, or a
string of YAML (--set-file config=kmirror.yaml).
*/}}
{{- define "kmirror.userConfig" -}}
{{- $cfg := .Values.config }}
{{- if kindIs "string" $cfg }}
{{- $cfg = fromYaml $cfg }}
{{- if hasKey $cfg "Error" }}
{{- fail (printf "config: not valid YAML: %s" (get $cfg "Error")) }}
{{- end }}
{{- end }}
{{- if not (kindIs "map" $cfg) }}
{{- fail "config: expected the kmirror configuration as a mapping (clusters, flows, ...) or as a string of YAML" }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
The configuration the ConfigMap holds: the user's, with http.listen set to
the pod's IP unless the user set it. A user's http.listen must serve the
probes: not "off", not loopback, on admin.port.
*/}}
{{- define "kmirror.config" -}}
{{- $cfg := include "kmirror.userConfig" . | fromYaml }}
{{- if not $cfg }}
{{- fail "set config (the kmirror configuration: clusters and flows, see docs/configuration.md) or existingConfigMap" }}
{{- end }}
{{- $http := dict }}
{{- if hasKey $cfg "http" }}
{{- $http = get $cfg "http" | default dict }}
{{- if not (kindIs "map" $http) }}
{{- fail "config.http: expected a mapping" }}
{{- end }}
{{- end }}
{{- $port := .Values.admin.port | int }}
{{- if hasKey $http "listen" }}
{{- $listen := get $http "listen" | toString }}
{{- if eq (lower $listen) "off" }}
{{- fail "config.http.listen: \"off\" turns off the admin server, which the chart's probes, Service and ServiceMonitor need; remove it to let the chart listen on the pod's IP" }}
{{- end }}
{{- if regexMatch "^(127\\.[0-9.]+|localhost|\\[::1\\]):" $listen }}
{{- fail (printf "config.http.listen: %q listens on loopback only, where the kubelet's probes cannot reach it; remove it to let the chart listen on the pod's IP" $listen) }}
{{- end }}
{{- if not (hasSuffix (printf ":%d" $port) $listen) }}
{{- fail (printf "config.http.listen: %q must use admin.port %d, which the probes, the Service and the ServiceMonitor use" $listen $port) }}
{{- end }}
{{- else }}
{{- $_ := set $http "listen" (ternary (printf "[${POD_IP}]:%d" $port) (printf ":%d" $port) .Values.admin.listenOnPodIP) }}
{{- end }}
{{- $_ := set $cfg "http" $http }}
{{- toYaml $cfg }}
{{- end }}

{{/* HTTP or HTTPS: admin.scheme, else HTTPS when the configuration sets http.tls. */}}
{{- define "kmirror.scheme" -}}
{{- if .Values.admin.scheme }}
{{- upper .Values.admin.scheme }}
{{- else if .Values.existingConfigMap }}
{{- "HTTP" }}
{{- else }}
{{- $cfg := include "kmirror.userConfig" . | fromYaml }}
{{- $http := get $cfg "http" | default dict }}
{{- ternary "HTTPS" "HTTP" (and (kindIs "map" $http) (hasKey $http "tls")) }}
{{- end }}
{{- end }}

{{/* The readiness path: readinessProbe.path, else /readyz with one replica and /healthz with several. */}}
{{/*
Whether a flow runs with warm standbys (scale_out: false): one pod copies
it and the others answer 503 on /readyz while they wait. Found in config;
set standbys for a configuration in existingConfigMap.
*/}}
{{- define "kmirror.standbys" -}}
{{- $s := .Values.standbys }}
{{- $cfg := .Values.config | default dict }}
{{- if kindIs "string" $cfg }}
{{- $cfg = fromYaml $cfg }}
{{- end }}
{{- range (dig "flows" list $cfg) }}
{{- if and (kindIs "map" .) (hasKey . "scale_out") (eq (toString .scale_out) "false") }}
{{- $s = true }}
{{- end }}
{{- end }}
{{- ternary "true" "" (eq (toString $s) "true") }}
{{- end }}

{{/* Readiness: /readyz, but /healthz for several replicas with standbys. */}}
{{- define "kmirror.readinessPath" -}}
{{- .Values.readinessProbe.path | default (ternary "/healthz" "/readyz" (and (eq (include "kmirror.standbys" .) "true") (gt (int .Values.replicaCount) 1))) }}
{{- end }}

{{/* Whether to create the PodDisruptionBudget. */}}
{{- define "kmirror.pdbEnabled" -}}
{{- $e := .Values.podDisruptionBudget.enabled }}
{{- if kindIs "invalid" $e }}
{{- ternary "true" "" (gt (int .Values.replicaCount) 1) }}
{{- else if $e }}
{{- "true" }}
{{- end }}
{{- end }}

{{/* GOMEMLIMIT: see goMemLimit in values.yaml. */}}
{{- define "kmirror.goMemLimit" -}}
{{- $v := .Values.goMemLimit | default "" | toString }}
{{- if eq $v "auto" }}
{{- $limit := "" }}
{{- with .Values.resources }}{{ with .limits }}{{ $limit = .memory | default "" | toString }}{{ end }}{{ end }}
{{- if regexMatch "^[0-9]+(Mi|Gi)$" $limit }}
{{- $mib := regexFind "^[0-9]+" $limit | int }}
{{- if hasSuffix "Gi" $limit }}{{ $mib = mul $mib 1024 }}{{ end }}
{{- printf "%dMiB" (div (mul $mib 9) 10) }}
{{- end }}
{{- else }}
{{- $v }}
{{- end }}
{{- end }}
