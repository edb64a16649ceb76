package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

// chart is the chart under test, relative to this package.
const chart = "../kmirror"

// helmBin finds helm: $HELM (scripts/test.sh sets it to the pinned build in
// .cache/bin), else the repository's .cache/bin/helm, else helm on PATH.
func helmBin(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	if h, err := filepath.Abs("../../../.cache/bin/helm"); err == nil {
		if _, err := os.Stat(h); err == nil {
			return h
		}
	}
	h, err := exec.LookPath("helm")
	if err != nil {
		t.Fatal("no helm: set HELM, or run scripts/test.sh, which builds the pinned helm into .cache/bin")
	}
	return h
}

// render runs helm template on the chart with args; it returns the
// manifests, or helm's error output.
func render(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), append([]string{"template", "kmirror", chart, "--namespace", "kafka"}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", &renderError{strings.TrimSpace(stderr.String())}
	}
	return string(out), nil
}

type renderError struct{ msg string }

func (e *renderError) Error() string { return e.msg }

// rendered is a valid rendering, by kind.
type rendered struct {
	objs []*Object
	dep  *appsv1.Deployment
	svc  *corev1.Service
	cm   *corev1.ConfigMap
	sa   *corev1.ServiceAccount
	pdb  *policyv1.PodDisruptionBudget
	sm   *monitoringv1.ServiceMonitor
}

// renderValid renders and validates; any problem fails the test.
func renderValid(t *testing.T, args ...string) *rendered {
	t.Helper()
	out, err := render(t, args...)
	if err != nil {
		t.Fatalf("helm template %v: %v", args, err)
	}
	objs, err := Decode("helm template", []byte(out))
	if err != nil {
		t.Fatalf("helm template %v: %v", args, err)
	}
	report, err := Check(objs)
	if err != nil {
		t.Fatalf("helm template %v:\n%s\n%v", args, strings.Join(report, "\n"), err)
	}
	r := &rendered{objs: objs}
	for _, o := range objs {
		switch obj := o.Obj.(type) {
		case *appsv1.Deployment:
			r.dep = obj
		case *corev1.Service:
			r.svc = obj
		case *corev1.ConfigMap:
			r.cm = obj
		case *corev1.ServiceAccount:
			r.sa = obj
		case *policyv1.PodDisruptionBudget:
			r.pdb = obj
		case *monitoringv1.ServiceMonitor:
			r.sm = obj
		}
	}
	if r.dep == nil || r.svc == nil {
		t.Fatalf("helm template %v: no Deployment or Service", args)
	}
	return r
}

func (r *rendered) container() *corev1.Container { return &r.dep.Spec.Template.Spec.Containers[0] }

// config is the kmirror configuration in the rendered ConfigMap.
func (r *rendered) config(t *testing.T) map[string]any {
	t.Helper()
	if r.cm == nil {
		t.Fatal("no ConfigMap rendered")
	}
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(r.cm.Data["kmirror.yaml"]), &cfg); err != nil {
		t.Fatalf("ConfigMap kmirror.yaml: %v", err)
	}
	return cfg
}

func listen(t *testing.T, cfg map[string]any) any {
	t.Helper()
	http, _ := cfg["http"].(map[string]any)
	return http["listen"]
}

