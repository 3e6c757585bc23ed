{{/* Chart name, overridable with nameOverride. */}}
{{- define "apd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: "<release>-<chart>", or the release name alone when it already contains the chart name.
Truncated to 63 characters (DNS label limit).
*/}}
{{- define "apd.fullname" -}}
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

{{/* "<chart>-<version>" for the helm.sh/chart label. */}}
{{- define "apd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "apd.labels" -}}
helm.sh/chart: {{ include "apd.chart" . }}
{{ include "apd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: apd
{{- end }}

{{/* The two immutable selector labels; workloads add app.kubernetes.io/component to tell themselves apart. */}}
{{- define "apd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "apd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: apd.labels plus app.kubernetes.io/component. Call with (dict "ctx" $ "component" "x"). */}}
{{- define "apd.componentLabels" -}}
{{ include "apd.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Selector of one component's pods. Call with (dict "ctx" $ "component" "x"). */}}
{{- define "apd.componentSelectorLabels" -}}
{{ include "apd.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Service account of the predictor pods. */}}
{{- define "apd.serviceAccountName" -}}
{{- if .Values.predictor.serviceAccount.create }}
{{- default (printf "%s-predictor" (include "apd.fullname" .)) .Values.predictor.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.predictor.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Name of the ServingRuntime. */}}
{{- define "apd.runtimeName" -}}
{{- default (printf "%s-runtime" (include "apd.fullname" .)) .Values.runtime.name }}
{{- end }}

{{/* "registry/repository:tag" of a project image. Call with (dict "ctx" $ "image" .Values.images.serving). */}}
{{- define "apd.image" -}}
{{- $tag := default .ctx.Chart.AppVersion .image.tag }}
{{- if .ctx.Values.images.registry }}
{{- printf "%s/%s:%s" (trimSuffix "/" .ctx.Values.images.registry) .image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/* "registry/repository:tag" of a third-party image value ({registry, repository, tag}). */}}
{{- define "apd.externalImage" -}}
{{- printf "%s/%s:%s" .registry .repository .tag }}
{{- end }}

{{/* True (non-empty) in KServe's Knative-based mode. */}}
{{- define "apd.serverless" -}}
{{- if has .Values.inferenceService.deploymentMode (list "Serverless" "Knative") }}true{{ end }}
{{- end }}

{{/* Name of the S3 credentials Secret. */}}
{{- define "apd.s3.secretName" -}}
{{- default (printf "%s-s3" (include "apd.fullname" .)) .Values.s3.existingSecret }}
{{- end }}

{{/* host:port of the S3 endpoint: the chart's MinIO when enabled, else s3.endpoint. */}}
{{- define "apd.s3.endpoint" -}}
{{- if .Values.minio.enabled }}
{{- printf "%s-minio.%s.svc.%s:9000" (include "apd.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- else }}
{{- required "s3.endpoint is required when minio.enabled is false" .Values.s3.endpoint }}
{{- end }}
{{- end }}

{{/* Whether the S3 endpoint is reached over HTTPS ("true"/"false"). */}}
{{- define "apd.s3.https" -}}
{{- if .Values.minio.enabled }}false{{ else }}{{ .Values.s3.useHttps }}{{ end }}
{{- end }}

{{/* The S3 endpoint as a URL (MLflow, boto3). */}}
{{- define "apd.s3.url" -}}
{{- printf "%s://%s" (ternary "https" "http" (eq (include "apd.s3.https" .) "true")) (include "apd.s3.endpoint" .) }}
{{- end }}

{{/* APD_S3__* environment of the project's processes; credentials from the S3 Secret. */}}
{{- define "apd.s3.env" -}}
- name: APD_S3__ENDPOINT
  value: {{ include "apd.s3.endpoint" . | quote }}
- name: APD_S3__SECURE
  value: {{ include "apd.s3.https" . | quote }}
{{- if .Values.s3.region }}
- name: APD_S3__REGION
  value: {{ .Values.s3.region | quote }}
{{- end }}
- name: APD_S3__ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "apd.s3.secretName" . }}
      key: AWS_ACCESS_KEY_ID
- name: APD_S3__SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "apd.s3.secretName" . }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}

{{/* MLflow tracking URI: the chart's server when enabled, else mlflow.externalTrackingUri (may be empty). */}}
{{- define "apd.mlflow.trackingUri" -}}
{{- if .Values.mlflow.enabled }}
{{- printf "http://%s-mlflow.%s.svc.%s:5000" (include "apd.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- else }}
{{- .Values.mlflow.externalTrackingUri }}
{{- end }}
{{- end }}

{{/* Environment of MLflow clients and server for s3:// artifacts (boto3): endpoint, region, credentials. */}}
{{- define "apd.mlflow.s3Env" -}}
- name: MLFLOW_S3_ENDPOINT_URL
  value: {{ include "apd.s3.url" . | quote }}
{{- if not .Values.s3.verifySsl }}
- name: MLFLOW_S3_IGNORE_TLS
  value: "true"
{{- end }}
{{- with .Values.s3.region }}
- name: AWS_DEFAULT_REGION
  value: {{ . | quote }}
{{- end }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ include "apd.s3.secretName" . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "apd.s3.secretName" . }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}

{{/* URL the payload logger posts to. */}}
{{- define "apd.logger.url" -}}
{{- if .Values.logger.url }}
{{- .Values.logger.url }}
{{- else if .Values.sink.enabled }}
{{- printf "http://%s-sink.%s.svc.%s" (include "apd.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- else }}
{{- fail "logger.enabled needs logger.url or sink.enabled (the chart's payload sink): set one of them, or logger.enabled=false to log no payloads" }}
{{- end }}
{{- end }}

{{/* Writable scratch space for containers with a read-only root filesystem: volume and mount. */}}
{{- define "apd.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end }}
{{- define "apd.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* APD_AUTH__* of the model server and the web page (auth.enabled): the keys file where apd.auth.volumeMount puts it. */}}
{{- define "apd.auth.env" -}}
- name: APD_AUTH__ENABLED
  value: "true"
- name: APD_AUTH__KEYS_FILE
  value: /etc/apd/auth/keys
- name: APD_AUTH__RATE_PER_SECOND
  value: {{ .Values.auth.ratePerSecond | quote }}
- name: APD_AUTH__BURST
  value: {{ .Values.auth.burst | quote }}
{{- end }}

{{/* The keys file's mount: read-only, the whole folder (no subPath), so that Secret updates reach the pod. */}}
{{- define "apd.auth.volumeMount" -}}
- name: api-keys
  mountPath: /etc/apd/auth
  readOnly: true
{{- end }}

{{/* The keys file's volume: auth.secretKey of the Secret auth.existingSecret, as the file "keys". */}}
{{- define "apd.auth.volume" -}}
- name: api-keys
  secret:
    secretName: {{ required "auth.enabled needs auth.existingSecret: a Secret with the keys file (NAME:SHA256HEX lines of `apd auth hash-key`), e.g. kubectl create secret generic apd-api-keys --from-file=keys=keys.txt" .Values.auth.existingSecret }}
    items:
      - key: {{ .Values.auth.secretKey }}
        path: keys
{{- end }}

{{/* imagePullSecrets of a pod spec, or nothing. Use as: with include "apd.imagePullSecrets" . -> nindent. */}}
{{- define "apd.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets -}}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- end }}

{{/* NetworkPolicy peer: the Prometheus pods. */}}
{{- define "apd.prometheusPeer" -}}
- namespaceSelector:
    matchLabels:
      {{- toYaml .Values.networkPolicy.prometheusNamespaceLabels | nindent 6 }}
  podSelector:
    matchLabels:
      {{- toYaml .Values.networkPolicy.prometheusPodLabels | nindent 6 }}
{{- end }}
