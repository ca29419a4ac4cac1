{{/* Name of the chart, overridable. */}}
{{- define "guestreset.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; the release name alone when it already contains the chart's. */}}
{{- define "guestreset.fullname" -}}
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

{{- define "guestreset.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "guestreset.selectorLabels" -}}
app.kubernetes.io/name: {{ include "guestreset.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "guestreset.labels" -}}
helm.sh/chart: {{ include "guestreset.chart" . }}
{{ include "guestreset.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: guestreset
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "guestreset.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "guestreset.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "guestreset.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "guestreset.leaseName" -}}
{{- default (include "guestreset.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* Name of the Secret the chart creates from azure.clientSecret.value. */}}
{{- define "guestreset.clientSecretName" -}}
{{- printf "%s-azure" (include "guestreset.fullname" .) }}
{{- end }}

{{/* Where the projected token goes when workload identity runs without the webhook
(the webhook's own path, so the two setups look alike from inside the pod). */}}
{{- define "guestreset.federatedTokenDir" -}}
/var/run/secrets/azure/tokens
{{- end }}

{{/* Labels of the `helm test` Pod: the release's, but not the selector's name label, so
that neither the Service nor the PodDisruptionBudget selects it. */}}
{{- define "guestreset.testLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: guestreset
app.kubernetes.io/component: helm-test
{{- end }}

{{/* No credential method is set: the pod takes a managed identity's token from the
instance metadata endpoint. */}}
{{- define "guestreset.managedIdentity" -}}
{{- $azure := .Values.azure }}
{{- if not (or $azure.workloadIdentity.enabled $azure.clientSecret.existingSecret $azure.clientSecret.value $azure.clientCertificate.existingSecret) }}true{{ end }}
{{- end }}
