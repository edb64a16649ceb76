package main

import (
	"errors"
	"fmt"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Object is one decoded manifest.
type Object struct {
	Source     string // file and document number, and helm's "# Source:" line
	APIVersion string
	Kind       string
	Meta       *metav1.ObjectMeta
	Obj        any // *appsv1.Deployment, *corev1.Service, ...
}

// ID names the object in messages: "apps/v1 Deployment ns/name".
func (o *Object) ID() string {
	ns := o.Meta.Namespace
	if ns != "" {
		ns += "/"
	}
	return fmt.Sprintf("%s %s %s%s", o.APIVersion, o.Kind, ns, o.Meta.Name)
}

// schemas are the kinds this validator knows, by "apiVersion kind".
var schemas = map[string]func() (any, *metav1.ObjectMeta){
	"v1 ConfigMap": func() (any, *metav1.ObjectMeta) {
		o := &corev1.ConfigMap{}
		return o, &o.ObjectMeta
	},
	"v1 Secret": func() (any, *metav1.ObjectMeta) {
		o := &corev1.Secret{}
		return o, &o.ObjectMeta
	},
	"v1 Service": func() (any, *metav1.ObjectMeta) {
		o := &corev1.Service{}
		return o, &o.ObjectMeta
	},
	"v1 ServiceAccount": func() (any, *metav1.ObjectMeta) {
		o := &corev1.ServiceAccount{}
		return o, &o.ObjectMeta
	},
	"apps/v1 Deployment": func() (any, *metav1.ObjectMeta) {
		o := &appsv1.Deployment{}
		return o, &o.ObjectMeta
	},
	"policy/v1 PodDisruptionBudget": func() (any, *metav1.ObjectMeta) {
		o := &policyv1.PodDisruptionBudget{}
		return o, &o.ObjectMeta
	},
	"monitoring.coreos.com/v1 ServiceMonitor": func() (any, *metav1.ObjectMeta) {
		o := &monitoringv1.ServiceMonitor{}
		return o, &o.ObjectMeta
	},
}

var (
	docSep     = regexp.MustCompile(`(?m)^---[ \t]*$`)
	helmSource = regexp.MustCompile(`(?m)^# Source: (.+)$`)
)

// Decode splits data (from file) into YAML documents and decodes each
// strictly into the type of its apiVersion and kind.
func Decode(file string, data []byte) ([]*Object, error) {
	var objs []*Object
	var errs []error
	for i, doc := range docSep.Split(string(data), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		src := fmt.Sprintf("%s#%d", file, i)
		if m := helmSource.FindStringSubmatch(doc); m != nil {
			src += " (" + m[1] + ")"
		}
		o, err := decodeDoc(src, []byte(doc))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		objs = append(objs, o)
	}
	return objs, errors.Join(errs...)
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func decodeDoc(src string, doc []byte) (*Object, error) {
	// YAML to JSON, refusing duplicate keys.
	js, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	var tm metav1.TypeMeta
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(js, &tm); err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	key := tm.APIVersion + " " + tm.Kind
	newObj, ok := schemas[key]
	if !ok {
		return nil, fmt.Errorf("%s: no schema for apiVersion %q kind %q; known: %s", src, tm.APIVersion, tm.Kind, strings.Join(knownKinds(), ", "))
	}
	obj, meta := newObj()
	// Case-sensitive, with unknown and duplicate fields as errors: the API
	// server's strict field validation.
	strict, err := sigsjson.UnmarshalStrict(js, obj, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", src, key, err)
	}
	if len(strict) > 0 {
		msgs := make([]string, len(strict))
		for i, e := range strict {
			msgs[i] = e.Error()
		}
		return nil, fmt.Errorf("%s: %s %s: %s", src, key, meta.Name, strings.Join(msgs, "; "))
	}
	return &Object{Source: src, APIVersion: tm.APIVersion, Kind: tm.Kind, Meta: meta, Obj: obj}, nil
}

func knownKinds() []string {
	var out []string
	for k := range schemas {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// checker collects the problems of one object.
type checker struct {
	id   string
	errs []error
}

func (c *checker) errorf(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("%s: "+format, append([]any{c.id}, args...)...))
}

// msgs reports validation messages from k8s.io/apimachinery.
func (c *checker) msgs(field, value string, msgs []string) {
	for _, m := range msgs {
		c.errorf("%s %q: %s", field, value, m)
	}
}

// Check validates each object, then the references between them. It
// returns one line per object saying what was checked, and every problem.
func Check(objs []*Object) ([]string, error) {
	var report []string
	var errs []error
	for _, o := range objs {
		c := &checker{id: o.ID()}
		checkMeta(c, o)
		what := "strict schema, metadata"
		switch obj := o.Obj.(type) {
		case *appsv1.Deployment:
			what += ", " + checkDeployment(c, obj)
		case *corev1.Service:
			what += ", " + checkService(c, obj)
		case *policyv1.PodDisruptionBudget:
			what += ", " + checkPDB(c, obj)
		case *corev1.ConfigMap:
			for k := range obj.Data {
				c.msgs("data key", k, validation.IsConfigMapKey(k))
			}
			what += fmt.Sprintf(", %d data keys", len(obj.Data))
		case *monitoringv1.ServiceMonitor:
			what += ", " + checkServiceMonitor(c, obj)
		}
		errs = append(errs, c.errs...)
		status := "ok  "
		if len(c.errs) > 0 {
			status = "FAIL"
		}
		report = append(report, fmt.Sprintf("%s %s: %s", status, o.ID(), what))
	}
	c := &checker{id: "references"}
	report = append(report, checkReferences(c, objs))
	errs = append(errs, c.errs...)
	return report, errors.Join(errs...)
}

func checkMeta(c *checker, o *Object) {
	m := o.Meta
	if m.Name == "" {
		c.errorf("metadata.name is empty")
	} else if o.Kind == "Service" {
		c.msgs("metadata.name", m.Name, validation.IsDNS1035Label(m.Name))
	} else {
		c.msgs("metadata.name", m.Name, validation.IsDNS1123Subdomain(m.Name))
	}
	if m.Namespace != "" {
		c.msgs("metadata.namespace", m.Namespace, validation.IsDNS1123Label(m.Namespace))
	}
	checkLabels(c, "metadata.labels", m.Labels)
	for k := range m.Annotations {
		c.msgs("metadata.annotations key", k, validation.IsQualifiedName(strings.ToLower(k)))
	}
}

func checkLabels(c *checker, field string, l map[string]string) {
	for k, v := range l {
		c.msgs(field+" key", k, validation.IsQualifiedName(k))
		c.msgs(field+"["+k+"]", v, validation.IsValidLabelValue(v))
	}
}

// selector parses a label selector; nil if it is missing or invalid.
func selector(c *checker, field string, s *metav1.LabelSelector) labels.Selector {
	if s == nil || (len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0) {
		c.errorf("%s is empty: it would select every pod", field)
		return nil
	}
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		c.errorf("%s: %v", field, err)
		return nil
	}
	return sel
}

func checkDeployment(c *checker, d *appsv1.Deployment) string {
	if d.Spec.Replicas != nil && *d.Spec.Replicas < 0 {
		c.errorf("spec.replicas %d is negative", *d.Spec.Replicas)
	}
	if sel := selector(c, "spec.selector", d.Spec.Selector); sel != nil && !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		c.errorf("spec.selector %v does not select the pod template's labels %v", sel, d.Spec.Template.Labels)
	}
	checkLabels(c, "spec.template.metadata.labels", d.Spec.Template.Labels)
	switch s := d.Spec.Strategy; s.Type {
	case appsv1.RecreateDeploymentStrategyType:
		if s.RollingUpdate != nil {
			c.errorf("spec.strategy.rollingUpdate is set with type Recreate")
		}
	case appsv1.RollingUpdateDeploymentStrategyType, "":
		if r := s.RollingUpdate; r != nil && isZero(r.MaxSurge) && isZero(r.MaxUnavailable) {
			c.errorf("spec.strategy.rollingUpdate: maxSurge and maxUnavailable are both 0")
		}
	default:
		c.errorf("spec.strategy.type %q: expected Recreate or RollingUpdate", s.Type)
	}
	what := checkPodSpec(c, "spec.template.spec", &d.Spec.Template.Spec)
	checkPodSecurity(c, &d.Spec.Template.ObjectMeta, &d.Spec.Template.Spec)
	return "selector, " + what + ", Pod Security restricted"
}

func isZero(v *intstr.IntOrString) bool {
	return v != nil && (v.Type == intstr.Int && v.IntVal == 0 || v.Type == intstr.String && (v.StrVal == "0" || v.StrVal == "0%"))
}

// checkPodSecurity evaluates the pod against the "restricted" Pod Security
// Standard of the newest Kubernetes version the library knows.
func checkPodSecurity(c *checker, meta *metav1.ObjectMeta, spec *corev1.PodSpec) {
	eval, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		c.errorf("pod security evaluator: %v", err)
		return
	}
	lv := psapi.LevelVersion{Level: psapi.LevelRestricted, Version: psapi.LatestVersion()}
	if r := policy.AggregateCheckResults(eval.EvaluatePod(lv, meta, spec)); !r.Allowed {
		for i, reason := range r.ForbiddenReasons {
			c.errorf("violates the restricted Pod Security Standard: %s (%s)", reason, r.ForbiddenDetails[i])
		}
	}
}

