{{/* PLACEHOLDER until eft.controller.rbac exists; regenerate with: python charts/sync.py */}}
{{- define "eft.rules.namespaced" -}}
- apiGroups: ["finetune.embeddings.io"]
  resources: ["embeddingfinetunes"]
  verbs: ["get", "list", "watch", "patch"]
{{- end -}}
{{- define "eft.rules.cluster" -}}
{{- end -}}
