{{/*
NetworkPolicy pieces (templates/network/networkpolicies.yaml). Every policy the chart renders
lists both policy types, so a pod it selects may do only what some policy allows. The rules are
built as data and printed with toYaml; an empty peer list leaves `to`/`from` out (any address).
*/}}

{{/* Label a pod carries to get a Kafka client's rights (DNS, the brokers): `<name>: "true"`. */}}
{{- define "loginpipe.networkPolicy.kafkaClientLabel" -}}
{{- printf "%s-kafka-client" (include "loginpipe.fullname" . | trunc 50 | trimSuffix "-") -}}
{{- end -}}

{{/* Label a pod carries to reach Redis (DNS, Redis' port): `<name>: "true"`. */}}
{{- define "loginpipe.networkPolicy.redisClientLabel" -}}
{{- printf "%s-redis-client" (include "loginpipe.fullname" . | trunc 50 | trimSuffix "-") -}}
{{- end -}}

{{/* Label a pod carries to call the schema registry (DNS, its API): `<name>: "true"`. */}}
{{- define "loginpipe.networkPolicy.registryClientLabel" -}}
{{- printf "%s-registry-client" (include "loginpipe.fullname" . | trunc 47 | trimSuffix "-") -}}
{{- end -}}

{{/* Egress rule: the schema registry's API (the chart's own pods, or schemaRegistry.url's port
to any address: 443 for https, 80 for http, unless the URL names one). */}}
{{- define "loginpipe.networkPolicy.registryEgress" -}}
{{- if .Values.schemaRegistry.enabled -}}
{{- $peers := list (dict "podSelector" (dict "matchLabels" (include "loginpipe.selectorLabels" (dict "ctx" . "component" "schema-registry") | fromYaml))) -}}
{{- include "loginpipe.networkPolicy.rule" (dict "key" "to" "peers" $peers "ports" (list 8080)) -}}
{{- else -}}
{{- $url := .Values.schemaRegistry.url -}}
{{- $port := regexFind "^https?://[^/:]+:([0-9]+)" $url | regexFind "[0-9]+$" -}}
{{- $port = $port | default (ternary "443" "80" (hasPrefix "https://" $url)) -}}
{{- include "loginpipe.networkPolicy.rule" (dict "key" "to" "peers" list "ports" (list (int $port))) -}}
{{- end -}}
{{- end -}}

{{/* A rule: (dict "peers" LIST "key" "to"|"from" "ports" LIST-OF-INT "protocols" LIST). */}}
{{- define "loginpipe.networkPolicy.rule" -}}
{{- $ports := list -}}
{{- range $port := .ports -}}
{{- range $proto := ($.protocols | default (list "TCP")) -}}
{{- $ports = append $ports (dict "protocol" $proto "port" (int $port)) -}}
{{- end -}}
{{- end -}}
{{- $rule := dict "ports" $ports -}}
{{- with .peers }}{{ $_ := set $rule $.key . }}{{ end -}}
{{- toYaml (list $rule) -}}
{{- end -}}

{{/* Egress rule: cluster DNS, UDP and TCP 53. */}}
{{- define "loginpipe.networkPolicy.dnsEgress" -}}
{{- include "loginpipe.networkPolicy.rule" (dict "key" "to" "peers" .Values.networkPolicy.dns.to "ports" (list 53) "protocols" (list "UDP" "TCP")) -}}
{{- end -}}

{{/* The Kafka brokers' client ports: strimzi mode's listener, or those of an external bootstrap. */}}
{{- define "loginpipe.networkPolicy.kafkaPorts" -}}
{{- $ports := list -}}
{{- if eq .Values.kafka.mode "strimzi" -}}
{{- $ports = list (ternary 9093 9092 .Values.kafka.strimzi.listener.tls) -}}
{{- else if .Values.networkPolicy.kafka.ports -}}
{{- $ports = .Values.networkPolicy.kafka.ports -}}
{{- else -}}
{{- range splitList "," .Values.kafka.external.bootstrap -}}
{{- $port := regexFind "[0-9]+$" (trim .) -}}
{{- if $port }}{{ $ports = append $ports (int $port) }}{{ end -}}
{{- end -}}
{{- end -}}
{{- toJson (uniq $ports) -}}
{{- end -}}

{{/* Egress rule: the Kafka brokers (strimzi mode: the pods of the release's Kafka). */}}
{{- define "loginpipe.networkPolicy.kafkaEgress" -}}
{{- $peers := .Values.networkPolicy.kafka.to -}}
{{- if eq .Values.kafka.mode "strimzi" -}}
{{- $peers = list (dict "podSelector" (dict "matchLabels" (dict "strimzi.io/cluster" (include "loginpipe.kafka.clusterName" .) "strimzi.io/kind" "Kafka"))) -}}
{{- end -}}
{{- include "loginpipe.networkPolicy.rule" (dict "key" "to" "peers" $peers "ports" (include "loginpipe.networkPolicy.kafkaPorts" . | fromJsonArray)) -}}
{{- end -}}

{{/* Redis' ports: 6379 (internal), or that of redis.external.url (6379 if it names none). */}}
{{- define "loginpipe.networkPolicy.redisPorts" -}}
{{- if eq .Values.redis.mode "internal" -}}
[6379]
{{- else if .Values.networkPolicy.redis.ports -}}
{{- toJson .Values.networkPolicy.redis.ports -}}
{{- else -}}
{{- $hostPort := regexFind "^rediss?://([^@/]*@)?(\\[[^]]*\\]|[^:/]+)(:[0-9]+)?" .Values.redis.external.url -}}
{{- $port := regexFind ":[0-9]+$" $hostPort | trimPrefix ":" -}}
[{{ $port | default "6379" }}]
{{- end -}}
{{- end -}}

{{/* Egress rule: Redis (internal mode: the release's Redis pod). */}}
{{- define "loginpipe.networkPolicy.redisEgress" -}}
{{- $peers := .Values.networkPolicy.redis.to -}}
{{- if eq .Values.redis.mode "internal" -}}
{{- $peers = list (dict "podSelector" (dict "matchLabels" (include "loginpipe.selectorLabels" (dict "ctx" . "component" "redis") | fromYaml))) -}}
{{- end -}}
{{- include "loginpipe.networkPolicy.rule" (dict "key" "to" "peers" $peers "ports" (include "loginpipe.networkPolicy.redisPorts" . | fromJsonArray)) -}}
{{- end -}}

{{/* Ingress rule: Prometheus scraping a metrics port. Call with (dict "ctx" $ "port" N). */}}
{{- define "loginpipe.networkPolicy.metricsIngress" -}}
{{- include "loginpipe.networkPolicy.rule" (dict "key" "from" "peers" .ctx.Values.networkPolicy.metrics.from "ports" (list .port)) -}}
{{- end -}}

{{/* Egress rule: the Kubernetes API server (strimzi mode's entity operator). */}}
{{- define "loginpipe.networkPolicy.kubeAPIServerEgress" -}}
{{- include "loginpipe.networkPolicy.rule" (dict "key" "to" "peers" .Values.networkPolicy.kubeAPIServer.to "ports" .Values.networkPolicy.kubeAPIServer.ports) -}}
{{- end -}}