func checkPodSpec(c *checker, field string, p *corev1.PodSpec) string {
	if len(p.Containers) == 0 {
		c.errorf("%s.containers is empty", field)
	}
	if p.ServiceAccountName != "" {
		c.msgs(field+".serviceAccountName", p.ServiceAccountName, validation.IsDNS1123Subdomain(p.ServiceAccountName))
	}
	volumes := map[string]bool{}
	for i, v := range p.Volumes {
		f := fmt.Sprintf("%s.volumes[%d]", field, i)
		c.msgs(f+".name", v.Name, validation.IsDNS1123Label(v.Name))
		if volumes[v.Name] {
			c.errorf("%s.name %q is used twice", f, v.Name)
		}
		volumes[v.Name] = true
		if n := setFields(v.VolumeSource); n != 1 {
			c.errorf("%s (%s) has %d sources, want exactly 1", f, v.Name, n)
		}
		if s := v.Secret; s != nil && s.SecretName == "" {
			c.errorf("%s.secret.secretName is empty", f)
		}
		if cm := v.ConfigMap; cm != nil && cm.Name == "" {
			c.errorf("%s.configMap.name is empty", f)
		}
		if s := v.Secret; s != nil {
			checkMode(c, f+".secret.defaultMode", s.DefaultMode)
		}
	}
	names := map[string]bool{}
	probes := 0
	for i := range p.Containers {
		ct := &p.Containers[i]
		f := fmt.Sprintf("%s.containers[%d]", field, i)
		c.msgs(f+".name", ct.Name, validation.IsDNS1123Label(ct.Name))
		if names[ct.Name] {
			c.errorf("%s.name %q is used twice", f, ct.Name)
		}
		names[ct.Name] = true
		if ct.Image == "" {
			c.errorf("%s.image is empty", f)
		}
		probes += checkContainer(c, f, ct, volumes)
	}
	return fmt.Sprintf("%d container(s), %d probe(s), %d volume(s)", len(p.Containers), probes, len(p.Volumes))
}

