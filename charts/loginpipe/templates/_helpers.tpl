{{/*
Names
*/}}
{{- define "loginpipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Fullname: the release name when it contains the chart name, else <release>-<chart>.
Component names append a suffix, so keep it short enough for them (-aggregator, -kafka-pool ...).
*/}}
{{- define "loginpipe.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "loginpipe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels: the full app.kubernetes.io set, helm.sh/chart and commonLabels, from one place.
Call with (dict "ctx" $ "component" "consumer"); component may be empty.
*/}}
{{- define "loginpipe.labels" -}}
{{- $ctx := .ctx -}}
helm.sh/chart: {{ include "loginpipe.chart" $ctx }}
{{ include "loginpipe.selectorLabels" . }}
app.kubernetes.io/version: {{ include "loginpipe.versionLabel" $ctx | quote }}
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
app.kubernetes.io/part-of: loginpipe
{{- with $ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The image tag (without a digest) as a valid label value. */}}
{{- define "loginpipe.versionLabel" -}}
{{- include "loginpipe.tagLabel" (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Any image tag (a digest after "@" dropped) as a valid label value. */}}
{{- define "loginpipe.tagLabel" -}}
{{- $tag := . | toString | splitList "@" | first -}}
{{- regexReplaceAll "^[^A-Za-z0-9]+|[^A-Za-z0-9]+$" (regexReplaceAll "[^-A-Za-z0-9_.]" $tag "_" | trunc 63) "" -}}
{{- end -}}

{{/*
Labels of the Redis objects: the app's set with Redis' own image tag as app.kubernetes.io/version,
so a new loginpipe image does not touch Redis. Call with (dict "ctx" $ "pod" bool): the pod
template's labels (pod true) also leave out helm.sh/chart, so that only a change to Redis itself
(image, redis.conf, password source) rolls the Redis pod, never a chart or app release.
*/}}
{{- define "loginpipe.redis.labels" -}}
{{- $ctx := .ctx -}}
{{- if not .pod }}
helm.sh/chart: {{ include "loginpipe.chart" $ctx }}
{{- end }}
{{ include "loginpipe.selectorLabels" (dict "ctx" $ctx "component" "redis") }}
{{- with include "loginpipe.tagLabel" $ctx.Values.redis.internal.image.tag }}
app.kubernetes.io/version: {{ . | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ $ctx.Release.Service }}
app.kubernetes.io/part-of: loginpipe
{{- with $ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Labels of the Strimzi custom resources (Kafka, KafkaNodePool, KafkaTopic, KafkaUser). Strimzi
copies a CR's labels onto the pods, Services and other objects it creates, except those matching
STRIMZI_LABELS_EXCLUSION_PATTERN (default `^app.kubernetes.io/(?!part-of).*`), and sets its own
`app.kubernetes.io/part-of: strimzi-<cluster>`. So none of the chart's app.kubernetes.io/* labels
reach what Strimzi creates: select those objects by Strimzi's own labels (`strimzi.io/cluster`,
`strimzi.io/name`, `strimzi.io/kind`), never by app.kubernetes.io/instance. Any copied label that
changes between releases (helm.sh/chart, commonLabels) would roll the Kafka brokers, so the CRs
carry only the selector labels, part-of and managed-by; no version, no helm.sh/chart, no
commonLabels. Call with (dict "ctx" $ "component" "kafka").
*/}}
{{- define "loginpipe.strimziLabels" -}}
{{ include "loginpipe.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: loginpipe
{{- end -}}

{{/*
Selector labels: name + instance + component only. Immutable: never add anything that changes
between releases (no version, no chart).
*/}}
{{- define "loginpipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "loginpipe.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/* Metadata annotations shared by every object (commonAnnotations), or nothing. */}}
{{- define "loginpipe.annotations" -}}
{{- with .Values.commonAnnotations -}}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}

{{/*
Image reference from (dict "image" .Values.image "default" .Chart.AppVersion):
repository:tag, repository:tag@digest, repository@digest; a tag that already carries
"@sha256:..." (skaffold's tag@digest) is used as it is.
*/}}
{{- define "loginpipe.imageRef" -}}
{{- /* skaffold passes "tag@digest"; on kind, unpushed images may have an empty digest */ -}}
{{- $tag := .image.tag | default .default | toString | trimSuffix "@" -}}
{{- $digest := .image.digest | default "" -}}
{{- if contains "@" $tag -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- else if and $digest $tag -}}
{{- printf "%s:%s@%s" .image.repository $tag $digest -}}
{{- else if $digest -}}
{{- printf "%s@%s" .image.repository $digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "loginpipe.image" -}}
{{- include "loginpipe.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) -}}
{{- end -}}

{{- define "loginpipe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "loginpipe.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------- Kafka */}}

{{/*
The Kafka CR is named after the release (<fullname>), so what Strimzi derives from it reads once:
Service <fullname>-kafka-bootstrap, pods <fullname>-<pool>-<id> (<fullname>-kafka-0 with the
default pool name), <fullname>-entity-operator, Secret <fullname>-cluster-ca-cert.
*/}}
{{- define "loginpipe.kafka.clusterName" -}}
{{- include "loginpipe.fullname" . -}}
{{- end -}}

{{- define "loginpipe.kafka.poolName" -}}
{{- .Values.kafka.strimzi.nodePoolName -}}
{{- end -}}

{{/* The object name of a KafkaTopic: the topic's name made a valid object name. */}}
{{- define "loginpipe.kafka.topicObjectName" -}}
{{- . | lower | replace "_" "-" | replace "." "-" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Replicas of one topic, from (dict "ctx" $ "key" "input"): the value if set; else, on an upgrade,
what the installed KafkaTopic has (the Topic Operator cannot change a topic's replication factor
without Cruise Control, which this chart does not run, so adding Kafka nodes must not change it);
else, on the first install, min(3, kafka.strimzi.replicas).
*/}}
{{- define "loginpipe.kafka.topicReplicas" -}}
{{- $t := index .ctx.Values.topics .key -}}
{{- if not (kindIs "invalid" $t.replicas) -}}
{{- $t.replicas | int -}}
{{- else -}}
{{- $installed := include "loginpipe.kafka.installedTopicReplicas" (dict "ctx" .ctx "key" .key) -}}
{{- $installed | default (include "loginpipe.kafka.replicationFactor" .ctx) | int -}}
{{- end -}}
{{- end -}}

{{/* spec.replicas of the installed KafkaTopic of (dict "ctx" $ "key" "input"), or empty. */}}
{{- define "loginpipe.kafka.installedTopicReplicas" -}}
{{- $t := index .ctx.Values.topics .key -}}
{{- $existing := lookup "kafka.strimzi.io/v1" "KafkaTopic" .ctx.Release.Namespace (include "loginpipe.kafka.topicObjectName" $t.name) -}}
{{- if and $existing (dig "spec" "replicas" nil $existing) -}}
{{- dig "spec" "replicas" nil $existing | int -}}
{{- end -}}
{{- end -}}

{{/*
A role's Strimzi KafkaUser (and Secret) name: <fullname>-<role>, for generator, consumer,
aggregator and tester (helm test). Call with (dict "ctx" $ "role" "consumer").
*/}}
{{- define "loginpipe.kafka.userName" -}}
{{- printf "%s-%s" (include "loginpipe.fullname" .ctx) .role -}}
{{- end -}}

{{/*
A role's ACLs as the KafkaUser lists them: files/kafka-acls.json (generated from
loginpipe.rights by `make chart-acl`) with the release's topic and group names.
*/}}
{{- define "loginpipe.kafka.acls" -}}
{{- $v := .ctx.Values -}}
{{- $acls := .ctx.Files.Get "files/kafka-acls.json" | fromJson -}}
{{- $names := dict "{input}" $v.topics.input.name "{processed}" $v.topics.processed.name "{errors}" $v.topics.errors.name "{consumer_group}" $v.consumer.group "{aggregator_group}" $v.aggregator.group "{replayed}" $v.topics.replayed.name "{replay_transactional_id}" (include "loginpipe.replay.transactionalId" .ctx) "{registry_journal}" $v.schemaRegistry.topics.journal "{registry_snapshots}" $v.schemaRegistry.topics.snapshots "{registry_events}" $v.schemaRegistry.topics.events -}}
{{- $out := list -}}
{{- range (index $acls .role) -}}
{{- $name := .resource.name -}}
{{- range $placeholder, $value := $names }}{{- $name = replace $placeholder $value $name -}}{{- end -}}
{{- $out = append $out (dict "resource" (dict "type" .resource.type "name" $name "patternType" .resource.patternType) "operations" .operations "host" .host) -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{- define "loginpipe.kafka.scram" -}}
{{- if and (eq .Values.kafka.mode "strimzi") (eq .Values.kafka.strimzi.listener.authentication "scram-sha-512") -}}true{{- end -}}
{{- end -}}

{{/* Bootstrap servers the clients use. */}}
{{- define "loginpipe.kafka.bootstrap" -}}
{{- if eq .Values.kafka.mode "external" -}}
{{- .Values.kafka.external.bootstrap -}}
{{- else -}}
{{- printf "%s-kafka-bootstrap:%d" (include "loginpipe.kafka.clusterName" .) (ternary 9093 9092 .Values.kafka.strimzi.listener.tls | int) -}}
{{- end -}}
{{- end -}}

{{/*
Bootstrap servers as a client in another namespace must dial them (KEDA's operator dials from its
own): <cluster>-kafka-bootstrap.<namespace>.svc:<port>. An external bootstrap is used as given.
*/}}
{{- define "loginpipe.kafka.bootstrapFromAnyNamespace" -}}
{{- if eq .Values.kafka.mode "external" -}}
{{- .Values.kafka.external.bootstrap -}}
{{- else -}}
{{- printf "%s-kafka-bootstrap.%s.svc:%d" (include "loginpipe.kafka.clusterName" .) .Release.Namespace (ternary 9093 9092 .Values.kafka.strimzi.listener.tls | int) -}}
{{- end -}}
{{- end -}}

{{- define "loginpipe.kafka.securityProtocol" -}}
{{- if eq .Values.kafka.mode "external" -}}
{{- .Values.kafka.external.securityProtocol -}}
{{- else -}}
{{- $sasl := eq .Values.kafka.strimzi.listener.authentication "scram-sha-512" -}}
{{- if .Values.kafka.strimzi.listener.tls -}}
{{- ternary "SASL_SSL" "SSL" $sasl -}}
{{- else -}}
{{- ternary "SASL_PLAINTEXT" "PLAINTEXT" $sasl -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "loginpipe.kafka.sasl" -}}
{{- if hasPrefix "SASL_" (include "loginpipe.kafka.securityProtocol" .) -}}true{{- end -}}
{{- end -}}

{{- define "loginpipe.kafka.tls" -}}
{{- if has (include "loginpipe.kafka.securityProtocol" .) (list "SSL" "SASL_SSL") -}}true{{- end -}}
{{- end -}}

{{- define "loginpipe.kafka.saslMechanism" -}}
{{- if eq .Values.kafka.mode "external" -}}{{ .Values.kafka.external.saslMechanism }}{{- else -}}SCRAM-SHA-512{{- end -}}
{{- end -}}

{{/* Secret (name, key) of the SASL password. */}}
{{/* Call with (dict "ctx" $ "role" "consumer"): a Strimzi user has one Secret per role. */}}
{{- define "loginpipe.kafka.passwordSecretName" -}}
{{- if eq .ctx.Values.kafka.mode "external" -}}{{ .ctx.Values.kafka.external.existingSecret }}{{- else -}}{{ include "loginpipe.kafka.userName" . }}{{- end -}}
{{- end -}}

{{- define "loginpipe.kafka.passwordSecretKey" -}}
{{- if eq .Values.kafka.mode "external" -}}{{ .Values.kafka.external.passwordKey }}{{- else -}}password{{- end -}}
{{- end -}}

{{/* Secret (name, key) of the CA bundle that signs the brokers' certificates, or empty. */}}
{{- define "loginpipe.kafka.caSecretName" -}}
{{- if eq .Values.kafka.mode "external" -}}
{{- if include "loginpipe.kafka.tls" . }}{{ .Values.kafka.external.caSecret.name }}{{ end -}}
{{- else if .Values.kafka.strimzi.listener.tls -}}
{{- printf "%s-cluster-ca-cert" (include "loginpipe.kafka.clusterName" .) -}}
{{- end -}}
{{- end -}}

{{- define "loginpipe.kafka.caSecretKey" -}}
{{- if eq .Values.kafka.mode "external" -}}{{ .Values.kafka.external.caSecret.key }}{{- else -}}ca.crt{{- end -}}
{{- end -}}

{{- define "loginpipe.kafka.caMountPath" -}}/etc/loginpipe/kafka-ca{{- end -}}

{{/* Replication factor and min.insync.replicas derived from the node count: 1→1/1, 2→2/1, ≥3→3/2. */}}
{{- define "loginpipe.kafka.replicationFactor" -}}
{{- min 3 (int .Values.kafka.strimzi.replicas) -}}
{{- end -}}

{{- define "loginpipe.kafka.minIsr" -}}
{{- max 1 (sub (int (include "loginpipe.kafka.replicationFactor" .)) 1) -}}
{{- end -}}

{{/* env entries for Kafka credentials: (dict "ctx" $ "role" "consumer"), each role its own. */}}
{{- define "loginpipe.kafka.env" -}}
{{- $ctx := .ctx -}}
{{- if include "loginpipe.kafka.sasl" $ctx }}
{{- if eq $ctx.Values.kafka.mode "external" }}
# The external user's name, like its password, is a file of the mounted Secret.
- name: LOGINPIPE_KAFKA_SASL_USERNAME_FILE
  value: {{ include "loginpipe.kafka.credentialsMountPath" $ctx }}/username
{{- else }}
- name: LOGINPIPE_KAFKA_SASL_USERNAME
  value: {{ include "loginpipe.kafka.userName" . | quote }}
{{- end }}
# The password is a file of the mounted Secret (loginpipe.kafka.volumes), never an env value.
- name: LOGINPIPE_KAFKA_SASL_PASSWORD_FILE
  value: {{ include "loginpipe.kafka.credentialsMountPath" $ctx }}/password
{{- end }}
{{- end -}}

{{- define "loginpipe.kafka.credentialsMountPath" -}}/etc/loginpipe/kafka-credentials{{- end -}}

{{/* Volumes of a role's pod: the CA bundle, its password (and an external user's name). (dict "ctx" $ "role" ...) */}}
{{- define "loginpipe.kafka.volumes" -}}
{{- $ctx := .ctx -}}
{{- with include "loginpipe.kafka.caSecretName" $ctx }}
- name: kafka-ca
  secret:
    secretName: {{ . }}
    items:
      - key: {{ include "loginpipe.kafka.caSecretKey" $ctx }}
        path: ca.crt
{{- end }}
{{- if include "loginpipe.kafka.sasl" $ctx }}
- name: kafka-credentials
  secret:
    secretName: {{ include "loginpipe.kafka.passwordSecretName" . }}
    defaultMode: 0400
    items:
      - key: {{ include "loginpipe.kafka.passwordSecretKey" $ctx }}
        path: password
      {{- if eq $ctx.Values.kafka.mode "external" }}
      - key: {{ $ctx.Values.kafka.external.usernameKey }}
        path: username
      {{- end }}
{{- end }}
{{- end -}}

{{- define "loginpipe.kafka.volumeMounts" -}}
{{- $ctx := .ctx -}}
{{- if include "loginpipe.kafka.caSecretName" $ctx }}
- name: kafka-ca
  mountPath: {{ include "loginpipe.kafka.caMountPath" $ctx }}
  readOnly: true
{{- end }}
{{- if include "loginpipe.kafka.sasl" $ctx }}
- name: kafka-credentials
  mountPath: {{ include "loginpipe.kafka.credentialsMountPath" $ctx }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* ---------------------------------------------------------------- Redis */}}

{{- define "loginpipe.redis.fullname" -}}
{{- printf "%s-redis" (include "loginpipe.fullname" .) -}}
{{- end -}}

{{/*
A redis-cli command line inside the Redis pod, authenticated as the default user: redis-cli reads
the password from REDISCLI_AUTH, set for that one command from the mounted Secret's file (so it
is in no env value of the pod and not on the command line). Call with the arguments, e.g.
(include "loginpipe.redis.cli" "ping").
*/}}
{{- define "loginpipe.redis.cli" -}}
REDISCLI_AUTH="$(cat /etc/redis-secrets/password)" redis-cli -h 127.0.0.1 -p 6379 {{ . }}
{{- end -}}

{{- define "loginpipe.redis.url" -}}
{{- if eq .Values.redis.mode "external" -}}
{{- .Values.redis.external.url -}}
{{- else -}}
{{- printf "redis://%s:6379/0" (include "loginpipe.redis.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Secret (name, key) holding the Redis password, or an empty name for none. */}}
{{- define "loginpipe.redis.secretName" -}}
{{- if eq .Values.redis.mode "external" -}}
{{- .Values.redis.external.existingSecret -}}
{{- else -}}
{{- .Values.redis.internal.auth.existingSecret | default (include "loginpipe.redis.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "loginpipe.redis.secretKey" -}}
{{- if eq .Values.redis.mode "external" -}}
{{- .Values.redis.external.passwordKey -}}
{{- else if .Values.redis.internal.auth.existingSecret -}}
{{- .Values.redis.internal.auth.existingSecretPasswordKey -}}
{{- else -}}
redis-password
{{- end -}}
{{- end -}}

{{/* Whether the chart renders the Secret <fullname>-redis. */}}
{{- define "loginpipe.redis.createSecret" -}}
{{- if and (eq .Values.redis.mode "internal") (not .Values.redis.internal.auth.existingSecret) -}}true{{- end -}}
{{- end -}}

{{/*
The password of the chart's Secret: the value given, else the one already in the cluster (kept
across upgrades through lookup), else a new random one.
*/}}
{{- define "loginpipe.redis.password" -}}
{{- if .Values.redis.internal.auth.password -}}
{{- .Values.redis.internal.auth.password -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "loginpipe.redis.fullname" .) -}}
{{- if and $existing (index ($existing.data | default dict) "redis-password") -}}
{{- index $existing.data "redis-password" | b64dec -}}
{{- else -}}
{{- randAlphaNum 32 -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
redis.conf as the ConfigMap carries it. The StatefulSet's checksum/config hashes this text only
(not the ConfigMap's labels), so a label change never restarts Redis.
*/}}
{{- define "loginpipe.redis.conf" -}}
port 6379
dir /data
# Durability: the aggregator's counts and Kafka positions are written together by one Lua
# script; the append-only file keeps both (everysec: at most the last second is lost, and
# then counts and positions go back together).
appendonly yes
appendfsync {{ .Values.redis.internal.appendfsync }}
appenddirname appendonlydir
# No RDB snapshots besides the AOF.
save ""
protected-mode yes
# Never evict: the counts key has no TTL, and the aggregator refuses an allkeys-* policy.
maxmemory-policy noeviction
{{- with .Values.redis.internal.extraConfig }}
{{- if regexMatch "(?m)^\\s*maxmemory-policy\\s+allkeys-" . }}
{{- fail "redis.internal.extraConfig: maxmemory-policy allkeys-* may evict the aggregator's counts (and the aggregator refuses to start on it); use noeviction or a volatile-* policy" }}
{{- end }}
{{ . }}
{{- end }}
{{- end -}}

{{- define "loginpipe.redis.env" -}}
{{- if include "loginpipe.redis.caSecretName" . }}
- name: LOGINPIPE_REDIS_SSL_CA_LOCATION
  value: {{ printf "%s/ca.crt" (include "loginpipe.redis.caMountPath" .) | quote }}
{{- end }}
{{- if include "loginpipe.redis.aclUsers" . }}
- name: LOGINPIPE_REDIS_USERNAME
  value: loginpipe-aggregator
{{- else if and (eq .Values.redis.mode "external") .Values.redis.external.username }}
- name: LOGINPIPE_REDIS_USERNAME
  value: {{ .Values.redis.external.username | quote }}
{{- end }}
{{- if include "loginpipe.redis.passwordSecret" . }}
# The password is a file of the mounted Secret (loginpipe.redis.volumes), never an env value.
- name: LOGINPIPE_REDIS_PASSWORD_FILE
  value: /etc/loginpipe/redis-credentials/password
{{- end }}
{{- end -}}

{{/* The aggregator's Redis password: "<secret>/<key>", or empty for none. */}}
{{- define "loginpipe.redis.passwordSecret" -}}
{{- if include "loginpipe.redis.aclUsers" . -}}
{{- printf "%s/aggregator-password" (include "loginpipe.redis.usersSecretName" .) -}}
{{- else if include "loginpipe.redis.secretName" . -}}
{{- printf "%s/%s" (include "loginpipe.redis.secretName" .) (include "loginpipe.redis.secretKey" .) -}}
{{- end -}}
{{- end -}}

{{/* The aggregator's Redis CA bundle (an external rediss:// Redis): volume and mount. */}}
{{- define "loginpipe.redis.caSecretName" -}}
{{- if eq .Values.redis.mode "external" }}{{ .Values.redis.external.caSecret.name }}{{ end -}}
{{- end -}}

{{- define "loginpipe.redis.caMountPath" -}}/etc/loginpipe/redis-ca{{- end -}}

{{- define "loginpipe.redis.volumes" -}}
{{- with include "loginpipe.redis.passwordSecret" . }}
- name: redis-credentials
  secret:
    secretName: {{ (split "/" .)._0 }}
    defaultMode: 0400
    items:
      - key: {{ (split "/" .)._1 }}
        path: password
{{- end }}
{{- with include "loginpipe.redis.caSecretName" . }}
- name: redis-ca
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $.Values.redis.external.caSecret.key }}
        path: ca.crt
{{- end }}
{{- end -}}

{{- define "loginpipe.redis.volumeMounts" -}}
{{- if include "loginpipe.redis.passwordSecret" . }}
- name: redis-credentials
  mountPath: /etc/loginpipe/redis-credentials
  readOnly: true
{{- end }}
{{- if include "loginpipe.redis.caSecretName" . }}
- name: redis-ca
  mountPath: {{ include "loginpipe.redis.caMountPath" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* Whether the internal Redis has the ACL users loginpipe-aggregator and loginpipe-reader. */}}
{{- define "loginpipe.redis.aclUsers" -}}
{{- if and (eq .Values.redis.mode "internal") .Values.redis.internal.auth.aclUsers -}}true{{- end -}}
{{- end -}}

{{- define "loginpipe.redis.usersSecretName" -}}
{{- printf "%s-redis-users" (include "loginpipe.fullname" .) -}}
{{- end -}}

{{/*
A role's Redis ACL rules (files/redis-acl.json, generated from loginpipe.rights by
`make chart-acl`) on the keys under config.redisKeyPrefix.
*/}}
{{- define "loginpipe.redis.aclRules" -}}
{{- $rules := .ctx.Files.Get "files/redis-acl.json" | fromJson -}}
{{- index $rules .role | replace "{prefix}" .ctx.Values.config.redisKeyPrefix -}}
{{- end -}}

{{/* An ACL user's password in <fullname>-redis-users: kept across upgrades (lookup), else new. */}}
{{- define "loginpipe.redis.userPassword" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace (include "loginpipe.redis.usersSecretName" .ctx) -}}
{{- if and $existing (index ($existing.data | default dict) .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- randAlphaNum 32 -}}
{{- end -}}
{{- end -}}

{{/* ---------------------------------------------------------------- Config checksum */}}

{{/*
What the pods read from outside their own spec: the ConfigMap, and where the credentials come
from. A generated Redis password is not part of it (it never changes once created, and
including it would make every `helm template` differ); a password given as a value is, hashed.
*/}}
{{- define "loginpipe.configChecksum" -}}
{{- $parts := list (include (print .Template.BasePath "/configmap.yaml") .) -}}
{{- $parts = append $parts (printf "redis-secret=%s/%s" (include "loginpipe.redis.secretName" .) (include "loginpipe.redis.secretKey" .)) -}}
{{- $parts = append $parts (printf "redis-user=%s/%s" (include "loginpipe.redis.aclUsers" .) .Values.redis.external.username) -}}
{{- $parts = append $parts (printf "redis-ca=%s/%s" (include "loginpipe.redis.caSecretName" .) .Values.redis.external.caSecret.key) -}}
{{- with .Values.redis.internal.auth.password }}
{{- $parts = append $parts (printf "redis-password=%s" (sha256sum .)) -}}
{{- end }}
{{- $parts = append $parts (printf "kafka-secret=%s/%s" (include "loginpipe.kafka.passwordSecretName" (dict "ctx" . "role" "consumer")) (include "loginpipe.kafka.passwordSecretKey" .)) -}}
{{- $parts = append $parts (printf "kafka-ca=%s" (include "loginpipe.kafka.caSecretName" .)) -}}
{{- join "\n" $parts | sha256sum -}}
{{- end -}}

{{/* ---------------------------------------------------------------- Validation */}}

{{/* A Prometheus duration of whole units (90s, 1m30s, 2h) in seconds; 0 when it has another form. */}}
{{- define "loginpipe.durationSeconds" -}}
{{- $d := . | toString -}}
{{- if regexMatch "^([0-9]+h)?([0-9]+m)?([0-9]+s)?$" $d -}}
{{- $h := regexFind "[0-9]+h" $d | trimSuffix "h" | default "0" | int -}}
{{- $m := regexFind "[0-9]+m" $d | trimSuffix "m" | default "0" | int -}}
{{- $s := regexFind "[0-9]+s" $d | trimSuffix "s" | default "0" | int -}}
{{- add (mul $h 3600) (mul $m 60) $s -}}
{{- else -}}0{{- end -}}
{{- end -}}

{{/*
Combinations the schema cannot express. Each message says which values to change.
*/}}
{{- define "loginpipe.validateValues" -}}
{{- $msgs := list -}}
{{- $v := .Values -}}
{{- $partitions := int $v.topics.input.partitions -}}
{{- if ne $v.autoscaling.mode "none" -}}
{{- if gt (int $v.autoscaling.maxReplicas) $partitions -}}
{{- $msgs = append $msgs (printf "autoscaling.maxReplicas (%d) is greater than topics.input.partitions (%d): a consumer group never uses more consumers than partitions, so set autoscaling.maxReplicas <= %d or raise topics.input.partitions" (int $v.autoscaling.maxReplicas) $partitions $partitions) -}}
{{- end -}}
{{- if gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas) -}}
{{- $msgs = append $msgs (printf "autoscaling.minReplicas (%d) is greater than autoscaling.maxReplicas (%d): lower autoscaling.minReplicas or raise autoscaling.maxReplicas" (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) -}}
{{- end -}}
{{- if and (eq $v.autoscaling.mode "hpa") (lt (int $v.autoscaling.minReplicas) 1) -}}
{{- $msgs = append $msgs "autoscaling.minReplicas is 0 with autoscaling.mode=hpa: a HorizontalPodAutoscaler cannot scale to zero, so set autoscaling.minReplicas >= 1 (or use autoscaling.mode=keda for scale-to-zero)" -}}
{{- end -}}
{{- else if gt (int $v.consumer.replicaCount) $partitions -}}
{{- $msgs = append $msgs (printf "consumer.replicaCount (%d) is greater than topics.input.partitions (%d): the extra consumers would sit idle, so set consumer.replicaCount <= %d or raise topics.input.partitions" (int $v.consumer.replicaCount) $partitions $partitions) -}}
{{- end -}}
{{- if and (eq $v.autoscaling.mode "hpa") (eq $v.kafka.mode "strimzi") (not $v.kafka.strimzi.kafkaExporter.enabled) -}}
{{- $msgs = append $msgs "autoscaling.mode=hpa needs kafka.strimzi.kafkaExporter.enabled=true: the HPA's External metric is built from Kafka Exporter's kafka_consumergroup_lag, so without the exporter it would never get a value; turn the exporter on, or use autoscaling.mode=keda (it reads the lag from Kafka itself) or none" -}}
{{- end -}}
{{- if eq $v.kafka.mode "external" -}}
{{- if not (trim ($v.kafka.external.bootstrap | default "")) -}}
{{- $msgs = append $msgs "kafka.mode=external needs kafka.external.bootstrap: set it to the brokers' host:port[,host:port]" -}}
{{- end -}}
{{- if and (hasPrefix "SASL_" $v.kafka.external.securityProtocol) (not $v.kafka.external.existingSecret) -}}
{{- $msgs = append $msgs (printf "kafka.external.securityProtocol=%s needs credentials: set kafka.external.existingSecret to a Secret with the keys kafka.external.usernameKey and kafka.external.passwordKey" $v.kafka.external.securityProtocol) -}}
{{- end -}}
{{- else -}}
{{- $nodes := int $v.kafka.strimzi.replicas -}}
{{- range $key := list "input" "processed" "errors" -}}
{{- $t := index $v.topics $key -}}
{{- $replicas := include "loginpipe.kafka.topicReplicas" (dict "ctx" $ "key" $key) | int -}}
{{- $installed := include "loginpipe.kafka.installedTopicReplicas" (dict "ctx" $ "key" $key) -}}
{{- if and $installed (ne (int $installed) $replicas) -}}
{{- $msgs = append $msgs (printf "topics.%s.replicas (%d) differs from the installed topic's %s: Strimzi's Topic Operator changes a topic's replication factor only through Cruise Control, which this chart does not run, so set topics.%s.replicas=%s (or leave it null to keep it) and reassign the partitions with Kafka's tools if you must" $key $replicas $installed $key $installed) -}}
{{- else if gt $replicas $nodes -}}
{{- $msgs = append $msgs (printf "topics.%s.replicas (%d) is greater than kafka.strimzi.replicas (%d): lower topics.%s.replicas or add Kafka nodes" $key $replicas $nodes $key) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* Every generated name must be a valid DNS label (63 characters), also those Strimzi derives. */ -}}
{{- $fullname := include "loginpipe.fullname" . -}}
{{- $generated := list (printf "%s-generator" $fullname) (printf "%s-consumer" $fullname) (printf "%s-aggregator" $fullname) (printf "%s-consumer-kafka" $fullname) (printf "%s-redis-0" $fullname) (printf "%s-config" $fullname) -}}
{{- if eq $v.kafka.mode "strimzi" -}}
{{- $c := include "loginpipe.kafka.clusterName" . -}}
{{- $pool := include "loginpipe.kafka.poolName" . -}}
{{- $lastId := sub (max 1 (int $v.kafka.strimzi.replicas)) 1 -}}
{{- range $suffix := list (printf "%s-%d" $pool $lastId) $pool "kafka-bootstrap" "kafka-brokers" "entity-operator" "kafka-exporter" "cluster-ca-cert" "clients-ca-cert" "cluster-operator-certs" "kafka-metrics" -}}
{{- $generated = append $generated (printf "%s-%s" $c $suffix) -}}
{{- end -}}
{{- $other := lookup "kafka.strimzi.io/v1" "KafkaNodePool" .Release.Namespace $pool -}}
{{- $owner := dig "metadata" "labels" "strimzi.io/cluster" "" ($other | default dict) -}}
{{- if and $other (ne $owner $c) -}}
{{- $msgs = append $msgs (printf "the KafkaNodePool %s already exists in namespace %s for the Kafka cluster %s: node pool names are unique per namespace, so set kafka.strimzi.nodePoolName to another name for this release" $pool .Release.Namespace $owner) -}}
{{- end -}}
{{- end -}}
{{- range $name := $generated -}}
{{- if gt (len $name) 63 -}}
{{- $msgs = append $msgs (printf "the generated name %s has %d characters, more than Kubernetes' 63: use a shorter release name, or set fullnameOverride (and a shorter kafka.strimzi.nodePoolName)" $name (len $name)) -}}
{{- end -}}
{{- end -}}
{{- if eq $v.redis.mode "external" -}}
{{- $url := trim ($v.redis.external.url | default "") -}}
{{- if not $url -}}
{{- $msgs = append $msgs "redis.mode=external needs redis.external.url: set it to redis://host:port/db (the password goes in redis.external.existingSecret)" -}}
{{- else if not (or (hasPrefix "redis://" $url) (hasPrefix "rediss://" $url)) -}}
{{- $msgs = append $msgs (printf "redis.external.url=%q is not a Redis URL: set it to redis://host:port/db or rediss://host:port/db" $url) -}}
{{- else if and $v.redis.external.caSecret.name (not (hasPrefix "rediss://" $url)) -}}
{{- $msgs = append $msgs (printf "redis.external.caSecret.name is set but redis.external.url=%q is not TLS: use rediss://host:port/db, or unset redis.external.caSecret.name" $url) -}}
{{- end -}}
{{- end -}}
{{- with $v.metrics.serviceMonitor -}}
{{- $interval := include "loginpipe.durationSeconds" .interval | int -}}
{{- $timeout := include "loginpipe.durationSeconds" .scrapeTimeout | int -}}
{{- if and .enabled (gt $timeout 0) (gt $interval 0) (gt $timeout $interval) -}}
{{- $msgs = append $msgs (printf "metrics.serviceMonitor.scrapeTimeout (%s) is longer than metrics.serviceMonitor.interval (%s): prometheus-operator skips such a ServiceMonitor and nothing is scraped; set metrics.serviceMonitor.scrapeTimeout to at most the interval" .scrapeTimeout .interval) -}}
{{- end -}}
{{- end -}}
{{- $names := list $v.topics.input.name $v.topics.processed.name $v.topics.errors.name -}}
{{- if ne (len (uniq $names)) 3 -}}
{{- $msgs = append $msgs "topics.input.name, topics.processed.name and topics.errors.name must be three different topics" -}}
{{- end -}}
{{- if and (eq $v.consumer.outputFormat "registry") (not (include "loginpipe.registry.url" .)) -}}
{{- $msgs = append $msgs "consumer.outputFormat is registry but there is no schema registry: set schemaRegistry.enabled=true (the chart's own) or schemaRegistry.url (yours), or consumer.outputFormat=json" -}}
{{- end -}}
{{- if and $v.schemaRegistry.enabled $v.schemaRegistry.url -}}
{{- $msgs = append $msgs "schemaRegistry.enabled and schemaRegistry.url are both set: the first runs the chart's own registry, the second names yours; set one" -}}
{{- end -}}
{{- if and $v.schemaRegistry.enabled (eq $v.kafka.mode "external") -}}
{{- $msgs = append $msgs "schemaRegistry.enabled needs kafka.mode=strimzi (the chart makes the registry's topics and Kafka user there); with an external Kafka run a registry of your own and set schemaRegistry.url" -}}
{{- end -}}
{{- if $msgs -}}
{{- fail (printf "\n\nVALUES ERROR (loginpipe):\n  - %s\n" (join "\n  - " $msgs)) -}}
{{- end -}}
{{- end -}}

{{/* The replay's transactional id: one per errors topic, shared by every run. */}}
{{- define "loginpipe.replay.transactionalId" -}}
{{- .Values.replay.transactionalId | default (printf "%s-replay" (include "loginpipe.fullname" .)) -}}
{{- end -}}
