{{/* The optional schema registry (Apicurio Registry, KafkaSQL storage). */}}

{{- define "loginpipe.registry.fullname" -}}
{{- printf "%s-schema-registry" (include "loginpipe.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The registry's Confluent-compatible API, as the consumer and the hook Job dial it; empty if none. */}}
{{- define "loginpipe.registry.url" -}}
{{- if .Values.schemaRegistry.url -}}
{{- .Values.schemaRegistry.url -}}
{{- else if .Values.schemaRegistry.enabled -}}
{{- printf "http://%s:8080/apis/ccompat/v7" (include "loginpipe.registry.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The registry's settings of its Kafka clients: APICURIO_KAFKA_COMMON_* reach every client it
makes (journal producer and consumer, admin), as tests/integration/test_schema_registry.py
measured on a SASL_SSL broker. */}}
{{- define "loginpipe.registry.kafkaEnv" -}}
- name: APICURIO_KAFKASQL_BOOTSTRAP_SERVERS
  value: {{ include "loginpipe.kafka.bootstrap" . | quote }}
- name: APICURIO_KAFKA_COMMON_SECURITY_PROTOCOL
  value: {{ include "loginpipe.kafka.securityProtocol" . | quote }}
{{- if include "loginpipe.kafka.sasl" . }}
- name: APICURIO_KAFKA_COMMON_SASL_MECHANISM
  value: SCRAM-SHA-512
# Strimzi's User Operator writes the whole JAAS line into the KafkaUser's Secret, mounted as
# files; Kafka's DirectoryConfigProvider reads it from there, so the password is never an env
# value. The value reaches Kafka as ${secret:<dir>:sasl.jaas.config} after two unescapings:
# Kubernetes turns $$ into $ (its $(VAR) syntax), then the registry's configuration
# (SmallRye Config) turns $${ into a literal ${ instead of expanding it.
- name: APICURIO_KAFKA_COMMON_CONFIG_PROVIDERS
  value: secret
- name: APICURIO_KAFKA_COMMON_CONFIG_PROVIDERS_SECRET_CLASS
  value: org.apache.kafka.common.config.provider.DirectoryConfigProvider
- name: APICURIO_KAFKA_COMMON_SASL_JAAS_CONFIG
  value: "$$$${secret:{{ include "loginpipe.kafka.credentialsMountPath" . }}:sasl.jaas.config}"
{{- end }}
{{- if include "loginpipe.kafka.tls" . }}
- name: APICURIO_KAFKA_COMMON_SSL_TRUSTSTORE_TYPE
  value: PEM
- name: APICURIO_KAFKA_COMMON_SSL_TRUSTSTORE_LOCATION
  value: {{ include "loginpipe.kafka.caMountPath" . }}/ca.crt
{{- end }}
{{- end -}}
