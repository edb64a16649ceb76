package monitoring

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/kmirror/kmirror/internal/metrics"
)

// planned are metrics the rules name before kmirror exports them.
var planned = map[string]bool{}

// exported returns the names of every series kmirror exports, histogram
// series included, from the registry metrics.New builds.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	m := metrics.New()
	ch := make(chan *prometheus.Desc, 256)
	go func() {
		m.Registry.Describe(ch)
		close(ch)
	}()
	nameRe := regexp.MustCompile(`fqName: "([^"]+)"`)
	out := map[string]bool{}
	for d := range ch {
		match := nameRe.FindStringSubmatch(d.String())
		if match == nil {
			t.Fatalf("no name in %s", d)
		}
		name := match[1]
		out[name] = true
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			out[name+suffix] = true // histograms (and harmless for the others)
		}
	}
	if !out["kmirror_recovery_point_seconds"] || !out["kmirror_replication_latency_seconds_bucket"] {
		t.Fatalf("the registry lacks known metrics: %v", out)
	}
	return out
}

// kmirrorNames returns the kmirror_ metric names an expression uses.
// Label names and values never start with kmirror_ in these files.
func kmirrorNames(expr string) []string {
	return regexp.MustCompile(`\bkmirror_[a-zA-Z0-9_]+`).FindAllString(expr, -1)
}

type dashboard struct {
	SchemaVersion int     `json:"schemaVersion"`
	Title         string  `json:"title"`
	UID           string  `json:"uid"`
	Panels        []panel `json:"panels"`
	Inputs        []struct {
		Name     string `json:"name"`
		PluginID string `json:"pluginId"`
	} `json:"__inputs"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Query struct {
				Query string `json:"query"`
			} `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct{ H, W, X, Y int }
	Targets    []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a collapsed row
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

func TestDashboard(t *testing.T) {
	b, err := os.ReadFile("kmirror-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("kmirror-dashboard.json: %v", err)
	}
	if d.SchemaVersion < 39 {
		t.Errorf("schemaVersion %d, want at least 39", d.SchemaVersion)
	}
	if d.Title == "" || d.UID == "" {
		t.Errorf("title %q, uid %q: want both", d.Title, d.UID)
	}
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].PluginID != "prometheus" {
		t.Errorf("__inputs = %+v, want one Prometheus input DS_PROMETHEUS", d.Inputs)
	}
	known := exported(t)
	ids := map[int]string{}
	var used []string
	var check func(ps []panel)
	check = func(ps []panel) {
		for _, p := range ps {
			if p.ID <= 0 {
				t.Errorf("panel %q: id %d", p.Title, p.ID)
			}
			if other, dup := ids[p.ID]; dup {
				t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
			}
			ids[p.ID] = p.Title
			if p.Type == "row" {
				check(p.Panels)
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${DS_PROMETHEUS}" {
				t.Errorf("panel %q: datasource %+v, want uid ${DS_PROMETHEUS}", p.Title, p.Datasource)
			}
			if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
				t.Errorf("panel %q: gridPos %+v", p.Title, p.GridPos)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				names := kmirrorNames(tg.Expr)
				if len(names) == 0 {
					t.Errorf("panel %q: query %q names no kmirror metric", p.Title, tg.Expr)
				}
				for _, n := range names {
					if !known[n] {
						t.Errorf("panel %q: query %q names %s, which kmirror does not export", p.Title, tg.Expr, n)
					}
					used = append(used, n)
				}
			}
		}
	}
	check(d.Panels)
	for _, v := range d.Templating.List {
		for _, n := range kmirrorNames(v.Query.Query) {
			if !known[n] {
				t.Errorf("variable %q names %s, which kmirror does not export", v.Name, n)
			}
		}
	}
	// The dashboard shows what the monitoring guide promises.
	for _, want := range []string{
		"kmirror_replicated_records_total", "kmirror_partition_lag_records", "kmirror_replication_latency_seconds_bucket",
		"kmirror_errors_total", "kmirror_group_checkpoint_age_seconds", "kmirror_recovery_point_records",
		"kmirror_recovery_point_bytes", "kmirror_recovery_point_seconds", "kmirror_heartbeat_age_seconds",
		"kmirror_cluster_up", "kmirror_partitions_owned",
	} {
		if !slices.Contains(used, want) {
			t.Errorf("no panel shows %s", want)
		}
	}
	t.Logf("%d panels, %d metric references", len(ids), len(used))
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// TestAlertRules checks what promtool does not: that the rules name only
// metrics kmirror exports, and carry a severity and a summary. promtool
// checks the syntax and runs kmirror-alerts_test.yaml (scripts/test.sh).
func TestAlertRules(t *testing.T) {
	b, err := os.ReadFile("kmirror-alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("kmirror-alerts.yaml: %v", err)
	}
	known := exported(t)
	alerts := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if alerts[r.Alert] {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			alerts[r.Alert] = true
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("alert %s: severity %q", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s: no summary or description", r.Alert)
			}
			names := kmirrorNames(r.Expr)
			if len(names) == 0 {
				t.Errorf("alert %s: %q names no kmirror metric", r.Alert, r.Expr)
			}
			for _, n := range names {
				if !known[n] && !planned[n] {
					t.Errorf("alert %s: %q names %s, which kmirror does not export", r.Alert, r.Expr, n)
				}
			}
		}
	}
	for _, want := range []string{
		"KmirrorLagGrowing", "KmirrorRecoveryPointHigh", "KmirrorGroupCheckpointStale", "KmirrorClusterDown",
		"KmirrorErrorsRising", "KmirrorVerifyMismatch", "KmirrorFlowNotReplicating", "KmirrorHeartbeatStale",
		"KmirrorPartitionsStopped", "KmirrorRecordsLost",
	} {
		if !alerts[want] {
			t.Errorf("no alert %s", want)
		}
	}
	t.Logf("%d alerts", len(alerts))
}

// TestNamesCatchTypos makes sure the check above can fail.
func TestNamesCatchTypos(t *testing.T) {
	known := exported(t)
	for _, n := range kmirrorNames(`sum(rate(kmirror_replicated_record_total[5m])) / kmirror_cluster_up`) {
		if n == "kmirror_replicated_record_total" && known[n] {
			t.Error("a misspelt metric passes as exported")
		}
		if n == "kmirror_cluster_up" && !known[n] {
			t.Error("kmirror_cluster_up not exported")
		}
	}
}
