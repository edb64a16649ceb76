package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/heartbeat"
	"github.com/kmirror/kmirror/internal/status"
)

// TestHeartbeatsAndStatus runs a flow with heartbeats every second and no
// data traffic, with heartbeats written to the target (the default: they
// land in the target's "heartbeats" topic) and to the source (the
// heartbeat topic is replicated although the flow's topics do not name
// it): kmirror_heartbeat_age_seconds stays below 3 s, and grows while the
// source is down; `kmirror status` prints the flow running with lag 0 and
// a fresh heartbeat (as a table and as JSON), exits 1 while the source is
// down, still printing the flow; and after 500 records written with the
// flow stopped it prints lag 500.
func TestHeartbeatsAndStatus(t *testing.T) {
	for _, tt := range []struct {
		location, topic, topics string
	}{
		{location: "target", topic: "heartbeats", topics: "1 topic, 2 partitions"},
		{location: "source", topic: "src.heartbeats", topics: "2 topics, 3 partitions"},
	} {
		t.Run(tt.location, func(t *testing.T) {
			testHeartbeatsAndStatus(t, tt.location, tt.topic, tt.topics)
		})
	}
}

// testHeartbeatsAndStatus is TestHeartbeatsAndStatus with heartbeats
// written to location, found on the target in topic; topics is what
// status says of the replicated topics.
func testHeartbeatsAndStatus(t *testing.T, location, hbTopic, topics string) {
	p := startPair(t)
	const topic, n = "orders", 500
	createTopic(t, p.srcCl, topic, 2, nil)
	httpAddr := freeAddr(t)
	cfgPath := writeConfig(t, p.flowConfig(httpAddr, `
topics: ["orders"]
heartbeat_interval: 1s
heartbeat_location: `+location+`
topic_refresh_interval: 500ms
`))
	k := startKmirror(t, cfgPath, httpAddr)
	const ageSeries = `kmirror_heartbeat_age_seconds{flow="e2e"}`
	const latencySeries = `kmirror_heartbeat_latency_seconds{flow="e2e"}`
	metric := func(series string) (float64, bool) {
		_, body, err := k.get("/metrics")
		if err != nil {
			return 0, false
		}
		return metricValue(body, series)
	}

	// The first heartbeat arrives on the target.
	took := waitFor(t, 2*time.Minute, "a heartbeat on the target", func() (bool, string) {
		_, ok := metric(latencySeries)
		age, _ := metric(ageSeries)
		return ok, fmt.Sprintf("no %s yet; age %.1fs", latencySeries, age)
	})
	t.Logf("first heartbeat seen on the target %s after start", took.Round(time.Millisecond))

	// With no data traffic the age stays below 3 s.
	var ages []float64
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		if v, ok := metric(ageSeries); ok {
			ages = append(ages, v)
		}
	}
	maxAge := 0.0
	for _, a := range ages {
		maxAge = max(maxAge, a)
	}
	lat, _ := metric(latencySeries)
	sent, _ := metric(`kmirror_heartbeats_sent_total{flow="e2e"}`)
	t.Logf("heartbeat age over 6 s: %d samples, max %.2fs; latency %.1fms; %v heartbeats sent", len(ages), maxAge, lat*1000, sent)
	if len(ages) < 6 || maxAge >= 3 {
		t.Errorf("heartbeat age samples %v, want at least 6, all below 3 s", ages)
	}
	if sent < 3 {
		t.Errorf("kmirror_heartbeats_sent_total = %v, want at least 3", sent)
	}

	// The heartbeats on the target are the documented records.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	copies := readLog(t, ctx, p.dstCl, hbTopic)
	var hb heartbeat.Record
	var count int
	for _, recs := range copies {
		for _, r := range recs {
			h, err := heartbeat.Decode(r)
			if err != nil {
				t.Fatalf("record on %s is not a heartbeat: %v: key %q value %s", hbTopic, err, r.Key, r.Value)
			}
			if !r.Timestamp.Equal(h.Time()) {
				t.Errorf("heartbeat timestamp %v, ts_ms %v; want equal", r.Timestamp, h.Time())
			}
			hb, count = h, count+1
		}
	}
	if count == 0 || hb.Flow != "e2e" || hb.Source != "src" || hb.Target != "dst" {
		t.Fatalf("%d heartbeats on %s, last %+v; want some of flow e2e, src to dst", count, hbTopic, hb)
	}
	t.Logf("%d heartbeats on %s; newest %s: %+v", count, hbTopic, time.Since(hb.Time()).Round(time.Millisecond), hb)
	if src := sum(endOffsets(t, p.srcCl, "heartbeats")); (location == "target") != (src == 0) {
		t.Errorf("%d records in the source's heartbeats topic with heartbeat_location: %s", src, location)
	}

	// kmirror status, while the flow runs: lag 0 and a fresh heartbeat.
	statusCmd := func(extra ...string) runResult {
		t.Helper()
		res := runKmirrorOnce(t, time.Minute, append([]string{"status", "--config", cfgPath}, extra...)...)
		if res.timedOut {
			t.Fatalf("kmirror status did not end within a minute:\n%s%s", res.stdout, res.stderr)
		}
		return res
	}
	hbAge := regexp.MustCompile(`last heartbeat  ([0-9.]+)s ago`)
	var text runResult
	waitFor(t, time.Minute, "kmirror status to show the flow running, lag 0, a fresh heartbeat", func() (bool, string) {
		text = statusCmd()
		m := hbAge.FindStringSubmatch(text.stdout)
		fresh := m != nil && parseFloat(m[1]) < 3
		return text.code == 0 && strings.Contains(text.stdout, "state           running") &&
			strings.Contains(text.stdout, "lag             0 records\n") && fresh, fmt.Sprintf("exit %d:\n%s%s", text.code, text.stdout, text.stderr)
	})
	t.Logf("kmirror status (%s):\n%s", text.elapsed.Round(time.Millisecond), text.stdout)
	for _, want := range []string{"topics          " + topics, "last error      none", "src → dst  e2e"} {
		if !strings.Contains(text.stdout, want) {
			t.Errorf("status output lacks %q", want)
		}
	}

	js := statusCmd("--json")
	rep := parseStatus(t, js)
	f := rep.Flows[0]
	if js.code != 0 || f.State != status.StateRunning || f.LagRecords == nil || *f.LagRecords != 0 || f.Heartbeat == nil ||
		f.Heartbeat.Topic != hbTopic || f.Heartbeat.AgeSeconds == nil || *f.Heartbeat.AgeSeconds >= 3 || f.Heartbeat.LatencyMs == nil ||
		f.Topics == nil || !strings.HasPrefix(topics, strconv.Itoa(*f.Topics)+" ") || f.Owner == "" || len(rep.Routes) != 1 || strings.Join(rep.Routes[0].Hops, ",") != "src,dst" {
		t.Errorf("status --json (exit %d) = %s", js.code, js.stdout)
	}

	// The source goes down: no heartbeat arrives and the age grows;
	// status cannot read the source and says so, exit 1.
	p.src.Stop()
	stoppedAt := time.Now()
	var seen []string
	waitFor(t, time.Minute, "the heartbeat age to grow past 6 s with the source down", func() (bool, string) {
		v, _ := metric(ageSeries)
		seen = append(seen, strconv.FormatFloat(v, 'f', 1, 64))
		return v > 6, strings.Join(seen, " ")
	})
	t.Logf("source down: heartbeat age grew to 6 s in %s (samples %s)", time.Since(stoppedAt).Round(time.Millisecond), strings.Join(seen, " "))
	down := statusCmd()
	t.Logf("kmirror status with the source down (exit %d, %s):\n%s", down.code, down.elapsed.Round(time.Millisecond), down.stdout)
	if down.code != 1 || !strings.Contains(down.stdout, "state           running") || !strings.Contains(down.stdout, `error           cluster "src"`) {
		t.Errorf("status with the source down: exit %d, want 1, the flow running and an error naming cluster src:\n%s%s", down.code, down.stdout, down.stderr)
	}
	p.src.Restart()
	back := waitFor(t, 2*time.Minute, "a fresh heartbeat once the source is back", func() (bool, string) {
		v, _ := metric(ageSeries)
		return v < 3, fmt.Sprintf("age %.1fs", v)
	})
	t.Logf("source back: heartbeat age below 3 s again %s after the restart", back.Round(time.Millisecond))

	// The flow stops; 500 records arrive on the source: status shows the
	// flow not running, lag 500, and the fault of the outage.
	k.stop()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: topic, Partition: int32(i % 2), Value: []byte(strconv.Itoa(i))}
	}
	produce(t, p.srcCl, recs)
	stopped := statusCmd()
	t.Logf("kmirror status with the flow stopped:\n%s", stopped.stdout)
	if stopped.code != 0 || !strings.Contains(stopped.stdout, "state           not running (stopped cleanly") ||
		!strings.Contains(stopped.stdout, "lag             500 records, ") {
		t.Errorf("status with the flow stopped: exit %d, want 0, not running, lag 500:\n%s%s", stopped.code, stopped.stdout, stopped.stderr)
	}
	js = statusCmd("--json")
	f = parseStatus(t, js).Flows[0]
	if f.State != status.StateNotRunning || f.LagRecords == nil || *f.LagRecords != n || f.LagSeconds == nil || *f.LagSeconds <= 0 || *f.LagSeconds > 120 {
		t.Errorf("status --json with the flow stopped: %s", js.stdout)
	}
	if f.LastError == nil {
		t.Errorf("no last error after the source was down: %s", js.stdout)
	} else {
		t.Logf("last error: %+v", *f.LastError)
	}
	if f.Heartbeat == nil || f.Heartbeat.AgeSeconds == nil {
		t.Errorf("no heartbeat age with the flow stopped: %s", js.stdout)
	} else {
		t.Logf("stopped: lag %d records, %.1fs; heartbeat %.1fs old", *f.LagRecords, *f.LagSeconds, *f.Heartbeat.AgeSeconds)
	}
}

// parseStatus parses the output of kmirror status --json into the
// documented schema.
func parseStatus(t *testing.T, res runResult) status.Report {
	t.Helper()
	var rep status.Report
	dec := json.NewDecoder(strings.NewReader(res.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("status --json output does not parse: %v\n%s%s", err, res.stdout, res.stderr)
	}
	if len(rep.Flows) != 1 || rep.Flows[0].Name != "e2e" {
		t.Fatalf("status --json: flows %+v, want flow e2e alone", rep.Flows)
	}
	return rep
}

func parseFloat(s string) float64 {
	v, _ := strconv.ParseFloat(s, 64)
	return v
}
