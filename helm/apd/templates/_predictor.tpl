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
