package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/verify"
	"github.com/kmirror/kmirror/test/kafkatest"
)

// badInputDeadline is how long kmirror may take to give up on bad input.
const badInputDeadline = 15 * time.Second

// TestBadInputExits runs the real binary on bad configurations and
// unreachable clusters. Each must make kmirror exit quickly with the
// documented code and a single-line error on stderr that names the file,
// line, key and offending value (or the cluster and its address). None of
// the cases needs Kafka.
func TestBadInputExits(t *testing.T) {
	// Lines 1-5 of most cases; the flow starts on line 6.
	const clusters = `clusters:
  primary:
    bootstrap_servers: ["127.0.0.1:9092"]
  dr:
    bootstrap_servers: ["127.0.0.1:9192"]
`
	const flow = `flows:
  - source: primary
    target: dr
`
	// A "broker" that accepts connections and never answers, like a hung
	// JVM or a proxy with no backend behind it.
	silent := silentListener(t)

	type testCase struct {
		name string
		// config is the file's content, with {{A}} and {{B}} replaced by
		// two loopback addresses where nothing listens; "" means no file.
		config   string
		wantCode int
		// want are substrings of the error line; {{FILE}} is the config
		// path, {{A}} the unreachable address.
		want []string
		// wantLine, if set, matches the line number the error names.
		wantLine func(int) bool
		// size, if set, extends the file to that many bytes (zeros).
		size int64
		// env is added to kmirror's environment; notWant are substrings
		// the error line must not contain.
		env, notWant []string
		// fast, if set, is how long kmirror may take to exit.
		fast time.Duration
	}
	// Hostile configs: each must be refused in well under 2 s.
	var mergeBomb strings.Builder
	mergeBomb.WriteString("clusters:\n  c0: &c0 {bootstrap_servers: [\"127.0.0.1:9092\"]}\n")
	for i := 1; i <= 9; i++ {
		refs := strings.Repeat(fmt.Sprintf("*c%d,", i-1), 9)
		fmt.Fprintf(&mergeBomb, "  c%d: &c%d {<<: [%s]}\n", i, i, strings.TrimSuffix(refs, ","))
	}
	mergeBomb.WriteString("flows: [{source: c0, target: c1}]\n")
	const secret = "Qz7Kx9-not-a-number"
	cases := []testCase{
		{
			name:     "missing config file",
			wantCode: 2,
			want:     []string{`"{{FILE}}"`, "no such file or directory"},
		},
		{
			name:     "yaml syntax error: tab indentation",
			config:   "clusters:\n  primary:\n\tbootstrap_servers: [\"127.0.0.1:9092\"]\n" + flow,
			wantCode: 2,
			want:     []string{"{{FILE}}:3: ", "invalid YAML"},
		},
		{
			// The flow sequence opened on line 4 is never closed; the
			// parser notices on a later line. Line 3 and before are fine.
			name:     "yaml syntax error: unclosed flow sequence",
			config:   "clusters:\n  primary:\n    bootstrap_servers: [\"127.0.0.1:9092\"]\n  dr: [\"127.0.0.1:9192\"\n" + flow,
			wantCode: 2,
			want:     []string{"{{FILE}}:", "invalid YAML"},
			wantLine: func(l int) bool { return l >= 4 && l <= 9 },
		},
		{
			name:     "unknown source cluster",
			config:   clusters + "flows:\n  - source: primry\n    target: dr\n",
			wantCode: 2,
			want:     []string{"{{FILE}}:7: ", "flows[0].source: ", `"primry"`, "dr, primary"},
		},
		{
			name:     "unknown target cluster",
			config:   clusters + "flows:\n  - source: primary\n    target: DR\n",
			wantCode: 2,
			want:     []string{"{{FILE}}:8: ", "flows[0].target: ", `"DR"`, "dr, primary"},
		},
		{
			name:     "invalid regex in topics",
			config:   clusters + flow + "    topics: [\"orders\", \"orders.(*\"]\n",
			wantCode: 2,
			want:     []string{"{{FILE}}:9: ", "flows[0].topics[1]: ", `"orders.(*"`, "missing argument to repetition operator"},
		},
		{
			name:     "invalid regex in topics_exclude",
			config:   clusters + flow + "    topics_exclude:\n      - 'tmp\\..*'\n      - 'a['\n",
			wantCode: 2,
			want:     []string{"{{FILE}}:11: ", "flows[0].topics_exclude[1]: ", `"a["`, "missing closing ]"},
		},
		{
			name:     "unknown topic_naming",
			config:   clusters + flow + "    topic_naming: mirror\n",
			wantCode: 2,
			want:     []string{"{{FILE}}:9: ", "flows[0].topic_naming: ", `"mirror"`, "prefix", "identity"},
		},
		{
			name:     "merge bomb",
			config:   mergeBomb.String(),
			wantCode: 2,
			want:     []string{"{{FILE}}:7: ", "too many keys and list items"},
			fast:     2 * time.Second,
		},
		{
			name:     "deeply nested regex",
			config:   clusters + flow + "    topics: ['" + strings.Repeat("(", 999) + "a" + strings.Repeat(")", 999) + "']\n",
			wantCode: 2,
			want:     []string{"{{FILE}}:9: ", "flows[0].topics[0]: ", "expression nests too deeply"},
			fast:     2 * time.Second,
		},
		{
			name:     "100 MB config file",
			config:   clusters + flow,
			size:     100 << 20,
			wantCode: 2,
			want:     []string{"{{FILE}}: ", "config file of 104857600 bytes is too large"},
			fast:     2 * time.Second,
		},
		{
			name:     "secret from the environment in a number",
			config:   clusters + flow + "    replication_factor: ${KMIRROR_TEST_SECRET}\n",
			env:      []string{"KMIRROR_TEST_SECRET=" + secret},
			wantCode: 2,
			want:     []string{"{{FILE}}:9: ", "flows[0].replication_factor: ", `got "${KMIRROR_TEST_SECRET}"`},
			notWant:  []string{secret, "Qz7Kx9"},
		},
		{
			name: "bootstrap server refuses connections",
			config: `clusters:
  primary:
    bootstrap_servers: ["{{A}}"]
  dr:
    bootstrap_servers: ["{{B}}"]
` + flow + "http:\n  listen: 127.0.0.1:0\n",
			wantCode: 1,
			want:     []string{`"primary"`, "{{A}}", "unreachable"},
		},
		{
			// Connecting works but the broker never answers; the startup
			// check is bounded (12 s, and here dial_timeout 2s per ping),
			// so this must not wait for request_timeout (30 s).
			name: "bootstrap server accepts but never answers",
			config: `clusters:
  primary:
    bootstrap_servers: ["` + silent + `"]
    dial_timeout: 2s
  dr:
    bootstrap_servers: ["{{B}}"]
` + flow + "http:\n  listen: 127.0.0.1:0\n",
			wantCode: 1,
			want:     []string{`"primary"`, silent, "unreachable"},
		},
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			addrA, addrB := freeAddr(t), freeAddr(t)
			path := filepath.Join(t.TempDir(), "missing", "kmirror.yaml")
			if tc.config != "" {
				body := strings.NewReplacer("{{A}}", addrA, "{{B}}", addrB).Replace(tc.config)
				path = writeConfig(t, body)
				if tc.size > 0 {
					if err := os.Truncate(path, tc.size); err != nil {
						t.Fatal(err)
					}
				}
			}
			res := runKmirrorEnv(t, badInputDeadline, tc.env, "run", "--config", path)
			t.Logf("exit %d after %s; stderr: %s", res.code, res.elapsed.Round(time.Millisecond), strings.TrimSpace(res.stderr))

			if res.timedOut {
				t.Fatalf("kmirror still running %s after start (killed); stderr so far: %q", badInputDeadline, res.stderr)
			}
			if res.code == 0 {
				t.Errorf("exit code 0, want non-zero (%d)", tc.wantCode)
			} else if res.code != tc.wantCode {
				t.Errorf("exit code %d, want %d", res.code, tc.wantCode)
			}
			if res.stdout != "" {
				t.Errorf("unexpected output on stdout: %q", res.stdout)
			}
			// Exactly one line on stderr: the error, and nothing else.
			if !strings.HasSuffix(res.stderr, "\n") || strings.Count(res.stderr, "\n") != 1 {
				t.Fatalf("stderr is not exactly one line: %q", res.stderr)
			}
			line := strings.TrimSuffix(res.stderr, "\n")
			if !strings.HasPrefix(line, "kmirror: ") {
				t.Errorf("error line does not start with %q: %q", "kmirror: ", line)
			}
			for _, w := range tc.want {
				w = strings.NewReplacer("{{FILE}}", path, "{{A}}", addrA).Replace(w)
				if !strings.Contains(line, w) {
					t.Errorf("error line does not contain %q: %q", w, line)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(res.stderr, w) {
					t.Errorf("stderr contains %q: %q", w, res.stderr)
				}
			}
			if tc.fast > 0 && res.elapsed > tc.fast {
				t.Errorf("kmirror took %s to exit, want < %s", res.elapsed, tc.fast)
			}
			if tc.wantLine != nil {
				m := regexp.MustCompile(regexp.QuoteMeta(path) + `:(\d+): `).FindStringSubmatch(line)
				if m == nil {
					t.Errorf("error line names no %s:LINE: %q", path, line)
				} else if n, _ := strconv.Atoi(m[1]); !tc.wantLine(n) {
					t.Errorf("error line names line %d, which holds no problem:\n%s\n---\n%s", n, line, numberLines(tc.config))
				}
			}
		})
	}
}

