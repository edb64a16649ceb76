package topicsync

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestCheckInterval(t *testing.T) {
	tests := []struct {
		name       string
		refresh    time.Duration
		partitions int
		want       time.Duration
	}{
		{"default refresh, small source", 5 * time.Second, 200, 250 * time.Millisecond},
		{"default refresh, 2,500 partitions", 5 * time.Second, 2_500, 500 * time.Millisecond},
		{"default refresh, 10,000 partitions", 5 * time.Second, 10_000, 2 * time.Second},
		{"default refresh, 25,000 partitions: passes only", 5 * time.Second, 25_000, 0},
		{"long refresh: a twentieth of it", 10 * time.Minute, 200, 30 * time.Second},
		{"long refresh, big source", 10 * time.Minute, 1_000_000, 200 * time.Second},
		{"short refresh: passes only", 250 * time.Millisecond, 0, 0},
		{"1s refresh: at the floor", time.Second, 0, 250 * time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := CheckInterval(tc.refresh, tc.partitions); got != tc.want {
				t.Errorf("CheckInterval(%s, %d) = %s, want %s", tc.refresh, tc.partitions, got, tc.want)
			}
		})
	}
}

// changedWithin calls Changed until it reports want, for up to 5 s (a
// change made out of band shows once the Syncer's metadata cache
// expires), and fails the test if it never does.
func (e *env) changedWithin(t *testing.T, s *Syncer, want bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, partitions, err := s.Changed(e.ctx)
		if err != nil {
			t.Fatalf("Changed: %v", err)
		}
		if partitions <= 0 {
			t.Fatalf("Changed listed %d partitions", partitions)
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Changed did not report %v within 5s", want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// noChange checks that Changed reports nothing for a while: enough
// listings to see past the client's metadata cache.
func (e *env) noChange(t *testing.T, s *Syncer, why string) {
	t.Helper()
	for range 5 {
		changed, _, err := s.Changed(e.ctx)
		if err != nil {
			t.Fatalf("Changed: %v", err)
		}
		if changed {
			t.Fatalf("Changed reported a change %s", why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestChangedSeesNewGrownAndRecreatedTopics(t *testing.T) {
	e := newEnv(t)
	e.create(t, e.srcOp, "orders", 2, nil)
	e.create(t, e.srcOp, "audit", 1, nil)
	s := e.syncer(t, `    topics: ["orders", "payments.*"]
`)
	e.sync(t, s)
	e.noChange(t, s, "right after a pass")

	e.create(t, e.srcOp, "audit.more", 1, nil)
	e.noChange(t, s, "for a topic the flow does not select")

	e.create(t, e.srcOp, "payments.eu", 3, nil)
	e.changedWithin(t, s, true)
	e.noChange(t, s, "for the same topic twice")
	res := e.syncNew(t, s)
	if !slices.Contains(res.Created, "primary.payments.eu") {
		t.Fatalf("SyncNew created %q, want primary.payments.eu", res.Created)
	}

	rs, err := e.srcOp.UpdatePartitions(e.ctx, 4, "orders")
	if err == nil {
		err = rs.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	e.changedWithin(t, s, true)
	e.syncNew(t, s)

	if _, err := e.srcOp.DeleteTopics(e.ctx, "payments.eu"); err != nil {
		t.Fatal(err)
	}
	e.noChange(t, s, "for a deleted topic (deletions wait for a pass)")
	e.create(t, e.srcOp, "payments.eu", 3, nil)
	e.changedWithin(t, s, true)
}

// A topic whose pass fails is not reported again by every check: the
// passes retry it every refresh interval.
func TestChangedReportsAStuckTopicOnce(t *testing.T) {
	e := newEnv(t)
	e.create(t, e.srcOp, "a", 1, nil)
	s := e.syncer(t, "")
	e.sync(t, s)
	e.dstCluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.CreateTopics}, Err: kerr.PolicyViolation, Count: -1})
	e.create(t, e.srcOp, "b", 1, nil)
	e.changedWithin(t, s, true)
	res, err := s.SyncNew(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Errors) != 1 || res.Problems["b"] == nil {
		t.Fatalf("SyncNew = %+v, want b failing", res)
	}
	e.noChange(t, s, "for a topic whose creation failed")
}

func (e *env) syncNew(t *testing.T, s *Syncer) Result {
	t.Helper()
	res, err := s.SyncNew(e.ctx)
	if err != nil {
		t.Fatalf("SyncNew: %v", err)
	}
	for _, err := range res.Errors {
		t.Errorf("SyncNew reported a topic error: %v", err)
	}
	return res
}

// SyncNew creates new topics and brings in step the configs of a target
// topic that existed before, the first time it is ready; the configs of
// topics ready before wait for the next Sync.
func TestSyncNewLeavesConfigsOfReadyTopicsToSync(t *testing.T) {
	e := newEnv(t)
	e.create(t, e.srcOp, "old", 1, map[string]*string{"retention.ms": kadm.StringPtr("1000")})
	s := e.syncer(t, "")
	e.sync(t, s)
	alter := func(topic, value string) {
		t.Helper()
		rs, err := e.srcOp.AlterTopicConfigs(e.ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: kadm.StringPtr(value)}}, topic)
		if err == nil {
			_, err = rs.On(topic, nil)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	alter("old", "2000")
	e.create(t, e.srcOp, "new", 2, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")})
	e.create(t, e.srcOp, "there", 1, map[string]*string{"retention.ms": kadm.StringPtr("3000")})
	e.create(t, e.dstOp, "primary.there", 1, nil) // made by hand before

	e.changedWithin(t, s, true)
	res := e.syncNew(t, s)
	if want := []string{"primary.new"}; !reflect.DeepEqual(res.Created, want) {
		t.Errorf("Created = %q, want %q", res.Created, want)
	}
	if want := []shape{{"new", "primary.new", 2}, {"old", "primary.old", 1}, {"there", "primary.there", 1}}; !reflect.DeepEqual(shapes(res.Ready), want) {
		t.Errorf("Ready = %+v, want %+v", res.Ready, want)
	}
	if got := e.dynamicConfigs(t, e.dstOp, "primary.new"); !reflect.DeepEqual(got, map[string]string{"cleanup.policy": "compact"}) {
		t.Errorf("primary.new configs = %v, want cleanup.policy=compact", got)
	}
	if got := e.dynamicConfigs(t, e.dstOp, "primary.there"); got["retention.ms"] != "3000" {
		t.Errorf("primary.there configs = %v, want retention.ms=3000 (ready for the first time)", got)
	}
	if got := e.dynamicConfigs(t, e.dstOp, "primary.old"); got["retention.ms"] != "1000" {
		t.Errorf("primary.old configs = %v after SyncNew, want retention.ms still 1000 (left to Sync)", got)
	}
	e.sync(t, s)
	if got := e.dynamicConfigs(t, e.dstOp, "primary.old"); got["retention.ms"] != "2000" {
		t.Errorf("primary.old configs = %v after Sync, want retention.ms=2000", got)
	}
}

// The topics new in a pass are created with one CreateTopics request, and
// handed over only once every partition's leader answers for it.
func TestSyncCreatesNewTopicsTogetherAndWaitsForLeaders(t *testing.T) {
	e := newEnv(t)
	for _, name := range []string{"a", "b", "c"} {
		e.create(t, e.srcOp, name, 2, nil)
	}
	creates := e.dstCluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.CreateTopics}, Observe: true, Count: -1})
	// The leaders do not serve the new partitions at first.
	notYet := e.dstCluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.ListOffsets}, Err: kerr.NotLeaderForPartition, Count: 3})
	res := e.sync(t, e.syncer(t, ""))
	if want := []string{"primary.a", "primary.b", "primary.c"}; !reflect.DeepEqual(res.Created, want) {
		t.Fatalf("Created = %q, want %q", res.Created, want)
	}
	if n := creates.Hits(); n != 1 {
		t.Errorf("%d CreateTopics requests, want 1 for the three topics", n)
	}
	if n := notYet.Hits(); n != 3 {
		t.Errorf("the leaders were asked %d times while they refused, want 3 (until they answered)", n)
	}
}
