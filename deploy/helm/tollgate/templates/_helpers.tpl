{{/* The release's base name: the release name, or release-chart when they differ. */}}
{{- define "tollgate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tollgate.labels" -}}
app.kubernetes.io/name: tollgate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "tollgate.selector" -}}
app.kubernetes.io/name: tollgate
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{/* repository:tag, or repository@digest when a digest is given. */}}
{{- define "tollgate.imageRef" -}}
{{- if .digest -}}
{{- printf "%s@%s" .repository .digest -}}
{{- else -}}
{{- printf "%s:%s" .repository .tag -}}
{{- end -}}
{{- end -}}

{{- define "tollgate.image" -}}
{{- include "tollgate.imageRef" (dict "repository" .Values.image.repository "tag" (.Values.image.tag | default .Chart.AppVersion) "digest" .Values.image.digest) -}}
{{- end -}}

{{- define "tollgate.tlsSecret" -}}
{{- if .Values.tls.certManager.enabled -}}
{{- printf "%s-tls" (include "tollgate.fullname" .) -}}
{{- else -}}
{{- required "tls.secretName: name the kubernetes.io/tls Secret you created (or set tls.certManager.enabled)" .Values.tls.secretName -}}
{{- end -}}
{{- end -}}

{{- define "tollgate.backendHost" -}}
{{- if .Values.backend.host -}}
{{- .Values.backend.host -}}
{{- else if .Values.backend.deploy -}}
{{- printf "%s-backend" (include "tollgate.fullname" .) -}}
{{- else -}}
{{- fail "backend.host: name your application's Service (or set backend.deploy)" -}}
{{- end -}}
{{- end -}}

{{- define "tollgate.redisSecret" -}}
{{- .Values.redis.existingSecret | default (printf "%s-redis" (include "tollgate.fullname" .)) -}}
{{- end -}}

{{/* Refuse settings that would quietly grant more than the limits say. */}}
{{- define "tollgate.checks" -}}
{{- if and (eq .Values.limits.store "memory") (or (gt (int .Values.replicas) 1) .Values.autoscaling.enabled) -}}
{{- fail "limits.store=memory counts in each pod, so every replica would grant the whole limit: set limits.store=redis for replicas > 1 or autoscaling" -}}
{{- end -}}
{{- if and (eq .Values.limits.store "redis") (not .Values.redis.deploy) (not .Values.redis.existingSecret) (not .Values.redis.url) -}}
{{- fail "limits.store=redis: set redis.deploy, redis.existingSecret or redis.url" -}}
{{- end -}}
{{- include "tollgate.extraEnvChecks" . -}}
{{- end -}}

{{/* extraEnv may not name what the chart sets itself, under any of the names the
service reads it by: as an env entry twice (one hides the other, and an upgrade that
drops one drops both) or as a flag (the flag wins, so the variable would be ignored).
Said by the values that set them instead. tests/deploy/test_helm.py derives these names
from the services' own flags, so a flag that gains a name fails the test until it is here. */}}
{{- define "tollgate.extraEnvChecks" -}}
{{- $authz := list "AUTHZ_CONFIG" "AUTHZ_CHECK_CONFIG" "AUTHZ_GRPC_ADDRESS" "AUTHZ_HTTP_ADDRESS" "AUTHZ_METRICS_ADDRESS" "AUTHZ_DRAIN_SECONDS" "AUTHZ_LOG_FORMAT" "LOG_FORMAT" "AUTHZ_DECISION_LOG" "AUTHZ_DECISION_LOG_ALLOW_SAMPLE_RATE" "AUTHZ_DECISION_LOG_CLAIMS" "AUTHZ_OTLP_ENDPOINT" "OTEL_EXPORTER_OTLP_ENDPOINT" "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" "AUTHZ_LIMITS_REDIS_URL" "OTEL_SERVICE_NAME" -}}
{{- $ratelimit := list "RATELIMIT_CONFIG" "RUNTIME_ROOT" "RUNTIME_SUBDIRECTORY" "RUNTIME_APPDIRECTORY" "RATELIMIT_GRPC_ADDRESS" "GRPC_UDS" "GRPC_HOST" "GRPC_PORT" "RATELIMIT_METRICS_ADDRESS" "USE_PROMETHEUS" "PROMETHEUS_ADDR" "RATELIMIT_RESPONSE_HEADERS" "LIMIT_RESPONSE_HEADERS_ENABLED" "RESPONSE_HEADERS_ENABLED" "RATELIMIT_STORE_FAILURE_MODE" "RATELIMIT_REDIS_URL" "REDIS_URL" "RATELIMIT_DRAIN_SECONDS" "RATELIMIT_LOG_FORMAT" "LOG_FORMAT" "RATELIMIT_OTLP_ENDPOINT" "OTEL_EXPORTER_OTLP_ENDPOINT" "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" "OTEL_SERVICE_NAME" -}}
{{- range .Values.extraEnv.authz -}}
{{- if has .name $authz -}}
{{- fail (printf "extraEnv.authz: %s is set by the chart (from its own values: policy, limits, decisionLog, tracing, metrics, envoy)" .name) -}}
{{- end -}}
{{- end -}}
{{- range .Values.extraEnv.ratelimit -}}
{{- if has .name $ratelimit -}}
{{- fail (printf "extraEnv.ratelimit: %s is set by the chart (from its own values: limits, tracing, metrics)" .name) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.extraEnv.ratelimit (ne .Values.layout "grpc") -}}
{{- fail "extraEnv.ratelimit: ratelimit-service runs in layout grpc only; in layout http authz-service counts the limits (extraEnv.authz, AUTHZ_LIMITS_*)" -}}
{{- end -}}
{{- end -}}

{{- define "tollgate.securityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
seccompProfile: {type: RuntimeDefault}
{{- end -}}

{{- define "tollgate.probes" -}}
{{- $cmd := .command -}}
{{- $p := .probes -}}
startupProbe:
  exec: {command: {{ toJson $cmd.ready }}}
  periodSeconds: {{ $p.startup.periodSeconds }}
  timeoutSeconds: {{ $p.startup.timeoutSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
readinessProbe:
  exec: {command: {{ toJson $cmd.ready }}}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
livenessProbe:
  exec: {command: {{ toJson $cmd.live }}}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
{{- end -}}