// runResult is the outcome of one kmirror process run to its end.
type runResult struct {
	code           int
	stdout, stderr string
	elapsed        time.Duration
	timedOut       bool
}

// runKmirrorOnce runs the binary with args and waits up to limit for it to
// exit; past that it kills it and reports timedOut.
func runKmirrorOnce(t *testing.T, limit time.Duration, args ...string) runResult {
	t.Helper()
	return runKmirrorEnv(t, limit, nil, args...)
}

// runKmirrorEnv is runKmirrorOnce with env ("KEY=value") added to the
// environment.
func runKmirrorEnv(t *testing.T, limit time.Duration, env []string, args ...string) runResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := command(ctx, t, args...)
	if env != nil {
		if cmd.Env == nil {
			cmd.Env = os.Environ()
		}
		cmd.Env = append(cmd.Env, env...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	res := runResult{elapsed: time.Since(start), stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		res.timedOut, res.code = true, -1
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("running kmirror: %v", err)
	}
	return res
}

// silentListener accepts TCP connections on loopback and never writes a
// byte; it stops when the test ends.
func silentListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

func numberLines(s string) string {
	var b strings.Builder
	for i, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		fmt.Fprintf(&b, "%3d  %s\n", i+1, l)
	}
	return b.String()
}

// TestClusterOutage stops each cluster of a running flow in turn (the
// target cleanly, the source cleanly, then the target with SIGKILL) while
// records keep arriving, and checks that kmirror reports it (/readyz,
// kmirror_cluster_up, kmirror_errors_total), keeps running, becomes ready
// again when the cluster is back and, in the end, has copied every source
// record, in order, to the target.
//
// kmirror is at-least-once: a write that fails is retried from the failed
// record (internal/replicate), so a record may reach the target twice but
// never be skipped or reordered. The test therefore accepts duplicates only
// as re-written runs of records already copied, and reports their number.
func TestClusterOutage(t *testing.T) {
	p := startPair(t)
	const topic = "events"
	createTopic(t, p.srcCl, topic, 3, nil)
	httpAddr := freeAddr(t)
	cfg := writeConfig(t, p.flowConfig(httpAddr, `
topics: ["events"]
topic_refresh_interval: 1s
`))
	k := startKmirror(t, cfg, httpAddr)
	waitFor(t, 30*time.Second, "kmirror to be ready", func() (bool, string) {
		code, body, err := k.get("/readyz")
		return code == 200, fmt.Sprintf("%d %q %v", code, body, err)
	})

	prod := startSeqProducer(t, p.srcCl, topic, 3)
	defer prod.stop()

	phases := []struct {
		name  string
		alias string // in the config
		role  string // in /readyz: source or target
		c     *kafkatest.Cluster
		// pause stops producing while the cluster is down: records cannot
		// be written to a stopped source.
		pause bool
		// kill stops the cluster with SIGKILL, as in a crash, instead of
		// a clean shutdown.
		kill bool
	}{
		{name: "target down", alias: "dst", role: "target", c: p.dst},
		{name: "source down", alias: "src", role: "source", c: p.src, pause: true},
		{name: "target killed", alias: "dst", role: "target", c: p.dst, kill: true},
	}
	for _, ph := range phases {
		ok := t.Run(ph.name, func(t *testing.T) {
			checkAlive := func() {
				t.Helper()
				select {
				case <-k.done:
					t.Fatalf("kmirror exited during the outage:\n%s", k.output())
				default:
				}
			}
			upSeries := fmt.Sprintf(`kmirror_cluster_up{cluster=%q,flow="e2e"}`, ph.alias)
			errSeries := `kmirror_errors_total{flow="e2e",kind="cluster_unreachable"}`
			_, body, _ := k.get("/metrics")
			errsBefore, _ := outageMetric(body, errSeries)

			// Records flow before the outage.
			prod.resume()
			base := sum(endOffsets(t, p.dstCl, "src."+topic))
			waitFor(t, 30*time.Second, "records to reach the target", func() (bool, string) {
				n := sum(endOffsets(t, p.dstCl, "src."+topic))
				return n >= base+200, fmt.Sprintf("target holds %d records, had %d", n, base)
			})
			if ph.pause {
				prod.pause()
			}

			stopped := time.Now()
			if ph.kill {
				ph.c.Kill()
			} else {
				ph.c.Stop()
			}
			t.Logf("%s cluster stopped (kill=%t) in %s", ph.role, ph.kill, time.Since(stopped).Round(time.Millisecond))
			waitFor(t, 15*time.Second, "/readyz to report 503", func() (bool, string) {
				code, body, err := k.get("/readyz")
				return code == 503 && strings.Contains(body, ph.role+"_up=false"), fmt.Sprintf("%d %q %v", code, body, err)
			})
			t.Logf("/readyz turned 503 %s after the stop began", time.Since(stopped).Round(time.Millisecond))
			waitFor(t, 15*time.Second, upSeries+" 0 and a new cluster_unreachable error", func() (bool, string) {
				_, body, err := k.get("/metrics")
				up, okUp := outageMetric(body, upSeries)
				errs, _ := outageMetric(body, errSeries)
				return okUp && up == 0 && errs > errsBefore, fmt.Sprintf("up=%v (present %t) errors=%v (before %v) err=%v", up, okUp, errs, errsBefore, err)
			})
			if !ph.pause {
				// Records keep arriving at the source while the target is
				// down; kmirror must hold them until it comes back.
				n0 := prod.acked()
				waitFor(t, 15*time.Second, "records produced while the target is down", func() (bool, string) {
					return prod.acked() >= n0+500, fmt.Sprintf("%d acked", prod.acked()-n0)
				})
			}
			checkAlive()

			restartBegan := time.Now()
			ph.c.Restart()
			restarted := time.Now()
			toReady := waitFor(t, 30*time.Second, "/readyz to report 200 again", func() (bool, string) {
				code, body, err := k.get("/readyz")
				return code == 200, fmt.Sprintf("%d %q %v", code, body, err)
			})
			_, body, _ = k.get("/metrics")
			if up, _ := outageMetric(body, upSeries); up != 1 {
				t.Errorf("%s = %v after the cluster came back, want 1", upSeries, up)
			}
			t.Logf("%s down for %s; restart took %s; ready again %s after the cluster was back",
				ph.role, restarted.Sub(stopped).Round(time.Millisecond), restarted.Sub(restartBegan).Round(time.Millisecond), toReady.Round(time.Millisecond))

			// More records after the outage, then a pause to compare.
			prod.resume()
			n0 := prod.acked()
			waitFor(t, 30*time.Second, "records produced after the outage", func() (bool, string) {
				return prod.acked() >= n0+300, fmt.Sprintf("%d acked", prod.acked()-n0)
			})
			prod.pause()
			checkAlive()
			caughtUp := time.Now()
			waitCaughtUp(t, k, p, topic, 90*time.Second)
			t.Logf("target caught up %s after the producer paused", time.Since(caughtUp).Round(time.Millisecond))
			checkAtLeastOnce(t, k, p, topic, "src."+topic, prod.produceErrors())
		})
		if !ok {
			break // the next phase would start from a broken state
		}
	}
	prod.stop()
	k.stop()
}

