package status

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/progress"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func ptr[T any](v T) *T { return &v }

// now is the time of the sample report.
var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// sampleReport has a running flow, a stopped one with lag and an error,
// and one whose target could not be reached.
func sampleReport() Report {
	ms := func(d time.Duration) int64 { return now.Add(-d).UnixMilli() }
	return Report{
		TimeMs: now.UnixMilli(),
		Config: "kmirror.yaml",
		Flows: []Flow{
			{
				Name: "primary-to-dr", Source: "primary", Target: "dr",
				State: StateRunning, StateDetail: "on host-a:4242, status written 2.1s ago", Owner: "host-a:4242",
				StatusUpdatedMs: ms(2100 * time.Millisecond),
				Topics:          ptr(3), Partitions: ptr(13),
				LagRecords: ptr[int64](0), LagSeconds: ptr(0.0),
				LatencyP50Ms: ptr(8.0), LatencyP99Ms: ptr(64.0),
				RecoveryPointBytes: ptr[int64](3 << 20), RecoveryPointSeconds: ptr(1.5),
				Heartbeat: &Heartbeat{Enabled: true, Topic: "primary.heartbeats", LastMs: ms(400 * time.Millisecond), AgeSeconds: ptr(0.4), LatencyMs: ptr(12.5)},
				GroupSync: &GroupSync{Enabled: true, Groups: 2, LastCheckpointMs: ms(time.Minute), AgeSeconds: ptr(3.2)},
			},
			{
				Name: "dr-to-archive", Source: "dr", Target: "archive",
				State: StateNotRunning, StateDetail: "stale status since 2026-03-01T11:55:00Z (5m0s ago, on host-b:7); the flow did not stop cleanly",
				StatusUpdatedMs: ms(5 * time.Minute),
				Topics:          ptr(1), Partitions: ptr(1),
				LagRecords: ptr[int64](500), LagSeconds: ptr(312.4),
				Heartbeat: &Heartbeat{Enabled: true, Topic: "heartbeats", LastMs: ms(5 * time.Minute), AgeSeconds: ptr(300.0)},
				LastError: &LastError{Kind: "cluster_unreachable", Message: `cluster "archive": no broker answered`, AtMs: ms(6 * time.Minute)},
				GroupSync: &GroupSync{Enabled: false},
			},
			{
				Name: "primary-to-eu", Source: "primary", Target: "eu", State: StateUnknown,
				Topics: ptr(3), Partitions: ptr(13),
				Errors: []string{`cluster "eu" (10.0.0.9:9092) unreachable: no broker answered`},
			},
		},
		Routes: []Route{
			{Origin: "dr", Target: "archive", Hops: []string{"dr", "archive"}, Flows: []string{"dr-to-archive"}},
			{Origin: "primary", Target: "archive", Hops: []string{"primary", "dr", "archive"}, Flows: []string{"primary-to-dr", "dr-to-archive"}},
			{Origin: "primary", Target: "dr", Hops: []string{"primary", "dr"}, Flows: []string{"primary-to-dr"}},
		},
	}
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run with -update after checking):\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func TestWriteTextGolden(t *testing.T) {
	var b bytes.Buffer
	if err := WriteText(&b, sampleReport()); err != nil {
		t.Fatal(err)
	}
	golden(t, "status.txt", b.Bytes())
}

func TestJSONGolden(t *testing.T) {
	b, err := json.MarshalIndent(sampleReport(), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "status.json", append(b, '\n'))
	// The document reads back into the same report.
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, sampleReport()) {
		t.Errorf("round trip differs:\n%+v\n%+v", back, sampleReport())
	}
}

