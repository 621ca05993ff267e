{{/* The prefix of every object's name. */}}
{{- define "fleetscore.name" -}}
{{- default "fleetscore" .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "fleetscore.labels" -}}
app.kubernetes.io/name: fleetscore
app.kubernetes.io/part-of: fleetscore
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "fleetscore.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{/* The pods' security context: not root, the runtime's seccomp profile. */}}
{{- define "fleetscore.podSecurity" -}}
runAsNonRoot: true
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "fleetscore.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* The config file and the store, in every container. */}}
{{- define "fleetscore.env" -}}
- name: FLEETSCORE_CONFIG
  value: /etc/fleetscore/fleetscore.toml
- name: FLEETSCORE_DATA
  value: /data
- name: FLEETSCORE_STORE
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secretName }}
      key: store-url
{{- end -}}

{{- define "fleetscore.dbEnv" -}}
- name: FLEETSCORE_DB
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secretName }}
      key: db-url
{{- end -}}

{{- define "fleetscore.envFrom" -}}
- secretRef:
    name: {{ .Values.storeCredentialsSecret }}
    optional: true
{{- end -}}

{{- define "fleetscore.mounts" -}}
- name: config
  mountPath: /etc/fleetscore
  readOnly: true
- name: data
  mountPath: /data
{{- end -}}

{{- define "fleetscore.configVolume" -}}
- name: config
  configMap:
    name: {{ include "fleetscore.name" . }}-config
{{- end -}}
