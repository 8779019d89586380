{{/*
Named templates shared by every object of the chart. Objects are rendered per service from the
blocks under .Values.services, each laid over .Values.serviceDefaults by "omni.services".
*/}}

{{- define "omni.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "omni.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "omni.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every pod of the release carries; the default-deny NetworkPolicy selects on them. */}}
{{- define "omni.releaseSelector" -}}
app.kubernetes.io/name: {{ include "omni.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Selector labels of one component. Call with (dict "root" $ "component" "cart"). */}}
{{- define "omni.selectorLabels" -}}
{{ include "omni.releaseSelector" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Standard labels of one component. Call with (dict "root" $ "component" "cart"). */}}
{{- define "omni.labels" -}}
helm.sh/chart: {{ include "omni.chart" .root }}
{{ include "omni.selectorLabels" . }}
app.kubernetes.io/part-of: omni
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end -}}

{{/*
Deep merge of two maps, returned as JSON: keys of the second win, maps merge recursively, every
other value (false, 0, "", lists, null) replaces. Sprig's mergeOverwrite skips "empty" values on
some Helm versions, which would turn `enabled: false` back into the default.
*/}}
{{- define "omni.merge" -}}
{{- $out := deepCopy (index . 0) -}}
{{- range $key, $value := (index . 1) -}}
{{- $current := index $out $key -}}
{{- if and (kindIs "map" $value) (kindIs "map" $current) -}}
{{- $_ := set $out $key (include "omni.merge" (list $current $value) | fromJson) -}}
{{- else -}}
{{- $_ := set $out $key $value -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/*
Every enabled service, resolved, as JSON: name -> the block laid over serviceDefaults, plus
  fullname        the name of its Deployment, Service, ServiceAccount, … (<release>-<name>)
  imageRef        registry/repository:tag (version: the tag without a digest)
  grpcService     the gRPC service name its health checks ask for
  port            API port (50051 gRPC, 8080 HTTP) and portName (grpc | http)
  callers         enabled services whose `calls` name it
  deployedCalls   the enabled services among its `calls` (for `callsEnv`)
  shutdownGraceSeconds, terminationGracePeriodSeconds
  databaseSecret  {name, key} of its OMNI_DATABASE_URL (when database.enabled)
Usage: {{ $services := include "omni.services" . | fromJson }}
*/}}
{{- define "omni.services" -}}
{{- $root := . -}}
{{- $fullname := include "omni.fullname" . -}}
{{- $all := dict -}}
{{- range $name, $block := .Values.services -}}
{{- $svc := include "omni.merge" (list $root.Values.serviceDefaults ($block | default dict)) | fromJson -}}
{{- $_ := set $all $name $svc -}}
{{- end -}}
{{- $enabled := dict -}}
{{- range $name, $svc := $all -}}
{{- if $svc.enabled -}}
{{- range $peer := $svc.calls -}}
{{- if not (hasKey $all $peer) -}}
{{- fail (printf "services.%s.calls names %q, which is not a block under services" $name $peer) -}}
{{- end -}}
{{- if eq $peer $name -}}
{{- fail (printf "services.%s.calls names the service itself" $name) -}}
{{- end -}}
{{- end -}}
{{- $_ := set $svc "name" $name -}}
{{- $_ := set $svc "fullname" (printf "%s-%s" $fullname $name | trunc 63 | trimSuffix "-") -}}
{{- if not $svc.grpcService -}}
{{- $_ := set $svc "grpcService" (printf "omni.%s.v1.%sService" $name (title $name)) -}}
{{- end -}}
{{- $repository := $svc.image.repository | default (printf "omni-%s" $name) -}}
{{- if $root.Values.global.image.registry -}}
{{- $repository = printf "%s/%s" (trimSuffix "/" $root.Values.global.image.registry) $repository -}}
{{- end -}}
{{- $tag := $svc.image.tag | default $root.Values.global.image.tag | default $root.Chart.AppVersion -}}
{{- $_ := set $svc "imageRef" (printf "%s:%s" $repository $tag) -}}
{{- $_ := set $svc "version" (regexReplaceAll "@.*$" $tag "") -}}
{{- $_ := set $svc "imagePullPolicy" ($svc.image.pullPolicy | default $root.Values.global.image.pullPolicy) -}}
{{- if eq $svc.protocol "http" -}}
{{- $_ := set $svc "port" 8080 -}}
{{- $_ := set $svc "portName" "http" -}}
{{- else -}}
{{- $_ := set $svc "port" 50051 -}}
{{- $_ := set $svc "portName" "grpc" -}}
{{- end -}}
{{- $grace := $svc.shutdownGraceSeconds | default $root.Values.global.shutdownGraceSeconds | int -}}
{{- $_ := set $svc "shutdownGraceSeconds" $grace -}}
{{- $_ := set $svc "terminationGracePeriodSeconds" (add $root.Values.global.preStopDelaySeconds $grace $root.Values.global.terminationMarginSeconds) -}}
{{- if $svc.database.enabled -}}
{{- $secretName := $svc.database.secretName -}}
{{- if not $secretName -}}
{{- if not $root.Values.postgresql.enabled -}}
{{- fail (printf "services.%s.database.secretName is required when postgresql.enabled=false: name an existing Secret holding the service's OMNI_DATABASE_URL" $name) -}}
{{- end -}}
{{- $secretName = printf "%s-%s-database" $fullname $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- $_ := set $svc "databaseSecret" (dict "name" $secretName "key" $svc.database.secretKey) -}}
{{- end -}}
{{- $_ := set $enabled $name $svc -}}
{{- end -}}
{{- end -}}
{{- range $name, $svc := $enabled -}}
{{- $callers := list -}}
{{- range $other, $o := $enabled -}}
{{- if has $name $o.calls -}}
{{- $callers = append $callers $other -}}
{{- end -}}
{{- end -}}
{{- $_ := set $svc "callers" $callers -}}
{{- $deployed := list -}}
{{- range $peer := $svc.calls -}}
{{- if hasKey $enabled $peer -}}
{{- $deployed = append $deployed $peer -}}
{{- end -}}
{{- end -}}
{{- $_ := set $svc "deployedCalls" $deployed -}}
{{- end -}}
{{- toJson $enabled -}}
{{- end -}}

{{/*
Pod-level securityContext of every pod of the release. Called with .Values.podSecurity (Omni's
own UID/GID) or with the in-chart PostgreSQL's or NATS's (dict "runAsUser" … "runAsGroup" … "fsGroup" …).
*/}}
{{- define "omni.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .runAsUser }}
runAsGroup: {{ .runAsGroup }}
fsGroup: {{ .fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level securityContext shared by every container of the release. */}}
{{- define "omni.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Image pull secrets, if any. */}}
{{- define "omni.imagePullSecrets" -}}
{{- with .Values.global.image.pullSecrets -}}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The NATS URL every NATS client gets, as an env entry. */}}
{{- define "omni.natsUrlEnv" -}}
{{- if .Values.global.nats.urlSecret.name }}
- name: OMNI_NATS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.global.nats.urlSecret.name }}
      key: {{ .Values.global.nats.urlSecret.key }}
{{- else if .Values.global.nats.url }}
- name: OMNI_NATS_URL
  value: {{ .Values.global.nats.url | quote }}
{{- else if .Values.nats.enabled }}
- name: OMNI_NATS_URL
  value: {{ printf "nats://%s-nats:4222" (include "omni.fullname" .) | quote }}
{{- else }}
{{- fail "global.nats.url (or global.nats.urlSecret.name) is required when nats.enabled=false" }}
{{- end }}
{{- end -}}

{{/*
Environment of one service's container (also used by its migration Job and test pod).
Call with (dict "root" $ "svc" $svc).
*/}}
{{- define "omni.env" -}}
{{- $root := .root -}}
{{- $svc := .svc -}}
{{- $fullname := include "omni.fullname" $root -}}
{{- $plain := dict
  "OMNI_METRICS_PORT" "9464"
  "OMNI_LOG_LEVEL" $root.Values.global.logLevel
  "OMNI_VERSION" $svc.version
  "OMNI_SHUTDOWN_GRACE_SECONDS" (toString $svc.shutdownGraceSeconds)
  "OTEL_SERVICE_NAME" (printf "omni-%s" $svc.name)
-}}
{{- if eq $svc.protocol "http" -}}
{{- $_ := set $plain "OMNI_HTTP_PORT" (toString $svc.port) -}}
{{- else -}}
{{- $_ := set $plain "OMNI_GRPC_PORT" (toString $svc.port) -}}
{{- end -}}
{{- range $peer := $svc.calls -}}
{{- $_ := set $plain (printf "OMNI_%s_TARGET" (upper $peer)) (printf "%s-%s:50051" $fullname $peer) -}}
{{- end -}}
{{- if $svc.callsEnv -}}
{{- $_ := set $plain $svc.callsEnv (join "," ($svc.deployedCalls | default list)) -}}
{{- end -}}
{{- if $svc.signingKeys.enabled -}}
{{- $_ := set $plain "OMNI_JWT_PRIVATE_KEYS_DIR" $svc.signingKeys.mountPath -}}
{{- end -}}
{{- if $root.Values.global.otlp.endpoint -}}
{{- $_ := set $plain "OTEL_EXPORTER_OTLP_ENDPOINT" $root.Values.global.otlp.endpoint -}}
{{- else -}}
{{- $_ := set $plain "OTEL_TRACES_EXPORTER" "none" -}}
{{- end -}}
{{- range $k, $v := $root.Values.global.env -}}
{{- $_ := set $plain $k (toString $v) -}}
{{- end -}}
{{- range $k, $v := $svc.env -}}
{{- $_ := set $plain $k (toString $v) -}}
{{- end -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
{{- range $k := keys $plain | sortAlpha }}
- name: {{ $k }}
  value: {{ get $plain $k | quote }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "service.namespace=omni,service.version=%s,deployment.environment.name=%s,k8s.namespace.name=$(POD_NAMESPACE),k8s.pod.name=$(POD_NAME),k8s.node.name=$(NODE_NAME),service.instance.id=$(POD_NAME)" $svc.version $root.Values.global.environment | quote }}
{{- if $svc.database.enabled }}
- name: OMNI_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $svc.databaseSecret.name }}
      key: {{ $svc.databaseSecret.key }}
{{- end }}
{{- if $svc.nats.enabled }}
{{- include "omni.natsUrlEnv" $root }}
{{- end }}
{{- range $k := keys ($svc.secretEnv | default dict) | sortAlpha }}
{{- $ref := get $svc.secretEnv $k }}
- name: {{ $k }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.secretName }}
      key: {{ $ref.key }}
{{- end }}
{{- end -}}

