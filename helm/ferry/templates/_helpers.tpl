{{/* Names and labels. */}}
{{- define "ferry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ferry.fullname" -}}
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

{{- define "ferry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ferry.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ferry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ferry.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ferry.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image: digest wins over the tag; the default tag is the appVersion,
     "-cuda" for the CUDA image. */}}
{{- define "ferry.image" -}}
{{- $v := .Values.image }}
{{- if $v.digest }}
{{- printf "%s@%s" $v.repository $v.digest }}
{{- else }}
{{- $tag := $v.tag | default (printf "%s%s" .Chart.AppVersion (ternary "-cuda" "" .Values.gpu.enabled)) }}
{{- printf "%s:%s" $v.repository $tag }}
{{- end }}
{{- end }}

{{/* --device: cuda when a GPU is asked for, else cpu. */}}
{{- define "ferry.device" -}}
{{- .Values.ferry.device | default (ternary "cuda" "cpu" .Values.gpu.enabled) }}
{{- end }}

{{/* Where secrets are mounted; flags name these paths, never the secrets'
     contents. */}}
{{- define "ferry.tlsDir" -}}/etc/ferry/tls{{- end }}
{{- define "ferry.clientCADir" -}}/etc/ferry/client-ca{{- end }}
{{- define "ferry.authDir" -}}/etc/ferry/auth{{- end }}
{{- define "ferry.testClientDir" -}}/etc/ferry/test-client{{- end }}

{{/* The startup probe's tries: ceil(maxLoadSeconds / 10), one every 10 s. */}}
{{- define "ferry.startupTries" -}}
{{- div (add .Values.model.maxLoadSeconds 9) 10 }}
{{- end }}

{{/* preStop sleep + drain + margin: the kubelet's SIGKILL must come after
     ferry's drain has ended. */}}
{{- define "ferry.gracePeriod" -}}
{{- add .Values.drain.preStopSleepSeconds (ceil .Values.ferry.drainSeconds | int) .Values.drain.marginSeconds }}
{{- end }}

{{/* The pod-level security context, shared by the server and the test pod. */}}
{{- define "ferry.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "ferry.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: {{ .Values.securityContext.readOnlyRootFilesystem }}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Access modes that one node at a time can mount. */}}
{{- define "ferry.modelClaimIsSingleNode" -}}
{{- $single := false }}
{{- range .Values.model.pvc.accessModes }}
{{- if or (eq . "ReadWriteOnce") (eq . "ReadWriteOncePod") }}{{ $single = true }}{{ end }}
{{- end }}
{{- if and (eq .Values.model.source "pvc") $single }}true{{ end }}
{{- end }}

{{- define "ferry.modelClaimName" -}}
{{- .Values.model.pvc.existingClaim | default (printf "%s-model" (include "ferry.fullname" .)) }}
{{- end }}