// TestJSONSchemaKeys pins the documented keys of a flow.
func TestJSONSchemaKeys(t *testing.T) {
	b, err := json.Marshal(sampleReport().Flows[0])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	want := []string{"name", "source", "target", "state", "state_detail", "owner", "status_updated_ms", "topics", "partitions",
		"lag_records", "lag_seconds", "recovery_point_bytes", "recovery_point_seconds", "latency_p50_ms", "latency_p99_ms", "heartbeat", "last_error", "group_sync"}
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("keys = %v, want %v", got, want)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	r := Record{Flow: "f", Source: "a", Target: "b", State: StateRunning, Owner: "h:1", UpdatedMs: 5, LagRecords: ptr[int64](3),
		Heartbeat: &RecordHeartbeat{LastMs: 4, LatencyMs: 1.5}, LastError: &LastError{Kind: "produce", AtMs: 2}}
	kr, err := Encode("__kmirror.f.status", r)
	if err != nil {
		t.Fatal(err)
	}
	if string(kr.Key) != RecordKey || kr.Partition != 0 {
		t.Errorf("key %q partition %d", kr.Key, kr.Partition)
	}
	back, ok := Decode(kr)
	if !ok || !reflect.DeepEqual(back, r) {
		t.Errorf("Decode = %+v, %v; want %+v", back, ok, r)
	}
	kr.Key = []byte("other")
	if _, ok := Decode(kr); ok {
		t.Errorf("a record of another key decoded")
	}
}

