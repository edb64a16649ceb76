package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRecoveryPoint starts a flow on a backlog while the target holds its
// writes back (a client quota of 50 KB/s on the target, and batches of
// one or two records, so that the producer waits out the throttle with
// records fetched and not acknowledged): the recovery
// point shows the records, bytes and age not yet on the target; once the
// quota is lifted and the flow caught up, it is 0.
func TestRecoveryPoint(t *testing.T) {
	began := time.Now()
	p := startPair(t)
	const topic, parts, n, size = "rp", 2, 1000, 500
	createTopic(t, p.srcCl, topic, parts, nil)
	recs := make([]*kgo.Record, n)
	for i := range recs {
		value := make([]byte, size) // random: compression does not shrink it below the quota
		_, _ = rand.Read(value)
		recs[i] = &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "k%d", i), Value: value}
	}
	produce(t, p.srcCl, recs)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	quota := func(remove bool) {
		t.Helper()
		res, err := kadm.NewClient(p.dstCl).AlterClientQuotas(ctx, []kadm.AlterClientQuotaEntry{{
			Entity: kadm.ClientQuotaEntity{{Type: "client-id"}}, // every client without a quota of its own
			Ops:    []kadm.AlterClientQuotaOp{{Key: "producer_byte_rate", Value: 50_000, Remove: remove}},
		}})
		if err == nil {
			for _, r := range res {
				if r.Err != nil {
					err = r.Err
				}
			}
		}
		if err != nil {
			t.Fatalf("client quota on the target: %v", err)
		}
	}
	quota(false)
	quotaSet := time.Now()

	httpAddr := freeAddr(t)
	k := startKmirror(t, writeConfig(t, p.flowConfig(httpAddr, "topics: [\"rp\"]\ntopic_refresh_interval: 500ms\nproducer:\n  batch_max_bytes: 1024")), httpAddr)

	type rp struct {
		Records int64   `json:"records"`
		Bytes   int64   `json:"bytes"`
		Seconds float64 `json:"seconds"`
	}
	status := func() (flowRP, topicRP *rp, body string) {
		_, body, err := k.get("/api/flows")
		if err != nil {
			return nil, nil, err.Error()
		}
		var flows []struct {
			Name          string `json:"name"`
			RecoveryPoint *rp    `json:"recovery_point"`
			Topics        []struct {
				Source        string `json:"Source"`
				RecoveryPoint *rp    `json:"recovery_point"`
			} `json:"topics"`
		}
		if json.Unmarshal([]byte(body), &flows) != nil || len(flows) != 1 {
			return nil, nil, body
		}
		for _, tp := range flows[0].Topics {
			if tp.Source == topic {
				topicRP = tp.RecoveryPoint
			}
		}
		return flows[0].RecoveryPoint, topicRP, body
	}
	gauge := func(name string) float64 {
		_, body, _ := k.get("/metrics")
		v, _ := metricValue(body, fmt.Sprintf(`%s{flow="e2e",topic=%q}`, name, topic))
		return v
	}

	// Held back: records, bytes and age pending, in the API and the gauges.
	var seen rp
	took := waitFor(t, 30*time.Second, "a recovery point with records, bytes and seconds", func() (bool, string) {
		f, tp, body := status()
		if f == nil || tp == nil {
			return false, body
		}
		seen = *f
		ok := f.Records > 0 && f.Bytes > 0 && f.Seconds > 0 && *tp == *f &&
			gauge("kmirror_recovery_point_records") > 0 && gauge("kmirror_recovery_point_seconds") > 0 &&
			gauge("kmirror_recovery_point_bytes") > 0
		return ok, fmt.Sprintf("target holds %d; flow %+v, topic %+v, gauges records %v seconds %v", sum(endOffsets(t, p.dstCl, "src."+topic)), *f, *tp,
			gauge("kmirror_recovery_point_records"), gauge("kmirror_recovery_point_seconds"))
	})
	t.Logf("recovery point while the target is throttled, %s after start: %+v", took.Round(time.Millisecond), seen)
	if seen.Records > n {
		t.Errorf("recovery point %d records, more than the %d produced", seen.Records, n)
	}
	// The oldest pending record was written before the quota was set.
	if maxAge := time.Since(began).Seconds() + 1; seen.Seconds > maxAge {
		t.Errorf("recovery point %.1fs, older than the test (%.1fs)", seen.Seconds, maxAge)
	}
	if lo, hi := seen.Records*size, seen.Records*(size+16); seen.Bytes < lo || seen.Bytes > hi {
		t.Errorf("recovery point %d bytes for %d records of %d bytes; want within [%d, %d]", seen.Bytes, seen.Records, size, lo, hi)
	}

	quota(true)
	t.Logf("quota lifted after %s", time.Since(quotaSet).Round(time.Millisecond))
	waitFor(t, 30*time.Second, "every record on the target", func() (bool, string) {
		got := sum(endOffsets(t, p.dstCl, "src."+topic))
		return got == n, fmt.Sprintf("%d of %d", got, n)
	})
	took = waitFor(t, 15*time.Second, "a recovery point of 0", func() (bool, string) {
		f, tp, body := status()
		if f == nil || tp == nil {
			return false, body
		}
		ok := *f == rp{} && *tp == rp{} &&
			gauge("kmirror_recovery_point_records") == 0 && gauge("kmirror_recovery_point_seconds") == 0
		return ok, fmt.Sprintf("flow %+v, topic %+v", *f, *tp)
	})
	t.Logf("recovery point 0 %s after the copy completed; test took %s", took.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
}