func env(c *corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

const minimal = "testdata/minimal-values.yaml"

func strPtr(p *int64) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

// TestChartDefaults renders the chart's defaults with nothing but a
// configuration, and checks what the chart promises.
func TestChartDefaults(t *testing.T) {
	start := time.Now()
	r := renderValid(t, "-f", minimal)
	t.Logf("default values: %d objects rendered and valid in %s", len(r.objs), time.Since(start).Round(time.Millisecond))
	if r.pdb != nil || r.sm != nil {
		t.Error("a PodDisruptionBudget or ServiceMonitor with the defaults (one replica, monitoring off)")
	}
	if r.sa == nil || r.sa.AutomountServiceAccountToken == nil || *r.sa.AutomountServiceAccountToken {
		t.Error("ServiceAccount missing or mounting its token")
	}
	d := r.dep
	if *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType {
		t.Errorf("replicas %d, strategy %s; want 1, RollingUpdate (the new pod takes a share before the old one leaves)", *d.Spec.Replicas, d.Spec.Strategy.Type)
	}
	c := r.container()
	if want := []string{"run", "--config", "/etc/kmirror/kmirror.yaml"}; !slices.Equal(c.Args, want) {
		t.Errorf("args %q, want %q", c.Args, want)
	}
	if c.Image != "kmirror:0.1.0" {
		t.Errorf("image %q, want kmirror:<appVersion>", c.Image)
	}
	probes := map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe}
	wantPath := map[string]string{"startup": "/healthz", "liveness": "/healthz", "readiness": "/readyz"}
	for name, p := range probes {
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s probe missing", name)
			continue
		}
		if p.HTTPGet.Path != wantPath[name] || p.HTTPGet.Port.StrVal != "admin" || p.HTTPGet.Scheme != corev1.URISchemeHTTP {
			t.Errorf("%s probe %s %s %s, want %s on port admin over HTTP", name, p.HTTPGet.Scheme, p.HTTPGet.Path, p.HTTPGet.Port.String(), wantPath[name])
		}
	}
	if e := env(c, "POD_IP"); e == nil || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "status.podIP" {
		t.Errorf("POD_IP env %+v, want valueFrom fieldRef status.podIP", e)
	}
	if e := env(c, "GOMEMLIMIT"); e == nil || e.Value != "1843MiB" {
		t.Errorf("GOMEMLIMIT %+v, want 1843MiB (90%% of the 2Gi limit)", e)
	}
	if got := listen(t, r.config(t)); got != "[${POD_IP}]:9780" {
		t.Errorf("http.listen %v, want [${POD_IP}]:9780", got)
	}
	cfg := r.config(t)
	if flows, _ := cfg["flows"].([]any); len(flows) != 1 || cfg["clusters"] == nil {
		t.Errorf("configuration lost its clusters or flows: %v", cfg)
	}

	ps := d.Spec.Template.Spec.SecurityContext
	sc := c.SecurityContext
	switch {
	case ps == nil || sc == nil:
		t.Fatal("no security contexts")
	case ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot, ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Errorf("pod security context %+v: want runAsNonRoot and seccomp RuntimeDefault", ps)
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem, sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation,
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}):
		t.Errorf("container security context %+v: want a read-only root, no privilege escalation, all capabilities dropped", sc)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %v: want CPU and memory requests and a memory limit", c.Resources)
	}
	if g := d.Spec.Template.Spec.TerminationGracePeriodSeconds; g == nil || *g < 30 {
		t.Errorf("terminationGracePeriodSeconds %s: want at least 30 (15 s drain, then progress)", strPtr(g))
	}
	if sum := d.Spec.Template.Annotations["checksum/config"]; !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(sum) {
		t.Errorf("checksum/config annotation %q, want a sha256", sum)
	}
	p := r.svc.Spec.Ports
	if len(p) != 1 || p[0].Port != 9780 || p[0].TargetPort.StrVal != "admin" || !r.svc.Spec.PublishNotReadyAddresses {
		t.Errorf("Service ports %+v, publishNotReadyAddresses %t; want 9780 → admin, true", p, r.svc.Spec.PublishNotReadyAddresses)
	}
}

// TestChartNeedsConfig: without a configuration the chart refuses to
// render, saying what to set.
func TestChartNeedsConfig(t *testing.T) {
	_, err := render(t)
	if err == nil || !strings.Contains(err.Error(), "set config") {
		t.Fatalf("rendering without config: %v, want an error asking for config", err)
	}
}