// waitCaughtUp waits until kmirror has acknowledged every source record of
// topic: its lag is 0 with no partition failing, and every target
// partition holds at least as many records as its source partition.
func waitCaughtUp(t *testing.T, k *proc, p *pair, topic string, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, "the target to catch up", func() (bool, string) {
		se, de := endOffsets(t, p.srcCl, topic), endOffsets(t, p.dstCl, "src."+topic)
		st, err := flowTotals(k)
		if err != nil {
			return false, err.Error()
		}
		ok := len(se) > 0 && len(de) == len(se) && st.Lag == 0 && st.Failing == 0
		for part, n := range se {
			ok = ok && de[part] >= n
		}
		return ok, fmt.Sprintf("source %v target %v kmirror %+v", se, de, st)
	})
}

type outageTotals struct {
	Records int64 `json:"records"`
	Lag     int64 `json:"lag"`
	Failing int   `json:"failing"`
}

// flowTotals reads the totals of the only flow from /api/flows.
func flowTotals(k *proc) (outageTotals, error) {
	code, body, err := k.get("/api/flows")
	if err != nil || code != 200 {
		return outageTotals{}, fmt.Errorf("/api/flows: %d %v", code, err)
	}
	var flows []struct {
		Totals outageTotals `json:"totals"` // field names match case-insensitively
	}
	if err := json.Unmarshal([]byte(body), &flows); err != nil || len(flows) != 1 {
		return outageTotals{}, fmt.Errorf("/api/flows: %v: %s", err, body)
	}
	out := flows[0].Totals
	return out, nil
}