{{/* Name of the Secret holding the identity service's JWT signing keys. */}}
{{- define "omni.jwtSecretName" -}}
{{- .Values.global.jwt.existingSecret | default (printf "%s-jwt-signing-keys" (include "omni.fullname" .)) -}}
{{- end -}}

{{/*
Password of the in-chart PostgreSQL: the one already in the cluster (upgrades), else one
generated once per render and shared by every template that needs it.
*/}}
{{- define "omni.postgresql.password" -}}
{{- $memo := .Values.postgresql -}}
{{- if not (hasKey $memo "__password") -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (printf "%s-postgresql" (include "omni.fullname" .)) -}}
{{- if and $existing $existing.data (hasKey $existing.data "password") -}}
{{- $_ := set $memo "__password" (index $existing.data "password" | b64dec) -}}
{{- else -}}
{{- $_ := set $memo "__password" (randAlphaNum 32) -}}
{{- end -}}
{{- end -}}
{{- index $memo "__password" -}}
{{- end -}}

{{/* The API port's probe handler of one service. Call with (dict "svc" $svc "health" "<name>"). */}}
{{- define "omni.probeHandler" -}}
{{- if eq .svc.protocol "http" }}
httpGet:
  path: {{ .path }}
  port: http
{{- else }}
grpc:
  port: {{ .svc.port }}
  service: {{ .health | quote }}
{{- end }}
{{- end -}}

{{/* "true" when the release runs any database Job (a service's migrations or the dev bootstrap). */}}
{{- define "omni.anyMigrations" -}}
{{- $any := .Values.postgresql.enabled -}}
{{- range $name, $svc := (include "omni.services" . | fromJson) -}}
{{- if and $svc.database.enabled $svc.migrations.enabled -}}
{{- $any = true -}}
{{- end -}}
{{- end -}}
{{- if $any }}true{{ end -}}
{{- end -}}