// TestChartFull renders values-full.yaml, which turns every option on.
func TestChartFull(t *testing.T) {
	start := time.Now()
	r := renderValid(t, "-f", chart+"/values-full.yaml")
	t.Logf("values-full.yaml: %d objects rendered and valid in %s", len(r.objs), time.Since(start).Round(time.Millisecond))
	if r.pdb == nil || r.sm == nil || r.sa == nil || r.cm == nil {
		t.Fatal("values-full.yaml: want a PodDisruptionBudget, a ServiceMonitor, a ServiceAccount and a ConfigMap")
	}
	c := r.container()
	if !strings.Contains(c.Image, "@sha256:") {
		t.Errorf("image %q: want it pulled by digest", c.Image)
	}
	if e := env(c, "DR_PASSWORD"); e == nil || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil ||
		e.ValueFrom.SecretKeyRef.Name != "kmirror-kafka" || e.ValueFrom.SecretKeyRef.Key != "dr-password" {
		t.Errorf("DR_PASSWORD env %+v, want secretKeyRef kmirror-kafka/dr-password", e)
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	if mounts["secret-dr-ca"] != "/var/run/secrets/kmirror/dr-ca" || mounts["secret-mtls"] != "/var/run/secrets/kmirror/mtls" {
		t.Errorf("secret mounts %v", mounts)
	}
	if c.ReadinessProbe.HTTPGet.Scheme != corev1.URISchemeHTTPS {
		t.Errorf("readiness scheme %s, want HTTPS (admin.scheme)", c.ReadinessProbe.HTTPGet.Scheme)
	}
	ep := r.sm.Spec.Endpoints[0]
	if ep.Scheme == nil || strings.ToLower(ep.Scheme.String()) != "https" || ep.Authorization == nil || ep.Authorization.Credentials == nil || ep.Authorization.Credentials.Name != "kmirror-admin" {
		t.Errorf("ServiceMonitor endpoint %+v: want https with the bearer token secret", ep)
	}
	if got := listen(t, r.config(t)); got != "[${POD_IP}]:9781" {
		t.Errorf("http.listen %v, want [${POD_IP}]:9781 (admin.port)", got)
	}
}

// leaves flattens values into "a.b.c" → value; empty maps, lists and
// scalars are leaves.
func leaves(prefix string, v any, out map[string]any) {
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 {
		out[prefix] = v
		return
	}
	for k, sub := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		leaves(p, sub, out)
	}
}

func readValues(t *testing.T, file string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	out := map[string]any{}
	leaves("", v, out)
	return out
}

// TestValuesFullSetsEveryValue keeps values-full.yaml complete: every value
// of values.yaml is set there, to something other than its default, but
// for the pairs where one value replaces the other.
func TestValuesFullSetsEveryValue(t *testing.T) {
	defaults := readValues(t, chart+"/values.yaml")
	full := readValues(t, chart+"/values-full.yaml")
	// Values that replace another; each has a case of its own in the tests.
	exempt := map[string]string{
		"existingConfigMap":    "replaces config (TestChartExistingConfigMap)",
		"existingConfigMapKey": "used with existingConfigMap only (TestChartExistingConfigMap)",
		"affinity":             "replaces podAntiAffinityPreset (TestChartReplicas)",
		"admin.listenOnPodIP":  "false is tested in TestChartListen",
	}
	for k := range defaults {
		if _, ok := exempt[k]; ok {
			continue
		}
		if _, ok := full[k]; !ok && !hasPrefixKey(full, k) {
			t.Errorf("values-full.yaml does not set %s", k)
		}
	}
	for k := range full {
		// resources is a container's resources: any key is fine.
		if _, ok := defaults[k]; !ok && !underLeaf(defaults, k) && !strings.HasPrefix(k, "resources.") {
			t.Errorf("values-full.yaml sets %s, which values.yaml does not have", k)
		}
	}
}

// hasPrefixKey: key is an empty map in values.yaml that full fills in.
func hasPrefixKey(m map[string]any, key string) bool {
	for k := range m {
		if strings.HasPrefix(k, key+".") {
			return true
		}
	}
	return false
}

// underLeaf: key lies inside a value that is a leaf (an empty map such as
// config or strategy) in values.yaml.
func underLeaf(defaults map[string]any, key string) bool {
	for k := range defaults {
		if strings.HasPrefix(key, k+".") {
			return true
		}
	}
	return false
}

// TestChartStandbys: a flow with scale_out: false (found in config, or
// said by standbys) has standbys that answer 503 on /readyz: one replica
// is then replaced with Recreate, and several use /healthz for readiness.
func TestChartStandbys(t *testing.T) {
	standbyFlow := `config.flows=[{"source":"primary","target":"dr","topics":["orders.*"]},{"name":"audit","source":"primary","target":"dr","topics":["audit"],"scale_out":false}]`
	tests := []struct {
		name          string
		args          []string
		wantStrategy  appsv1.DeploymentStrategyType
		wantReadiness string
		wantPDB       bool
	}{
		{"scale-out flows, one replica", nil, appsv1.RollingUpdateDeploymentStrategyType, "/readyz", false},
		{"scale-out flows, three replicas", []string{"--set", "replicaCount=3"}, appsv1.RollingUpdateDeploymentStrategyType, "/readyz", true},
		{"a standby flow in config, one replica", []string{"--set-json", standbyFlow}, appsv1.RecreateDeploymentStrategyType, "/readyz", false},
		{"a standby flow in config, two replicas", []string{"--set-json", standbyFlow, "--set", "replicaCount=2"}, appsv1.RollingUpdateDeploymentStrategyType, "/healthz", true},
		{"standbys said for an existing ConfigMap", []string{"--set", "standbys=true,replicaCount=2"}, appsv1.RollingUpdateDeploymentStrategyType, "/healthz", true},
		{"scale_out: true said explicitly", []string{"--set-json", `config.flows=[{"source":"primary","target":"dr","scale_out":true}]`}, appsv1.RollingUpdateDeploymentStrategyType, "/readyz", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := renderValid(t, append([]string{"-f", minimal}, tt.args...)...)
			if got := r.dep.Spec.Strategy.Type; got != tt.wantStrategy {
				t.Errorf("strategy %s, want %s", got, tt.wantStrategy)
			}
			if got := r.container().ReadinessProbe.HTTPGet.Path; got != tt.wantReadiness {
				t.Errorf("readiness %s, want %s", got, tt.wantReadiness)
			}
			if (r.pdb != nil) != tt.wantPDB {
				t.Errorf("PodDisruptionBudget %v, want %v", r.pdb != nil, tt.wantPDB)
			}
		})
	}
}