func TestState(t *testing.T) {
	fresh := &Record{Owner: "h:1", UpdatedMs: now.Add(-2 * time.Second).UnixMilli(), IntervalMs: 5000,
		LatencyP50Ms: ptr(4.0), LatencyP99Ms: ptr(8.0), GroupSyncAgeSeconds: ptr(1.0),
		Heartbeat: &RecordHeartbeat{LastMs: 1, LatencyMs: 7}}
	stale := &Record{Owner: "h:1", UpdatedMs: now.Add(-time.Minute).UnixMilli(), IntervalMs: 5000}
	// Partitions of topic "a", which the flow replicates, and of a topic
	// it no longer does.
	a0, a1, gone := progress.Partition{Topic: "a"}, progress.Partition{Topic: "a", Partition: 1}, progress.Partition{Topic: "gone"}
	stopped := progress.Position{Stopped: true}
	for _, tc := range []struct {
		name       string
		rec        *Record
		loaded     progress.Loaded
		state      string
		detail     string
		hasLatency bool
	}{
		{"fresh record", fresh, progress.Loaded{Started: true}, StateRunning, "on h:1, status written 2.0s ago", true},
		{"fresh record, a partition still replicated", fresh, progress.Loaded{Started: true, Positions: map[progress.Partition]progress.Position{a0: stopped, a1: {}}},
			StateRunning, "on h:1, status written 2.0s ago", true},
		{"fresh record, only a deleted topic's partition not stopped", fresh, progress.Loaded{Started: true, Positions: map[progress.Partition]progress.Position{a0: stopped, gone: {}}},
			StateNotRunning, "stopped cleanly; last status 2026-03-01T11:59:58Z (2.0s ago, on h:1)", false},
		{"fresh record but stopped cleanly since", fresh, progress.Loaded{Started: true, Positions: map[progress.Partition]progress.Position{a0: stopped, a1: stopped}}, StateNotRunning, "stopped cleanly; last status 2026-03-01T11:59:58Z (2.0s ago, on h:1)", false},
		{"stale record", stale, progress.Loaded{Started: true, Positions: map[progress.Partition]progress.Position{a0: stopped, a1: {}}}, StateNotRunning, "stale status since 2026-03-01T11:59:00Z (1m0s ago, on h:1); the flow did not stop cleanly", false},
		{"never started", nil, progress.Loaded{}, StateNotRunning, "never started", false},
		{"started by an older kmirror", nil, progress.Loaded{Started: true}, StateNotRunning, "no status stored", false},
		{"stale record, nothing replicated", stale, progress.Loaded{Started: true}, StateNotRunning,
			"stale status since 2026-03-01T11:59:00Z (1m0s ago, on h:1); nothing replicated", false},
		{"failed over", nil, progress.Loaded{Started: true, Positions: map[progress.Partition]progress.Position{a0: stopped}, Failover: &progress.Failover{AtMs: now.Add(-time.Hour).UnixMilli()}},
			StateNotRunning, "stopped cleanly; failed over at 2026-03-01T11:00:00Z and not failed back", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := Flow{Heartbeat: &Heartbeat{Enabled: true}, GroupSync: &GroupSync{Enabled: true}}
			state(&fs, tc.rec, tc.loaded, progress.InTopics("a"), now)
			if fs.State != tc.state || fs.StateDetail != tc.detail {
				t.Errorf("state %q (%s), want %q (%s)", fs.State, fs.StateDetail, tc.state, tc.detail)
			}
			if (fs.LatencyP50Ms != nil) != tc.hasLatency || (fs.Heartbeat.LatencyMs != nil) != tc.hasLatency {
				t.Errorf("latency %v, heartbeat latency %v; want them only from a running flow", fs.LatencyP50Ms, fs.Heartbeat.LatencyMs)
			}
			if tc.hasLatency && (fs.GroupSync.AgeSeconds == nil || *fs.GroupSync.AgeSeconds != 3) {
				t.Errorf("group sync age %v, want 3 (1 s at the record, written 2 s ago)", fs.GroupSync.AgeSeconds)
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	cfg, err := config.Parse("kmirror.yaml", []byte(`clusters:
  a: {bootstrap_servers: ["127.0.0.1:1"]}
  b: {bootstrap_servers: ["127.0.0.1:2"]}
  c: {bootstrap_servers: ["127.0.0.1:3"]}
  d: {bootstrap_servers: ["127.0.0.1:4"]}
flows:
  - {name: ab, source: a, target: b, topic_naming: identity}
  - {name: bc, source: b, target: c, topic_naming: identity}
  - {name: ad, source: a, target: d}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	text := func(rs []Route) []string {
		var out []string
		for _, r := range rs {
			out = append(out, strings.Join(r.Hops, " → ")+" "+strings.Join(r.Flows, ","))
		}
		return out
	}
	want := []string{"a → b ab", "a → b → c ab,bc", "a → d ad", "b → c bc"}
	if got := text(Routes(cfg, cfg.Flows)); !slices.Equal(got, want) {
		t.Errorf("routes = %q, want %q", got, want)
	}
	only, err := Flows(cfg, "bc")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := text(Routes(cfg, only)), []string{"a → b → c ab,bc", "b → c bc"}; !slices.Equal(got, want) {
		t.Errorf("routes of flow bc = %q, want %q", got, want)
	}
	if _, err := Flows(cfg, "nope"); err == nil || !strings.Contains(err.Error(), "ab, bc, ad") {
		t.Errorf("Flows(nope) = %v, want an error listing the flows", err)
	}
}

func TestLatencyWindow(t *testing.T) {
	bounds := []float64{0.001, 0.01, 0.1, 1}
	hist := func(counts ...uint64) *dto.Histogram { // per-bucket counts, made cumulative
		h := &dto.Histogram{}
		var cum uint64
		for i, b := range bounds {
			cum += counts[i]
			h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: ptr(b), CumulativeCount: ptr(cum)})
		}
		h.SampleCount = ptr(cum + counts[len(bounds)])
		return h
	}
	w := LatencyWindow{Span: time.Minute}
	w.Add(now, hist(1000, 0, 0, 0, 0)) // old, fast samples
	if _, ok := w.Quantile(0.5); ok {
		t.Errorf("a quantile from a single snapshot")
	}
	w.Add(now.Add(30*time.Second), hist(1000, 0, 0, 0, 0))
	if _, ok := w.Quantile(0.5); ok {
		t.Errorf("a quantile of a window without samples")
	}
	w.Add(now.Add(90*time.Second), hist(1000, 98, 1, 1, 0))
	// The window is the last minute: the 100 samples since 30 s.
	if v, ok := w.Quantile(0.5); !ok || v != 10 {
		t.Errorf("p50 = %v, %v; want 10 ms", v, ok)
	}
	if v, ok := w.Quantile(0.99); !ok || v != 100 {
		t.Errorf("p99 = %v, %v; want 100 ms", v, ok)
	}
	w.Add(now.Add(100*time.Second), hist(1000, 98, 1, 1, 10)) // 10 above every bucket
	if v, ok := w.Quantile(0.99); !ok || v != 1000 {
		t.Errorf("p99 above the buckets = %v, %v; want the largest bound, 1000 ms", v, ok)
	}
}

func TestInstancesText(t *testing.T) {
	got := instancesText([]Instance{{Instance: "a:1", Partitions: 4, Elected: true}, {Instance: "b:2", Partitions: 1}})
	want := "2: a:1 (4 partitions, elected), b:2 (1 partition)"
	if got != want {
		t.Errorf("instancesText = %q, want %q", got, want)
	}
}