func checkMode(c *checker, field string, mode *int32) {
	if mode != nil && (*mode < 0 || *mode > 0o777) {
		c.errorf("%s %d: not a file mode from 0 to 0777 (511)", field, *mode)
	}
}

// setFields counts the non-nil pointer fields of a struct such as a
// VolumeSource or an EnvVarSource, of which exactly one may be set.
func setFields(v any) int {
	rv := reflect.ValueOf(v)
	n := 0
	for i := range rv.NumField() {
		if f := rv.Field(i); f.Kind() == reflect.Pointer && !f.IsNil() {
			n++
		}
	}
	return n
}

func checkContainer(c *checker, f string, ct *corev1.Container, volumes map[string]bool) int {
	ports := map[string]int32{}
	for j, p := range ct.Ports {
		pf := fmt.Sprintf("%s.ports[%d]", f, j)
		c.msgs(pf+".containerPort", fmt.Sprint(p.ContainerPort), validation.IsValidPortNum(int(p.ContainerPort)))
		if p.Name != "" {
			c.msgs(pf+".name", p.Name, validation.IsValidPortName(p.Name))
			if _, dup := ports[p.Name]; dup {
				c.errorf("%s.name %q is used twice", pf, p.Name)
			}
			ports[p.Name] = p.ContainerPort
		}
	}
	env := map[string]bool{}
	for j, e := range ct.Env {
		ef := fmt.Sprintf("%s.env[%d]", f, j)
		c.msgs(ef+".name", e.Name, validation.IsEnvVarName(e.Name))
		if env[e.Name] {
			c.errorf("%s.name %q is set twice", ef, e.Name)
		}
		env[e.Name] = true
		if e.ValueFrom == nil {
			continue
		}
		if e.Value != "" {
			c.errorf("%s (%s): value and valueFrom are both set", ef, e.Name)
		}
		if n := setFields(*e.ValueFrom); n != 1 {
			c.errorf("%s (%s).valueFrom has %d sources, want exactly 1", ef, e.Name, n)
		}
		if r := e.ValueFrom.SecretKeyRef; r != nil {
			if r.Name == "" {
				c.errorf("%s (%s).valueFrom.secretKeyRef.name is empty", ef, e.Name)
			}
			c.msgs(ef+".valueFrom.secretKeyRef.key", r.Key, validation.IsConfigMapKey(r.Key))
		}
		if r := e.ValueFrom.FieldRef; r != nil && !slices.Contains(fieldPaths, r.FieldPath) && !strings.HasPrefix(r.FieldPath, "metadata.") {
			c.errorf("%s (%s).valueFrom.fieldRef.fieldPath %q is not supported", ef, e.Name, r.FieldPath)
		}
	}
	probes := 0
	for _, pr := range []struct {
		name  string
		probe *corev1.Probe
	}{{"startupProbe", ct.StartupProbe}, {"livenessProbe", ct.LivenessProbe}, {"readinessProbe", ct.ReadinessProbe}} {
		if pr.probe == nil {
			continue
		}
		probes++
		checkProbe(c, f+"."+pr.name, pr.probe, ports)
	}
	for name, req := range ct.Resources.Requests {
		if lim, ok := ct.Resources.Limits[name]; ok && req.Cmp(lim) > 0 {
			c.errorf("%s.resources: request %s of %s is above its limit %s", f, req.String(), name, lim.String())
		}
	}
	var mounts []string
	for j, m := range ct.VolumeMounts {
		mf := fmt.Sprintf("%s.volumeMounts[%d]", f, j)
		if !volumes[m.Name] {
			c.errorf("%s: no volume named %q", mf, m.Name)
		}
		if !path.IsAbs(m.MountPath) {
			c.errorf("%s.mountPath %q is not absolute", mf, m.MountPath)
		}
		mounts = append(mounts, path.Clean(m.MountPath))
	}
	// Mount paths must differ (the API server refuses duplicates), and one
	// must not lie inside another: the inner mount point would have to be
	// created inside a read-only volume, which fails at container start.
	for i, a := range mounts {
		for _, b := range mounts[i+1:] {
			if a == b || strings.HasPrefix(b, a+"/") || strings.HasPrefix(a, b+"/") {
				c.errorf("%s.volumeMounts: %q and %q overlap", f, a, b)
			}
		}
	}
	return probes
}