// TestChartReplicas: several replicas add a PodDisruptionBudget and a soft
// anti-affinity, and keep the rolling update and /readyz of scale-out
// flows; each can be overridden.
func TestChartReplicas(t *testing.T) {
	r := renderValid(t, "-f", minimal, "--set", "replicaCount=2")
	d := r.dep
	if r.pdb == nil || r.pdb.Spec.MinAvailable == nil || r.pdb.Spec.MinAvailable.IntValue() != 1 {
		t.Errorf("replicaCount 2: PodDisruptionBudget %+v, want minAvailable 1", r.pdb)
	}
	if s := d.Spec.Strategy; s.Type != appsv1.RollingUpdateDeploymentStrategyType || s.RollingUpdate == nil ||
		s.RollingUpdate.MaxSurge.IntValue() != 1 || s.RollingUpdate.MaxUnavailable.IntValue() != 0 {
		t.Errorf("replicaCount 2: strategy %+v, want RollingUpdate maxSurge 1 maxUnavailable 0", s)
	}
	if p := r.container().ReadinessProbe.HTTPGet.Path; p != "/readyz" {
		t.Errorf("replicaCount 2: readiness %s, want /readyz (every pod of a scale-out flow is ready once it runs)", p)
	}
	a := d.Spec.Template.Spec.Affinity
	if a == nil || a.PodAntiAffinity == nil || len(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 {
		t.Errorf("replicaCount 2: affinity %+v, want a preferred pod anti-affinity", a)
	}

	if r := renderValid(t, "-f", minimal, "--set", "replicaCount=2,podDisruptionBudget.enabled=false"); r.pdb != nil {
		t.Error("podDisruptionBudget.enabled=false: a PodDisruptionBudget")
	}
	if r := renderValid(t, "-f", minimal, "--set", "podDisruptionBudget.enabled=true,podDisruptionBudget.maxUnavailable=1"); r.pdb == nil ||
		r.pdb.Spec.MaxUnavailable == nil || r.pdb.Spec.MinAvailable != nil {
		t.Errorf("podDisruptionBudget.enabled=true with one replica: %+v, want maxUnavailable only", r.pdb)
	}
	r = renderValid(t, "-f", minimal, "--set", "replicaCount=2,readinessProbe.path=/readyz,standbys=true,strategy.type=Recreate",
		"--set-json", `affinity={"nodeAffinity":{"requiredDuringSchedulingIgnoredDuringExecution":{"nodeSelectorTerms":[{"matchExpressions":[{"key":"pool","operator":"In","values":["kafka"]}]}]}}}`)
	if p := r.container().ReadinessProbe.HTTPGet.Path; p != "/readyz" || r.dep.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("overrides: readiness %s strategy %s, want /readyz and Recreate", p, r.dep.Spec.Strategy.Type)
	}
	if a := r.dep.Spec.Template.Spec.Affinity; a == nil || a.NodeAffinity == nil || a.PodAntiAffinity != nil {
		t.Errorf("affinity set: %+v, want it as given, without the preset", a)
	}
	if _, err := render(t, "-f", minimal, "--set", "replicaCount=2,podAntiAffinityPreset=sometimes"); err == nil || !strings.Contains(err.Error(), "podAntiAffinityPreset") {
		t.Errorf("podAntiAffinityPreset=sometimes: %v, want an error", err)
	}
}

