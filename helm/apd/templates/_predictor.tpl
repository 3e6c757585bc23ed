{{/* The model container of a predictor (stable or RawDeployment canary). Call with (dict "ctx" $ "storageUri" uri), optionally "containerName". */}}
{{- define "apd.predictorModel" -}}
{{ with .containerName }}name: {{ . }}
{{ end -}}
modelFormat:
  name: apd-detector
  version: "1"
runtime: {{ include "apd.runtimeName" .ctx }}
protocolVersion: v2
storageUri: {{ .storageUri | quote }}
resources:
  {{- toYaml .ctx.Values.predictor.resources | nindent 2 }}
{{- $tmp := .ctx.Values.predictor.tmpVolume.enabled }}
securityContext:
  {{- toYaml (merge (dict "readOnlyRootFilesystem" $tmp) (omit .ctx.Values.containerSecurityContext "readOnlyRootFilesystem")) | nindent 2 }}
{{- if $tmp }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end }}
{{- end }}
{{/* Pod-level fields of a predictor: those of every KServe component, and the payload logger. */}}
{{- define "apd.predictorPod" -}}
{{ include "apd.kservePod" . }}
{{- if .Values.logger.enabled }}
logger:
  mode: {{ .Values.logger.mode }}
  url: {{ include "apd.logger.url" . | quote }}
{{- end }}
{{- end }}
{{/*
Pod-level fields of every KServe component (predictor, canary, explainer): the service account that lists the S3
Secret (the storage initializer reads models with it), pull secrets, scheduling, /tmp. The volumes come last: the
explainer appends its API keys' volume to them (auth.enabled).
*/}}
{{- define "apd.kservePod" -}}
serviceAccountName: {{ include "apd.serviceAccountName" . }}
{{- with include "apd.imagePullSecrets" . }}
{{ . }}
{{- end }}
{{- with .Values.predictor.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.predictor.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .Values.predictor.tmpVolume.enabled }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: {{ .Values.predictor.tmpVolume.sizeLimit }}
{{- end }}
{{- end }}
{{/*
APD_SERVING__THREADS: runtime.threads, or with 0 the predictor's CPU limit in whole cores (rounded down, at least 1)
divided by runtime.workers, so that one worker per pod runs as many inference threads as the pod has cores; without
a CPU limit 0 (the server then takes the cores it may run on).
*/}}
{{- define "apd.runtime.threads" -}}
{{- $r := .Values.runtime }}
{{- $cpu := toString (dig "limits" "cpu" "" .Values.predictor.resources) }}
{{- if gt (int $r.threads) 0 }}
{{- $r.threads }}
{{- else if $cpu }}
{{- $cores := ternary (divf (trimSuffix "m" $cpu | float64) 1000) (float64 $cpu) (hasSuffix "m" $cpu) }}
{{- max 1 (floor (divf $cores $r.workers) | int) }}
{{- else }}0
{{- end }}
{{- end }}
{{/*
The PromQL query KEDA scales the predictor on (predictor.keda.enabled): predictor.keda.query, or by default the images
all the predictor's pods score per second, from the series of the chart's PodMonitor (job "<namespace>/<fullname>-
predictor", as the alert rules read them). apd_preprocess_seconds counts each image decoded and scored, not the
answers the result cache gives.
*/}}
{{- define "apd.keda.query" -}}
{{- $job := printf "%s/%s-predictor" .Release.Namespace (include "apd.fullname" .) }}
{{- default (printf "sum(rate(apd_preprocess_seconds_count{job=%q}[2m]))" $job) .Values.predictor.keda.query }}
{{- end }}