// fieldPaths are the pod fields env var fieldRef supports, besides
// metadata.* ones.
var fieldPaths = []string{"spec.nodeName", "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs"}

func checkProbe(c *checker, f string, p *corev1.Probe, ports map[string]int32) {
	if n := setFields(p.ProbeHandler); n != 1 {
		c.errorf("%s has %d handlers, want exactly 1", f, n)
	}
	if h := p.HTTPGet; h != nil {
		if !strings.HasPrefix(h.Path, "/") {
			c.errorf("%s.httpGet.path %q does not start with /", f, h.Path)
		}
		if h.Scheme != "" && h.Scheme != corev1.URISchemeHTTP && h.Scheme != corev1.URISchemeHTTPS {
			c.errorf("%s.httpGet.scheme %q: expected HTTP or HTTPS", f, h.Scheme)
		}
		checkPortRef(c, f+".httpGet.port", h.Port, ports)
	}
	for name, v := range map[string]int32{"periodSeconds": p.PeriodSeconds, "timeoutSeconds": p.TimeoutSeconds, "failureThreshold": p.FailureThreshold, "successThreshold": p.SuccessThreshold} {
		if v < 0 {
			c.errorf("%s.%s %d is negative", f, name, v)
		}
	}
}

func checkPortRef(c *checker, f string, p intstr.IntOrString, ports map[string]int32) {
	if p.Type == intstr.String {
		if _, ok := ports[p.StrVal]; !ok {
			c.errorf("%s %q: the container has no port of that name", f, p.StrVal)
		}
		return
	}
	c.msgs(f, p.String(), validation.IsValidPortNum(int(p.IntVal)))
}