// TestChartListen: the chart sets http.listen to the pod's IP unless the
// configuration sets it; a configuration's own listen must serve the probes.
func TestChartListen(t *testing.T) {
	tests := []struct {
		name    string
		set     []string
		want    string // http.listen in the ConfigMap
		port    int32
		wantErr string
	}{
		{name: "default", want: "[${POD_IP}]:9780", port: 9780},
		{name: "every interface", set: []string{"admin.listenOnPodIP=false"}, want: ":9780", port: 9780},
		{name: "another port", set: []string{"admin.port=9800"}, want: "[${POD_IP}]:9800", port: 9800},
		{name: "the configuration's own listen wins", set: []string{"config.http.listen=0.0.0.0:9780"}, want: "0.0.0.0:9780", port: 9780},
		{name: "own listen with other http keys", set: []string{"config.http.listen=:9780", "config.http.max_connections=8"}, want: ":9780", port: 9780},
		{name: "off", set: []string{"config.http.listen=off"}, wantErr: `"off" turns off the admin server`},
		{name: "loopback", set: []string{"config.http.listen=127.0.0.1:9780"}, wantErr: "loopback only"},
		{name: "localhost", set: []string{"config.http.listen=localhost:9780"}, wantErr: "loopback only"},
		{name: "wrong port", set: []string{"config.http.listen=:9999"}, wantErr: "must use admin.port 9780"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"-f", minimal}
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			if tc.wantErr != "" {
				_, err := render(t, args...)
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			r := renderValid(t, args...)
			if got := listen(t, r.config(t)); got != tc.want {
				t.Errorf("http.listen %v, want %s", got, tc.want)
			}
			if got := r.container().Ports[0].ContainerPort; got != tc.port {
				t.Errorf("container port %d, want %d", got, tc.port)
			}
		})
	}
}

