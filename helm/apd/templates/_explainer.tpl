{{/*
The explainer component (spec.explainer): `apd explain` (Grad-CAM, torch) in the component image, a custom container
that KServe runs beside the predictor with its own resources and scaling. KServe's storage initializer downloads
STORAGE_URI into /mnt/models, with the credentials of the service account it shares with the predictor; KServe
appends --predictor_host and --http_port to the arguments (the explainer computes its answers itself).
Call with (dict "ctx" $ "storageUri" uri): the model the predictor's spec names (a Serverless canary's new one).
*/}}
{{- define "apd.explainer" -}}
{{- $ctx := .ctx }}
{{- $e := $ctx.Values.explainer }}
{{- $tmp := $ctx.Values.predictor.tmpVolume.enabled }}
{{- $serverless := include "apd.serverless" $ctx -}}
{{ include "apd.kservePod" $ctx }}
{{- if $ctx.Values.auth.enabled }}
{{- /* apd.kservePod ends with its volumes: the keys file's volume joins them */}}
{{- if not $tmp }}
volumes:
{{- end }}
{{- include "apd.auth.volume" $ctx | nindent 2 }}
{{- end }}
minReplicas: {{ $e.minReplicas }}
maxReplicas: {{ $e.maxReplicas }}
{{- if $ctx.Values.predictor.keda.enabled }}
{{- /* The ISVC's autoscalerClass keda holds for every component, and KServe refuses scaleMetric under it. */}}
autoScaling:
  metrics:
    - type: Resource
      resource:
        name: {{ $e.scaleMetric }}
        target:
          type: Utilization
          averageUtilization: {{ $e.scaleTarget }}
{{- else }}
scaleMetric: {{ $e.scaleMetric }}
scaleTarget: {{ $e.scaleTarget }}
{{- end }}
{{- if and $ctx.Values.canary.enabled $serverless }}
canaryTrafficPercent: {{ $ctx.Values.canary.trafficPercent }}
{{- end }}
containers:
  - name: kserve-container
    image: {{ include "apd.image" (dict "ctx" $ctx "image" $ctx.Values.images.components) }}
    imagePullPolicy: {{ $ctx.Values.images.pullPolicy }}
    command: ["apd"]
    args:
      - explain
      - --model_name
      - {{ $ctx.Values.predictor.modelName | quote }}
      - --model_uri
      - /mnt/models
      - --http_port
      - "8080"
    env:
      # What KServe's storage initializer downloads into /mnt/models (the same model as the predictor's).
      - name: STORAGE_URI
        value: {{ .storageUri | quote }}
      - name: APD_SERVING__DOWNLOAD_DIR
        value: /tmp/serving
      - name: APD_DATA_DIR
        value: /tmp/data
      - name: APD_LOGGING__FORMAT
        value: json
      # torch's threads (Grad-CAM).
      - name: OMP_NUM_THREADS
        value: {{ $e.threads | quote }}
      - name: HOME
        value: /tmp
      - name: MPLCONFIGDIR
        value: /tmp/matplotlib
      {{- if $ctx.Values.auth.enabled }}
      {{- include "apd.auth.env" $ctx | nindent 6 }}
      {{- end }}
      {{- with $e.env }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    ports:
      - name: {{ ternary "http1" "http" (not (empty $serverless)) }}
        containerPort: 8080
        protocol: TCP
    readinessProbe:
      httpGet:
        path: /v2/models/{{ $ctx.Values.predictor.modelName }}/ready
        port: 8080
      periodSeconds: 10
      failureThreshold: 3
    resources:
      {{- toYaml $e.resources | nindent 6 }}
    securityContext:
      {{- toYaml (merge (dict "readOnlyRootFilesystem" $tmp) (omit $ctx.Values.containerSecurityContext "readOnlyRootFilesystem")) | nindent 6 }}
    {{- if or $tmp $ctx.Values.auth.enabled }}
    volumeMounts:
      {{- if $tmp }}
      - name: tmp
        mountPath: /tmp
      {{- end }}
      {{- if $ctx.Values.auth.enabled }}
      {{- include "apd.auth.volumeMount" $ctx | nindent 6 }}
      {{- end }}
    {{- end }}
{{- end }}
