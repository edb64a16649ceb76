package main

import (
	"bytes"
	"strings"
	"testing"
)

// valid is a small set of objects that passes every check; the negative
// cases below each break it in one place.
const valid = `---
# Source: kmirror/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: km
  namespace: ns
  labels: {app.kubernetes.io/name: km}
spec:
  replicas: 1
  selector:
    matchLabels: {app.kubernetes.io/name: km}
  strategy: {type: Recreate}
  template:
    metadata:
      labels: {app.kubernetes.io/name: km}
    spec:
      securityContext:
        runAsNonRoot: true
        seccompProfile: {type: RuntimeDefault}
      containers:
        - name: kmirror
          image: kmirror:1
          ports: [{name: admin, containerPort: 9780}]
          env:
            - name: POD_IP
              valueFrom: {fieldRef: {fieldPath: status.podIP}}
          readinessProbe:
            httpGet: {path: /readyz, port: admin}
          resources:
            requests: {memory: 512Mi}
            limits: {memory: 2Gi}
          securityContext:
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
          volumeMounts: [{name: config, mountPath: /etc/kmirror}]
      volumes:
        - name: config
          configMap: {name: km-config}
---
apiVersion: v1
kind: Service
metadata: {name: km, namespace: ns, labels: {app.kubernetes.io/name: km}}
spec:
  selector: {app.kubernetes.io/name: km}
  ports: [{name: admin, port: 9780, targetPort: admin}]
`

func TestValid(t *testing.T) {
	objs, err := Decode("valid.yaml", []byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	report, err := Check(objs)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || len(report) != 3 {
		t.Fatalf("%d objects, report %q; want 2 objects and 3 lines", len(objs), report)
	}
	if !strings.Contains(objs[0].Source, "kmirror/templates/deployment.yaml") {
		t.Errorf("source %q does not name helm's template", objs[0].Source)
	}
}

// TestMistakes checks that each kind of mistake is caught: every case
// changes the valid manifests in one place.
func TestMistakes(t *testing.T) {
	tests := []struct {
		name, old, new, want string
	}{
		{"misspelled field", "containerPort: 9780", "containerPrt: 9780", `unknown field "spec.template.spec.containers[0].ports[0].containerPrt"`},
		{"misspelled top-level field", "kind: Service\nmetadata:", "kind: Service\nmetdata:", `unknown field "metdata"`},
		{"field in the wrong place", "  replicas: 1\n", "  replicas: 1\n  serviceAccountName: km\n", `unknown field "spec.serviceAccountName"`},
		{"wrong letter case", "containerPort: 9780", "ContainerPort: 9780", `unknown field "spec.template.spec.containers[0].ports[0].ContainerPort"`},
		{"duplicate field", "  replicas: 1\n", "  replicas: 1\n  replicas: 2\n", `key "replicas" already set`},
		{"wrong type", "replicas: 1", "replicas: one", "cannot unmarshal"},
		{"bad quantity", "memory: 2Gi", "memory: 2GB", "quantities must match"},
		{"unknown kind", "kind: Service", "kind: Servce", `no schema for apiVersion "v1" kind "Servce"`},
		{"selector misses the pods", "    matchLabels: {app.kubernetes.io/name: km}", "    matchLabels: {app.kubernetes.io/name: other}", "does not select the pod template's labels"},
		{"probe on a missing port", "port: admin}", "port: http}", `readinessProbe.httpGet.port "http": the container has no port of that name`},
		{"mount of a missing volume", "{name: config, mountPath", "{name: conf, mountPath", `no volume named "conf"`},
		{"bad env name", "name: POD_IP", "name: POD-IP=", "env[0].name"},
		{"request above limit", "limits: {memory: 2Gi}", "limits: {memory: 256Mi}", "above its limit"},
		{"not restricted", "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true", "restricted Pod Security Standard"},
		{"service port name", "targetPort: admin", "targetPort: metrics", `targetPort "metrics": the pods have no port of that name`},
		{"service selects nothing", "  selector: {app.kubernetes.io/name: km}\n  ports", "  selector: {app.kubernetes.io/name: kn}\n  ports", "selects no Deployment's pods"},
		{"bad name", "name: km\n  namespace: ns", "name: KM\n  namespace: ns", `metadata.name "KM"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(valid, tc.old) {
				t.Fatalf("the valid manifests do not contain %q", tc.old)
			}
			broken := strings.Replace(valid, tc.old, tc.new, 1)
			objs, err := Decode("broken.yaml", []byte(broken))
			if err == nil {
				_, err = Check(objs)
			}
			if err == nil {
				t.Fatalf("no error, want one containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want one containing %q", err, tc.want)
			}
			t.Logf("caught: %v", firstLine(err.Error()))
		})
	}
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run(nil, strings.NewReader(valid), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "ok   apps/v1 Deployment ns/km") {
		t.Errorf("output %q does not report the Deployment", out.String())
	}
	if err := run(nil, strings.NewReader("# nothing\n"), &out); err == nil {
		t.Error("no objects: no error")
	}
}
