package e2e

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"
)

// TestActiveActiveSurvivesSIGKILL runs active-active between two clusters
// with identity names (provenance on) while producers write the same
// topic on both, kills kmirror with SIGKILL in the middle, and restarts
// it: afterwards each cluster holds every record of both origins, none
// lost, each once but for the duplicates kmirror reports, in its origin's
// order; and no record goes round (end offsets still for 15 s).
func TestActiveActiveSurvivesSIGKILL(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	testActiveActiveSIGKILL(t, false)
}

// TestActiveActiveExactlyOnceSurvivesSIGKILL is
// TestActiveActiveSurvivesSIGKILL with exactly_once on both flows: each
// reads the other's copies read_committed and drops them by their
// provenance, and after the SIGKILL a read_committed consumer of each
// cluster sees every record of both origins exactly once (no duplicate at
// all), in its origin's order.
func TestActiveActiveExactlyOnceSurvivesSIGKILL(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	testActiveActiveSIGKILL(t, true)
}

func testActiveActiveSIGKILL(t *testing.T, exactlyOnce bool) {
	nodes := startNodes(t, "a", "b")
	const topic, parts, perOrigin = "events", int32(3), 20_000
	for _, n := range nodes {
		createTopic(t, n.cl, topic, parts, nil)
	}
	addr := freeAddr(t)
	flows := identityFlow("a", "b", topic) + identityFlow("b", "a", topic)
	if exactlyOnce {
		flows = strings.ReplaceAll(flows, "  sync_group_offsets: false\n", "  sync_group_offsets: false\n  exactly_once: true\n")
	}
	cfg := writeConfig(t, topologyConfig(nodes, addr, flows))
	first := startKmirror(t, cfg, addr)
	waitReady(t, first)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	errs := make(chan error, 2)
	for _, a := range []string{"a", "b"} {
		go func() { errs <- produceOrigin(ctx, nodes[a], topic, parts, perOrigin) }()
	}
	// Kill once each side holds some of the other's records.
	waitFor(t, 2*time.Minute, "copies under way both ways", func() (bool, string) {
		na, nb := sum(endOffsets(t, nodes["a"].cl, topic)), sum(endOffsets(t, nodes["b"].cl, topic))
		return na > perOrigin/10*2 && nb > perOrigin/10*2, fmt.Sprintf("a=%d b=%d", na, nb)
	})
	first.kill()
	t.Logf("SIGKILL with a=%d b=%d records", sum(endOffsets(t, nodes["a"].cl, topic)), sum(endOffsets(t, nodes["b"].cl, topic)))
	second := startKmirror(t, cfg, addr)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	const n = 2 * perOrigin
	waitFor(t, 3*time.Minute, "every record on both clusters", func() (bool, string) {
		na, nb := sum(endOffsets(t, nodes["a"].cl, topic)), sum(endOffsets(t, nodes["b"].cl, topic))
		if na < n || nb < n || !exactlyOnce {
			return na >= n && nb >= n, fmt.Sprintf("a=%d b=%d of %d", na, nb, n)
		}
		// The end offsets count the commit markers too: count the
		// records a read_committed consumer sees.
		ra, rb := 0, 0
		for _, rs := range readLog(t, ctx, nodes["a"].cl, topic) {
			ra += len(rs)
		}
		for _, rs := range readLog(t, ctx, nodes["b"].cl, topic) {
			rb += len(rs)
		}
		return ra >= n && rb >= n, fmt.Sprintf("read_committed a=%d b=%d of %d", ra, rb, n)
	})
	ends := map[string]map[int32]int64{}
	for a, nd := range nodes {
		ends[a] = endOffsets(t, nd.cl, topic)
	}
	for quiet := time.Now(); time.Since(quiet) < 15*time.Second; time.Sleep(time.Second) {
		for a, nd := range nodes {
			if now := endOffsets(t, nd.cl, topic); len(now) == int(parts) && !maps.Equal(now, ends[a]) {
				t.Fatalf("%s moved after the copies completed: %v, then %v (a loop?)", a, ends[a], now)
			}
		}
	}

	_, body, err := second.get("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	reported, skipped := 0.0, 0.0
	for _, f := range []string{"a-to-b", "b-to-a"} {
		v, _ := metricValue(body, fmt.Sprintf(`kmirror_duplicate_records_total{flow=%q,topic=%q}`, f, topic))
		reported += v
		v, _ = metricValue(body, fmt.Sprintf(`kmirror_resume_skipped_records_total{flow=%q,topic=%q}`, f, topic))
		skipped += v
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer rcancel()
	dups := 0
	for _, at := range []string{"a", "b"} {
		got := readLog(t, rctx, nodes[at].cl, topic) // read_committed
		seen := map[string]int{}
		for p := range parts {
			last := map[string]int{}
			for _, r := range got[p] {
				v := string(r.Value)
				seen[v]++
				if seen[v] > 1 {
					dups++
					continue // a duplicate repeats a record already checked
				}
				origin, s, _ := strings.Cut(v, "-")
				var seq int
				if _, err := fmt.Sscan(s, &seq); err != nil {
					t.Fatalf("%s partition %d: unexpected record %q", at, p, v)
				}
				if prev, ok := last[origin]; ok && seq <= prev {
					t.Errorf("%s partition %d offset %d: %q after %s-%d (order lost)", at, p, r.Offset, v, origin, prev)
				}
				last[origin] = seq
			}
		}
		for _, origin := range []string{"a", "b"} {
			for seq := range perOrigin {
				if seen[fmt.Sprintf("%s-%d", origin, seq)] == 0 {
					t.Fatalf("%s lacks %s-%d: a record was lost", at, origin, seq)
				}
			}
		}
	}
	t.Logf("active-active (exactly_once %v) after SIGKILL: %d records of each origin on both clusters, %d duplicates on the targets, %v reported by kmirror; the restart found %v copies already written and did not write them again", exactlyOnce, perOrigin, dups, reported, skipped)
	if exactlyOnce && dups > 0 {
		t.Errorf("exactly_once: a read_committed consumer sees %d duplicates, want 0", dups)
	}
	if float64(dups) != reported {
		t.Errorf("%d duplicates on the targets, but kmirror_duplicate_records_total says %v", dups, reported)
	}
	second.stop()
}