// checkAtLeastOnce compares the target with the source record by record.
// An exact match passes. Otherwise every source record must be on the
// target, in source order, identical (key, value, headers, timestamp);
// extra target records may only be copies of records already copied (a
// retried write), and are counted and reported.
func checkAtLeastOnce(t *testing.T, k *proc, p *pair, source, target string, produceErrs int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := verify.Compare(ctx, p.srcCl, p.dstCl, []verify.Pair{{Source: source, Target: target}})
	if err != nil {
		t.Fatal(err)
	}
	tr := rep.Topics[0]
	_, body, _ := k.get("/metrics")
	dupMetric, _ := outageMetric(body, fmt.Sprintf(`kmirror_duplicate_records_total{flow="e2e",topic=%q}`, source))
	retried, _ := outageMetric(body, fmt.Sprintf(`kmirror_retried_records_total{flow="e2e",topic=%q}`, source))
	if tr.OK() {
		t.Logf("%s -> %s: exact copy: %d source records, %d target records, 0 duplicates (kmirror: %v retried, %v duplicates counted; producer errors while down: %d)",
			source, target, tr.SourceRecords, tr.TargetRecords, retried, dupMetric, produceErrs)
		return
	}
	// Not an exact copy: it may still be a correct at-least-once copy.
	srcRecs, err := verify.ReadAll(ctx, p.srcCl, source)
	if err != nil {
		t.Fatal(err)
	}
	dstRecs, err := verify.ReadAll(ctx, p.dstCl, target)
	if err != nil {
		t.Fatal(err)
	}
	var dups int64
	for part, src := range srcRecs {
		dst := dstRecs[part]
		index := make(map[string]int, len(src)) // value -> position in the source
		for i, r := range src {
			index[string(r.Value)] = i
		}
		next, bad := 0, 0
		for j, r := range dst {
			i, ok := index[string(r.Value)]
			switch {
			case !ok:
				t.Errorf("partition %d: target offset %d holds a record the source does not have: %q", part, r.Offset, r.Value)
			case verify.Diff(src[i], r) != "":
				t.Errorf("partition %d: target offset %d differs from source offset %d: %s", part, r.Offset, src[i].Offset, verify.Diff(src[i], r))
			case i == next:
				next++
				continue
			case i < next:
				dups++ // written again after a retry
				continue
			default:
				t.Errorf("partition %d: target record %d (offset %d) is source offset %d, but source offset %d is not on the target before it: records lost or reordered",
					part, j, r.Offset, src[i].Offset, src[next].Offset)
			}
			if bad++; bad > 3 {
				break
			}
		}
		if next != len(src) && bad == 0 {
			t.Errorf("partition %d: only the first %d of %d source records are on the target", part, next, len(src))
		}
	}
	t.Logf("%s -> %s: %d source records, %d target records: every source record on the target in order, %d duplicates (kmirror: %v retried, %v duplicates counted; producer errors while down: %d); exact comparison said: %v",
		source, target, tr.SourceRecords, tr.TargetRecords, dups, retried, dupMetric, produceErrs, tr.Mismatches)
}