func checkService(c *checker, s *corev1.Service) string {
	switch s.Spec.Type {
	case "", corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeExternalName:
	default:
		c.errorf("spec.type %q is not a Service type", s.Spec.Type)
	}
	if len(s.Spec.Ports) == 0 {
		c.errorf("spec.ports is empty")
	}
	names := map[string]bool{}
	for i, p := range s.Spec.Ports {
		f := fmt.Sprintf("spec.ports[%d]", i)
		c.msgs(f+".port", fmt.Sprint(p.Port), validation.IsValidPortNum(int(p.Port)))
		if p.Name == "" && len(s.Spec.Ports) > 1 {
			c.errorf("%s.name is empty; required with several ports", f)
		}
		if p.Name != "" {
			c.msgs(f+".name", p.Name, validation.IsDNS1123Label(p.Name))
		}
		if names[p.Name] {
			c.errorf("%s.name %q is used twice", f, p.Name)
		}
		names[p.Name] = true
	}
	return fmt.Sprintf("%d port(s)", len(s.Spec.Ports))
}

func checkPDB(c *checker, p *policyv1.PodDisruptionBudget) string {
	selector(c, "spec.selector", p.Spec.Selector)
	switch {
	case p.Spec.MinAvailable != nil && p.Spec.MaxUnavailable != nil:
		c.errorf("spec: minAvailable and maxUnavailable are both set")
	case p.Spec.MinAvailable == nil && p.Spec.MaxUnavailable == nil:
		c.errorf("spec: neither minAvailable nor maxUnavailable is set")
	}
	return "selector, budget"
}

func checkServiceMonitor(c *checker, s *monitoringv1.ServiceMonitor) string {
	selector(c, "spec.selector", &s.Spec.Selector)
	if len(s.Spec.Endpoints) == 0 {
		c.errorf("spec.endpoints is empty")
	}
	for i, e := range s.Spec.Endpoints {
		f := fmt.Sprintf("spec.endpoints[%d]", i)
		if e.Port == "" {
			c.errorf("%s.port is empty", f)
		}
		if e.Path != "" && !strings.HasPrefix(e.Path, "/") {
			c.errorf("%s.path %q does not start with /", f, e.Path)
		}
		if a := e.Authorization; a != nil && a.Credentials != nil && (a.Credentials.Name == "" || a.Credentials.Key == "") {
			c.errorf("%s.authorization.credentials needs name and key", f)
		}
	}
	return fmt.Sprintf("%d endpoint(s)", len(s.Spec.Endpoints))
}

