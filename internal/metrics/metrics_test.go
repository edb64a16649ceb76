package metrics

import (
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"strconv"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// TestErrorKindsComplete checks that ErrorKinds lists every Err constant
// of this package, so that InitFlow creates every kind.
func TestErrorKindsComplete(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "metrics.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var consts []string
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok {
			return true
		}
		for i, name := range vs.Names {
			if strings.HasPrefix(name.Name, "Err") && i < len(vs.Values) {
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok {
					v, _ := strconv.Unquote(lit.Value)
					consts = append(consts, v)
				}
			}
		}
		return true
	})
	kinds := ErrorKinds()
	if len(consts) < 20 {
		t.Fatalf("found only %d Err constants: %v", len(consts), consts)
	}
	slices.Sort(consts)
	slices.Sort(kinds)
	if !slices.Equal(consts, kinds) {
		t.Errorf("ErrorKinds() = %v, want every Err constant %v", kinds, consts)
	}
}

func TestInitFlow(t *testing.T) {
	m := New()
	m.InitFlow("a")
	m.InitFlow("a") // again: no change
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, fam := range fams {
		if fam.GetName() != "kmirror_errors_total" {
			continue
		}
		for _, s := range fam.GetMetric() {
			if label(s, "flow") == "a" {
				got[label(s, "kind")] = s.GetCounter().GetValue()
			}
		}
	}
	for _, kind := range ErrorKinds() {
		if v, ok := got[kind]; !ok || v != 0 {
			t.Errorf("kmirror_errors_total{flow=a,kind=%s} = %v (present %t), want 0", kind, v, ok)
		}
	}
	if len(got) != len(ErrorKinds()) {
		t.Errorf("%d series, want %d", len(got), len(ErrorKinds()))
	}
}

func TestBuildInfo(t *testing.T) {
	m := New()
	m.SetBuildInfo("v0.1.0", "abc", "go1.0")
	m.SetBuildInfo("v1.2.3", "0123abcd", "go1.26.8") // replaces the first
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var series []*dto.Metric
	for _, fam := range fams {
		if fam.GetName() == "kmirror_build_info" {
			series = fam.GetMetric()
		}
	}
	if len(series) != 1 {
		t.Fatalf("%d kmirror_build_info series, want 1", len(series))
	}
	s := series[0]
	if label(s, "version") != "v1.2.3" || label(s, "commit") != "0123abcd" || label(s, "goversion") != "go1.26.8" || s.GetGauge().GetValue() != 1 {
		t.Errorf("kmirror_build_info = %v", s)
	}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