// outageMetric finds the sample named exactly series (labels in the
// exposition's order, which is alphabetical) in a Prometheus text body.
func outageMetric(body, series string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// seqProducer writes 50 records every 100 ms to a topic, round-robin over
// its partitions, each value carrying a sequence number unique in the run.
// It can be paused (between batches) and tolerates failed writes.
type seqProducer struct {
	t      *testing.T
	cl     *kgo.Client
	paused atomic.Bool
	idle   chan struct{} // a token: held while a batch is being written
	quit   chan struct{}
	done   chan struct{}
	once   sync.Once
	n      atomic.Int64 // records acknowledged
	errs   atomic.Int64 // records that failed
}

func startSeqProducer(t *testing.T, cl *kgo.Client, topic string, partitions int32) *seqProducer {
	sp := &seqProducer{t: t, cl: cl, idle: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	sp.idle <- struct{}{}
	go func() {
		defer close(sp.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		var seq int64
		var lastErr time.Time
		for {
			select {
			case <-sp.quit:
				return
			case <-tick.C:
			}
			<-sp.idle
			if sp.paused.Load() {
				sp.idle <- struct{}{}
				continue
			}
			recs := make([]*kgo.Record, 50)
			for i := range recs {
				recs[i] = &kgo.Record{
					Topic:     topic,
					Partition: int32(seq % int64(partitions)),
					Key:       fmt.Appendf(nil, "key-%d", seq%97),
					Value:     fmt.Appendf(nil, "seq=%09d", seq),
					Headers:   []kgo.RecordHeader{{Key: "seq", Value: []byte(strconv.FormatInt(seq, 10))}},
				}
				seq++
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			res := sp.cl.ProduceSync(ctx, recs...)
			cancel()
			for _, r := range res {
				if r.Err != nil {
					sp.errs.Add(1)
					if time.Since(lastErr) > 5*time.Second {
						lastErr = time.Now()
						sp.t.Logf("producer: write failed (tolerated): %v", r.Err)
					}
				} else {
					sp.n.Add(1)
				}
			}
			sp.idle <- struct{}{}
		}
	}()
	return sp
}

// pause stops producing and returns once no batch is being written.
func (sp *seqProducer) pause() {
	sp.paused.Store(true)
	select {
	case <-sp.idle:
		sp.idle <- struct{}{}
	case <-sp.done:
	}
}

func (sp *seqProducer) resume()              { sp.paused.Store(false) }
func (sp *seqProducer) acked() int64         { return sp.n.Load() }
func (sp *seqProducer) produceErrors() int64 { return sp.errs.Load() }

// stop ends the producer and waits for it.
func (sp *seqProducer) stop() {
	sp.once.Do(func() { close(sp.quit) })
	<-sp.done
}