// checkReferences checks what ties the objects together: selectors select
// the Deployment's pods, named ports exist, referenced ConfigMaps and
// ServiceAccounts are rendered.
func checkReferences(c *checker, objs []*Object) string {
	var deps []*appsv1.Deployment
	services := map[string]*corev1.Service{}
	accounts := map[string]bool{"default": true}
	for _, o := range objs {
		switch obj := o.Obj.(type) {
		case *appsv1.Deployment:
			deps = append(deps, obj)
		case *corev1.Service:
			services[obj.Name] = obj
		case *corev1.ServiceAccount:
			accounts[obj.Name] = true
		}
	}
	n := 0
	// selects returns the pod ports of the Deployment whose pods sel selects.
	selects := func(sel labels.Selector) (map[string]int32, bool) {
		for _, d := range deps {
			if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
				ports := map[string]int32{}
				for _, ct := range d.Spec.Template.Spec.Containers {
					for _, p := range ct.Ports {
						ports[p.Name] = p.ContainerPort
					}
				}
				return ports, true
			}
		}
		return nil, false
	}
	for _, o := range objs {
		switch obj := o.Obj.(type) {
		case *appsv1.Deployment:
			spec := obj.Spec.Template.Spec
			if !accounts[spec.ServiceAccountName] && spec.ServiceAccountName != "" {
				c.errorf("%s: serviceAccountName %q is not rendered", o.ID(), spec.ServiceAccountName)
			}
			n++
		case *corev1.Service:
			if len(obj.Spec.Selector) == 0 {
				c.errorf("%s: spec.selector is empty", o.ID())
				continue
			}
			ports, ok := selects(labels.SelectorFromSet(obj.Spec.Selector))
			if !ok {
				c.errorf("%s: spec.selector %v selects no Deployment's pods", o.ID(), obj.Spec.Selector)
				continue
			}
			for _, p := range obj.Spec.Ports {
				if p.TargetPort.Type == intstr.String {
					if _, ok := ports[p.TargetPort.StrVal]; !ok {
						c.errorf("%s: targetPort %q: the pods have no port of that name", o.ID(), p.TargetPort.StrVal)
					}
				}
			}
			n++
		case *policyv1.PodDisruptionBudget:
			sel, err := metav1.LabelSelectorAsSelector(obj.Spec.Selector)
			if err != nil {
				continue // reported by checkPDB
			}
			if _, ok := selects(sel); !ok {
				c.errorf("%s: spec.selector %v selects no Deployment's pods", o.ID(), sel)
			}
			n++
		case *monitoringv1.ServiceMonitor:
			sel, err := metav1.LabelSelectorAsSelector(&obj.Spec.Selector)
			if err != nil {
				continue
			}
			var svc *corev1.Service
			for _, s := range services {
				if sel.Matches(labels.Set(s.Labels)) {
					svc = s
				}
			}
			if svc == nil {
				c.errorf("%s: spec.selector %v selects no rendered Service", o.ID(), sel)
				continue
			}
			if ns := obj.Spec.NamespaceSelector; !ns.Any && !slices.Contains(ns.MatchNames, svc.Namespace) && !(len(ns.MatchNames) == 0 && obj.Namespace == svc.Namespace) {
				c.errorf("%s: spec.namespaceSelector %v leaves out the Service's namespace %q", o.ID(), ns.MatchNames, svc.Namespace)
			}
			for _, e := range obj.Spec.Endpoints {
				found := false
				for _, p := range svc.Spec.Ports {
					found = found || p.Name == e.Port
				}
				if !found {
					c.errorf("%s: endpoint port %q: Service %s has no port of that name", o.ID(), e.Port, svc.Name)
				}
			}
			n++
		}
	}
	status := "ok  "
	if len(c.errs) > 0 {
		status = "FAIL"
	}
	return fmt.Sprintf("%s references: %d object(s) checked against the others (selectors, port names, service account)", status, n)
}