// TestChartConfigForms: the configuration as YAML in values and as a file
// (--set-file) render the same ConfigMap; YAML that does not parse is an error.
func TestChartConfigForms(t *testing.T) {
	asValues := renderValid(t, "-f", minimal)
	asFile := renderValid(t, "--set-file", "config=testdata/kmirror.yaml")
	if asValues.cm.Data["kmirror.yaml"] != asFile.cm.Data["kmirror.yaml"] {
		t.Errorf("the same configuration renders differently:\nvalues:\n%s\nfile:\n%s", asValues.cm.Data["kmirror.yaml"], asFile.cm.Data["kmirror.yaml"])
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("clusters: [unclosed\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := render(t, "--set-file", "config="+bad); err == nil || !strings.Contains(err.Error(), "config: not valid YAML") {
		t.Errorf("invalid YAML: %v, want an error naming config", err)
	}
}

// TestChartChecksum: a change of configuration changes the pods'
// checksum/config annotation (so the pods roll); other changes do not.
func TestChartChecksum(t *testing.T) {
	sum := func(args ...string) string {
		return renderValid(t, append([]string{"-f", minimal}, args...)...).dep.Spec.Template.Annotations["checksum/config"]
	}
	base := sum()
	if again := sum(); again != base {
		t.Errorf("the same values give checksums %s and %s", base, again)
	}
	if other := sum("--set", "config.flows[0].topics[0]=payments"); other == base {
		t.Error("a changed configuration keeps the checksum: the pods would not roll")
	}
	if port := sum("--set", "admin.port=9800"); port == base {
		t.Error("a changed admin port (and so http.listen) keeps the checksum")
	}
	if replicas := sum("--set", "replicaCount=3"); replicas != base {
		t.Error("replicaCount changes the configuration's checksum")
	}
}

// TestChartExistingConfigMap: with existingConfigMap the chart renders no
// ConfigMap and mounts the given one.
func TestChartExistingConfigMap(t *testing.T) {
	r := renderValid(t, "--set", "existingConfigMap=my-kmirror,existingConfigMapKey=config.yaml")
	if r.cm != nil {
		t.Error("a ConfigMap rendered with existingConfigMap")
	}
	var vol *corev1.Volume
	for i, v := range r.dep.Spec.Template.Spec.Volumes {
		if v.Name == "config" {
			vol = &r.dep.Spec.Template.Spec.Volumes[i]
		}
	}
	if vol == nil || vol.ConfigMap == nil || vol.ConfigMap.Name != "my-kmirror" || len(vol.ConfigMap.Items) != 1 ||
		vol.ConfigMap.Items[0].Key != "config.yaml" || vol.ConfigMap.Items[0].Path != "kmirror.yaml" {
		t.Errorf("config volume %+v, want ConfigMap my-kmirror key config.yaml as kmirror.yaml", vol)
	}
	if _, ok := r.dep.Spec.Template.Annotations["checksum/config"]; ok {
		t.Error("a checksum/config annotation without a configuration to sum")
	}
}

var readmeRow = regexp.MustCompile("^\\| `([^`]+)` \\| (.*?) \\| (.*) \\|$")

// TestChartReadme keeps README.md's values table whole and true: one row
// per value of values.yaml, with its default as JSON, and a description.
func TestChartReadme(t *testing.T) {
	defaults := readValues(t, chart+"/values.yaml")
	data, err := os.ReadFile(chart + "/README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for _, l := range strings.Split(string(data), "\n") {
		m := readmeRow.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		if _, dup := rows[m[1]]; dup {
			t.Errorf("README.md: %s has two rows", m[1])
		}
		rows[m[1]] = m[2]
		if strings.TrimSpace(m[3]) == "" {
			t.Errorf("README.md: %s has no description", m[1])
		}
	}
	keys := make([]string, 0, len(defaults))
	for k := range defaults {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		def, ok := rows[k]
		if !ok {
			t.Errorf("README.md: no row for %s", k)
			continue
		}
		js, err := json.Marshal(defaults[k])
		if err != nil {
			t.Fatal(err)
		}
		if want := "`" + string(js) + "`"; def != want {
			t.Errorf("README.md: %s default %s, values.yaml has %s", k, def, want)
		}
	}
	for k := range rows {
		if _, ok := defaults[k]; !ok {
			t.Errorf("README.md: row for %s, which values.yaml does not have", k)
		}
	}
	t.Logf("README.md documents all %d values with their defaults", len(keys))
}

// TestChartNotes renders NOTES.txt (helm template leaves it out) through a
// copy of the chart with one more template that includes it.
func TestChartNotes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kmirror")
	if err := os.CopyFS(dir, os.DirFS(chart)); err != nil {
		t.Fatal(err)
	}
	const probe = `apiVersion: v1
kind: ConfigMap
metadata: {name: notes}
data:
  notes: |
    {{- include "kmirror/templates/NOTES.txt" . | nindent 4 }}
`
	if err := os.WriteFile(filepath.Join(dir, "templates", "zz-notes.yaml"), []byte(probe), 0o644); err != nil {
		t.Fatal(err)
	}
	notes := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(helmBin(t), append([]string{"template", "kmirror", dir, "--namespace", "kafka", "--show-only", "templates/zz-notes.yaml"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helm template %v: %v\n%s", args, err, out)
		}
		var cm corev1.ConfigMap
		if err := yaml.Unmarshal(out, &cm); err != nil {
			t.Fatal(err)
		}
		n := cm.Data["notes"]
		if strings.Contains(n, "<no value>") {
			t.Errorf("NOTES with %v has a <no value>:\n%s", args, n)
		}
		return n
	}
	n := notes("-f", minimal)
	for _, want := range []string{
		`kubectl get --raw "/api/v1/namespaces/kafka/services/http:kmirror:admin/proxy/api/flows"`,
		"kubectl logs -n kafka -l app.kubernetes.io/instance=kmirror",
		"http://kmirror.kafka.svc:9780/metrics",
		"port-forward does not reach it",
	} {
		if !strings.Contains(n, want) {
			t.Errorf("NOTES do not contain %q:\n%s", want, n)
		}
	}
	if want := "they share each flow's partitions"; !strings.Contains(notes("-f", minimal, "--set", "replicaCount=2"), want) {
		t.Errorf("NOTES with two replicas do not contain %q", want)
	}
	n = notes("--set", "existingConfigMap=mine,replicaCount=2,standbys=true,admin.scheme=HTTPS,admin.listenOnPodIP=false")
	for _, want := range []string{"hot standbys", "services/https:kmirror:admin/proxy", "ConfigMap mine", "kubectl rollout restart deployment/kmirror"} {
		if !strings.Contains(n, want) {
			t.Errorf("NOTES do not contain %q:\n%s", want, n)
		}
	}
	if strings.Contains(n, "port-forward") {
		t.Errorf("NOTES warn about port-forward with admin.listenOnPodIP=false:\n%s", n)
	}
}
