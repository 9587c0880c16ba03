{{/*
One service Deployment. Call with (dict "ctx" $ "component" "consumer" "command" "consume"
"values" .Values.consumer "env" (list of {name, value}) "autoscaled" bool "redis" bool).
*/}}
{{- define "loginpipe.service.deployment" -}}
{{- $ctx := .ctx -}}
{{- $v := .values -}}
{{- $fullname := include "loginpipe.fullname" $ctx -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $fullname }}-{{ .component }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "loginpipe.labels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
  {{- with (include "loginpipe.annotations" $ctx) }}
  {{- . | nindent 2 }}
  {{- end }}
spec:
  {{- if not .autoscaled }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "loginpipe.selectorLabels" (dict "ctx" $ctx "component" .component) | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  template:
    metadata:
      labels:
        {{- include "loginpipe.labels" (dict "ctx" $ctx "component" .component) | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include "loginpipe.configChecksum" $ctx }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "loginpipe.serviceAccountName" $ctx }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      {{- with $ctx.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $ctx.Values.podSecurityContext | nindent 8 }}
      {{- if .registerFormats }}
      initContainers:
        # The registry's wire format needs the formats' ids, so they are registered before the
        # consumer starts (`loginpipe schemas register`: idempotent; it waits for a registry
        # still starting, and the pod retries after that). The install's hook Job does it too,
        # but only once every pod is ready, which this consumer would not be without it.
        - name: register-formats
          image: {{ include "loginpipe.image" $ctx | quote }}
          imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
          args: ["schemas", "register"]
          envFrom:
            - configMapRef:
                name: {{ $fullname }}-config
          env:
            # It talks to the registry only: the ConfigMap's Kafka security is switched off.
            - name: LOGINPIPE_KAFKA_SECURITY_PROTOCOL
              value: PLAINTEXT
            - name: LOGINPIPE_KAFKA_SSL_CA_LOCATION
              value: ""
            - name: LOGINPIPE_SCHEMA_REGISTRY_URL
              value: {{ include "loginpipe.registry.url" $ctx | quote }}
            - name: LOGINPIPE_SCHEMA_SUBJECT_PREFIX
              value: {{ $ctx.Values.schemaRegistry.subjectPrefix | quote }}
            - name: PYTHONDONTWRITEBYTECODE
              value: "1"
          resources:
            {{- toYaml $ctx.Values.schemaRegistry.register.resources | nindent 12 }}
          securityContext:
            {{- toYaml $ctx.Values.containerSecurityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "loginpipe.image" $ctx | quote }}
          imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
          args: [{{ .command | quote }}]
          ports:
            - name: http-metrics
              containerPort: {{ $v.port }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ $fullname }}-config
          env:
            - name: LOGINPIPE_METRICS_PORT
              value: {{ $v.port | toString | quote }}
            {{- range .env }}
            - name: {{ .name }}
              value: {{ .value | toString | quote }}
            {{- end }}
            {{- with (include "loginpipe.kafka.env" (dict "ctx" $ctx "role" .component)) }}
            {{- . | trim | nindent 12 }}
            {{- end }}
            {{- if .redis }}
            {{- with (include "loginpipe.redis.env" $ctx) }}
            {{- . | trim | nindent 12 }}
            {{- end }}
            {{- end }}
            - name: PYTHONDONTWRITEBYTECODE
              value: "1"
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: http-metrics
            {{- toYaml $v.livenessProbe | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: http-metrics
            {{- toYaml $v.readinessProbe | nindent 12 }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $ctx.Values.containerSecurityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- with (include "loginpipe.kafka.volumeMounts" (dict "ctx" $ctx "role" .component)) }}
            {{- . | trim | nindent 12 }}
            {{- end }}
            {{- if .redis }}
            {{- with (include "loginpipe.redis.volumeMounts" $ctx) }}
            {{- . | trim | nindent 12 }}
            {{- end }}
            {{- end }}
      volumes:
        # The root filesystem is read-only: /tmp is the only writable place.
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- with (include "loginpipe.kafka.volumes" (dict "ctx" $ctx "role" .component)) }}
        {{- . | trim | nindent 8 }}
        {{- end }}
        {{- if .redis }}
        {{- with (include "loginpipe.redis.volumes" $ctx) }}
        {{- . | trim | nindent 8 }}
        {{- end }}
        {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}

{{/* The Service in front of one service's metrics/health port. */}}
{{- define "loginpipe.service.service" -}}
{{- $ctx := .ctx -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "loginpipe.fullname" $ctx }}-{{ .component }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "loginpipe.labels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
  {{- $ann := merge (deepCopy (.values.service.annotations | default dict)) ($ctx.Values.commonAnnotations | default dict) }}
  {{- with $ann }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: ClusterIP
  selector:
    {{- include "loginpipe.selectorLabels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
  ports:
    - name: http-metrics
      port: {{ .values.port }}
      targetPort: http-metrics
      protocol: TCP
{{- end -}}

{{/* A PodDisruptionBudget for one service. */}}
{{- define "loginpipe.service.pdb" -}}
{{- $ctx := .ctx -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "loginpipe.fullname" $ctx }}-{{ .component }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "loginpipe.labels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
  {{- with (include "loginpipe.annotations" $ctx) }}
  {{- . | nindent 2 }}
  {{- end }}
spec:
  maxUnavailable: {{ .values.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "loginpipe.selectorLabels" (dict "ctx" $ctx "component" .component) | nindent 6 }}
{{- end -}}
