{{/* Names. The webhook's objects are all called "<release>-webhook" (or "stitch-webhook"
when the release is called stitch). */}}
{{- define "stitch.name" -}}
{{- if eq .Release.Name .Chart.Name -}}{{ .Chart.Name }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 55 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "stitch.webhook" -}}{{ include "stitch.name" . }}-webhook{{- end -}}
{{- define "stitch.tlsSecret" -}}{{ include "stitch.webhook" . }}-tls{{- end -}}

{{- define "stitch.labels" -}}
app.kubernetes.io/name: stitch
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "stitch.webhookSelector" -}}
app.kubernetes.io/name: stitch
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "stitch.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The Service's DNS names: the certificate's SANs. */}}
{{- define "stitch.dnsNames" -}}
{{- $svc := include "stitch.webhook" . -}}
{{- $ns := .Release.Namespace -}}
{{ list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson }}
{{- end -}}

{{/* Namespaces the webhook is never called for: the control plane's and its own (so a broken
webhook can never block its own restart). */}}
{{- define "stitch.excludedNamespaces" -}}
{{ list "kube-system" "kube-public" "kube-node-lease" .Release.Namespace | uniq | toJson }}
{{- end -}}

{{/* proxy.nativeSidecar resolved: auto = native from Kubernetes 1.29. */}}
{{- define "stitch.nativeSidecar" -}}
{{- $mode := toString .Values.proxy.nativeSidecar -}}
{{- if eq $mode "auto" -}}
{{- semverCompare ">=1.29.0-0" .Capabilities.KubeVersion.Version -}}
{{- else if or (eq $mode "true") (eq $mode "false") -}}
{{- $mode -}}
{{- else -}}
{{- fail (printf "proxy.nativeSidecar must be auto, true or false, not %q" $mode) -}}
{{- end -}}
{{- end -}}

{{/* The rules file's text. */}}
{{- define "stitch.rules" -}}
{{- if kindIs "string" .Values.rules -}}{{ .Values.rules }}{{- else -}}{{ toYaml .Values.rules }}{{- end -}}
{{- end -}}