{{/* Settings that cannot work together fail the render, with the reason.
     (Types, ranges and enums are values.schema.json's.) */}}
{{- define "ferry.validate" -}}
{{- $v := .Values }}
{{- if and $v.autoscaling.keda.enabled $v.autoscaling.hpa.enabled }}
{{- fail "autoscaling.keda and autoscaling.hpa are both enabled: KEDA makes its own HorizontalPodAutoscaler, and two autoscalers on one Deployment fight; enable one" }}
{{- end }}
{{- if lt (int $v.ferry.batch) (int $v.ferry.slots) }}
{{- fail (printf "ferry.batch (%v tokens per step) must be at least ferry.slots (%v): each running request decodes a token per step" $v.ferry.batch $v.ferry.slots) }}
{{- end }}
{{- if eq $v.ferry.grpcPort $v.ferry.metricsPort }}
{{- fail "ferry.grpcPort and ferry.metricsPort must differ" }}
{{- end }}
{{- $device := include "ferry.device" . }}
{{- if and $v.gpu.enabled (not (hasPrefix "cuda" $device)) }}
{{- fail (printf "gpu.enabled asks for a GPU but ferry.device is %q: use cuda[:N][,...] (or turn gpu.enabled off)" $device) }}
{{- end }}
{{- if and (hasPrefix "cuda" $device) (not $v.gpu.enabled) }}
{{- fail (printf "ferry.device %q needs a GPU: set gpu.enabled (the pod would get no device)" $device) }}
{{- end }}
{{- $src := $v.model.source }}
{{- if eq $src "pvc" }}
{{- if and (not $v.model.pvc.existingClaim) (not $v.model.pvc.create) }}
{{- fail "model.source is pvc: set model.pvc.existingClaim or model.pvc.create" }}
{{- end }}
{{- if and $v.model.pvc.existingClaim $v.model.pvc.create }}
{{- fail "model.pvc.existingClaim and model.pvc.create are both set: use the claim or create one, not both" }}
{{- end }}
{{- end }}
{{- if and (ne $src "pvc") (or $v.model.pvc.existingClaim $v.model.pvc.create) }}
{{- fail (printf "model.pvc is set but model.source is %s: exactly one model source" $src) }}
{{- end }}
{{- if and (eq $src "hostPath") (not $v.model.hostPath.path) }}
{{- fail "model.source is hostPath: set model.hostPath.path" }}
{{- end }}
{{- if and (ne $src "hostPath") $v.model.hostPath.path }}
{{- fail (printf "model.hostPath.path is set but model.source is %s: exactly one model source" $src) }}
{{- end }}
{{- if eq $src "image" }}
{{- if not $v.model.image.reference }}
{{- fail "model.source is image: set model.image.reference" }}
{{- end }}
{{- if not (semverCompare ">=1.31.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "model.source image mounts an OCI image volume, which needs Kubernetes >= 1.31 (this is %s); use model.source initCopy to copy the model out of the image instead" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- end }}
{{- if and (ne $src "image") $v.model.image.reference }}
{{- fail (printf "model.image.reference is set but model.source is %s: exactly one model source" $src) }}
{{- end }}
{{- if and (eq $src "initCopy") (not $v.model.initCopy.image) }}
{{- fail "model.source is initCopy: set model.initCopy.image" }}
{{- end }}
{{- if and (ne $src "initCopy") $v.model.initCopy.image }}
{{- fail (printf "model.initCopy.image is set but model.source is %s: exactly one model source" $src) }}
{{- end }}
{{- if include "ferry.modelClaimIsSingleNode" . }}
{{- $scaled := or $v.autoscaling.keda.enabled $v.autoscaling.hpa.enabled }}
{{- if or (gt (int $v.replicaCount) 1) (and $v.autoscaling.keda.enabled (gt (int $v.autoscaling.keda.maxReplicas) 1)) (and $v.autoscaling.hpa.enabled (gt (int $v.autoscaling.hpa.maxReplicas) 1)) }}
{{- fail (printf "the model claim is %v (one node at a time) but more than one pod may run: use replicas 1 without an autoscaler, or a ReadOnlyMany claim" $v.model.pvc.accessModes) }}
{{- end }}
{{- if ne $v.strategy.type "Recreate" }}
{{- fail (printf "the model claim is %v (one node at a time): a RollingUpdate's new pod on another node waits for the volume forever; set strategy.type Recreate" $v.model.pvc.accessModes) }}
{{- end }}
{{- end }}
{{- if $v.tls.enabled }}
{{- if not $v.tls.secretName }}
{{- fail "tls.enabled: set tls.secretName (a kubernetes.io/tls Secret)" }}
{{- end }}
{{- end }}
{{- if $v.tls.clientCA.enabled }}
{{- if not $v.tls.enabled }}
{{- fail "tls.clientCA.enabled (mutual TLS) needs tls.enabled" }}
{{- end }}
{{- if not $v.tls.clientCA.secretName }}
{{- fail "tls.clientCA.enabled: set tls.clientCA.secretName" }}
{{- end }}
{{- if not $v.tls.clientCA.testClientSecretName }}
{{- fail "tls.clientCA.enabled: set tls.clientCA.testClientSecretName (a client certificate for helm test)" }}
{{- end }}
{{- end }}
{{- if and $v.auth.enabled (not $v.auth.secretName) }}
{{- fail "auth.enabled: set auth.secretName" }}
{{- end }}
{{- $pdb := $v.podDisruptionBudget }}
{{- if and $pdb.enabled (eq (toString $pdb.maxUnavailable) "") (eq (toString $pdb.minAvailable) "") }}
{{- fail "podDisruptionBudget: set maxUnavailable or minAvailable" }}
{{- end }}
{{- if and $pdb.enabled (ne (toString $pdb.maxUnavailable) "") (ne (toString $pdb.minAvailable) "") }}
{{- fail "podDisruptionBudget: set one of maxUnavailable and minAvailable, not both" }}
{{- end }}
{{- if and $v.autoscaling.hpa.enabled (gt (int $v.autoscaling.hpa.minReplicas) (int $v.autoscaling.hpa.maxReplicas)) }}
{{- fail "autoscaling.hpa.minReplicas is above maxReplicas" }}
{{- end }}
{{- if and $v.autoscaling.keda.enabled (gt (int $v.autoscaling.keda.minReplicas) (int $v.autoscaling.keda.maxReplicas)) }}
{{- fail "autoscaling.keda.minReplicas is above maxReplicas" }}
{{- end }}
{{- end }}
