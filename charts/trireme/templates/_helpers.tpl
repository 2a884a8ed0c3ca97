{{- /*
Names, labels and RBAC rules shared by the chart's templates, so that every object is
named and labelled one way and the rules live in one place (rbac.yaml picks where they go).
*/ -}}

{{- define "trireme.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trireme.fullname" -}}
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

{{- define "trireme.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trireme.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "trireme.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "trireme.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: trireme
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "trireme.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- /*
"true" when the operator pods elect a leader (kopf peering): asked for, or more than one pod.
*/ -}}
{{- define "trireme.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicas) 1) }}true{{ end }}
{{- end }}

{{- /* The peering object the pods share (ClusterKopfPeering, or KopfPeering per watched namespace). */ -}}
{{- define "trireme.peeringName" -}}
{{- include "trireme.fullname" . }}
{{- end }}

{{- /*
What the operator does inside the namespaces it manages: reconcile InferenceServices
into pods, a Service and a PodDisruptionBudget; bind and evict pods as the scheduler (and
mark the ones that fit nowhere PodScheduled=False on pods/status); report through status
and Events. No Secrets, no wildcards.
*/ -}}
{{- define "trireme.namespacedRules" -}}
- apiGroups: ["serving.trireme.io"]
  resources: ["inferenceservices"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["serving.trireme.io"]
  resources: ["inferenceservices/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["serving.trireme.io"]
  resources: ["inferenceservices/scale"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "delete", "patch"]
- apiGroups: [""]
  resources: ["pods/binding", "pods/eviction"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["pods/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["endpoints"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{- /*
Leader election: read the peering object (kopf lists and watches it) and patch this pod's
keep-alive into its status. Granted only with leader election on, next to the namespaced
rules (cluster-wide: ClusterKopfPeering in the ClusterRole; watched namespaces: KopfPeering
in each namespace's Role).
*/ -}}
{{- define "trireme.peeringRules" -}}
- apiGroups: ["kopf.dev"]
  resources: [{{ if .Values.watchNamespaces }}"kopfpeerings"{{ else }}"clusterkopfpeerings"{{ end }}]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}

{{- /*
What only exists cluster-wide: nodes and PriorityClasses (placement and preemption),
CRDs (kopf's discovery) and namespaces (kopf's namespace scan).
*/ -}}
{{- define "trireme.clusterRules" -}}
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["scheduling.k8s.io"]
  resources: ["priorityclasses"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
