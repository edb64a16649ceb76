package topicsync

import (
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/kafka"
)

// metadataAge is longer than the Syncer client's metadata cache.
const metadataAge = 20 * time.Millisecond

// pass runs one pass once the Syncer's metadata cache expired, as passes
// an interval apart do.
func (e *env) pass(t *testing.T, s *Syncer) Result {
	t.Helper()
	time.Sleep(metadataAge)
	return e.sync(t, s)
}

func (e *env) deleteTopic(t *testing.T, topic string) {
	t.Helper()
	rs, err := e.srcOp.DeleteTopics(e.ctx, topic)
	if err == nil {
		err = rs.Error()
	}
	if err != nil {
		t.Fatalf("deleting %q: %v", topic, err)
	}
}

// TestDeleteTopics deletes a replicated source topic and checks that its
// target topic is deleted on the second pass that misses it, and only it.
func TestDeleteTopics(t *testing.T) {
	e := newEnv(t)
	e.create(t, e.srcOp, "a", 1, nil)
	e.create(t, e.srcOp, "b", 1, nil)
	e.create(t, e.dstOp, "dr-only", 1, nil) // the target's own topic
	l := &logs{}
	s := e.syncer(t, "    delete_topics: true\n")
	s.logger = slog.New(l)
	e.syncUntil(t, s, "creating nothing", func(r Result) bool { return len(r.Created) == 0 })

	e.deleteTopic(t, "a")
	res := e.syncUntil(t, s, "removing a", func(r Result) bool { return len(r.Removed) > 0 })
	if len(res.Deleted) != 0 {
		t.Fatalf("first pass missing a: Deleted = %q, want none yet", res.Deleted)
	}
	if got := e.partitions(t, e.dstOp); got["primary.a"] != 1 {
		t.Fatalf("target topics after one pass = %v, want primary.a still there", got)
	}
	res = e.pass(t, s)
	if !reflect.DeepEqual(res.Deleted, []string{"primary.a"}) {
		t.Fatalf("second pass missing a: Deleted = %q, want [primary.a]", res.Deleted)
	}
	if got, want := e.partitions(t, e.dstOp), map[string]int{"primary.b": 1, "dr-only": 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("target topics = %v, want %v", got, want)
	}
	if n := l.count("deleted target topic", "topic=primary.a", "source_topic=a"); n != 1 {
		t.Errorf("%d lines for the deletion, want 1; log:\n%s", n, l)
	}
	// Done once.
	if res := e.pass(t, s); len(res.Deleted)+len(res.DeleteErrors) != 0 {
		t.Errorf("later pass: Deleted = %q, DeleteErrors = %v; want none", res.Deleted, res.DeleteErrors)
	}
}

// TestDeleteTopicsOffKeepsTargets checks the default: the target topic of a
// deleted source topic stays.
func TestDeleteTopicsOffKeepsTargets(t *testing.T) {
	e := newEnv(t)
	e.create(t, e.srcOp, "a", 1, nil)
	s := e.syncer(t, "")
	e.syncUntil(t, s, "creating nothing", func(r Result) bool { return len(r.Created) == 0 })
	e.deleteTopic(t, "a")
	e.syncUntil(t, s, "removing a", func(r Result) bool { return len(r.Removed) > 0 })
	for range 3 {
		if res := e.pass(t, s); len(res.Deleted) != 0 {
			t.Fatalf("Deleted = %q with delete_topics off", res.Deleted)
		}
	}
	if got := e.partitions(t, e.dstOp); got["primary.a"] != 1 {
		t.Errorf("target topics = %v, want primary.a kept", got)
	}
}

// TestDeleteTopicsNotWhenHidden checks that a source topic missing from the
// listing because kmirror may no longer describe it is not taken for a
// deleted one, and that the flow's stored topics count as replicated only
// if the flow still selects them.
func TestDeleteTopicsNotWhenHidden(t *testing.T) {
	e := newEnv(t)
	e.create(t, e.srcOp, "a", 1, nil)
	e.create(t, e.srcOp, "b", 1, nil)
	s := e.syncer(t, `    topics_exclude: ["old"]
    delete_topics: true
`)
	for _, t0 := range []string{"primary.old", "primary.dr.x", "primary.gone"} {
		e.create(t, e.dstOp, t0, 1, nil)
	}
	e.syncUntil(t, s, "creating nothing", func(r Result) bool { return len(r.Created) == 0 })
	// Stored progress names old (excluded now), dr.x (a loop copy) and
	// gone (deleted while no kmirror ran): only gone's target goes.
	s.WithDeleteTopics([]string{"old", "dr.x", "gone"})

	// a hidden by a missing DESCRIBE ACL: left out of the listing, and
	// TOPIC_AUTHORIZATION_FAILED when asked for by name.
	hide := e.srcCluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Metadata}, Topic: "a", Err: kerr.TopicAuthorizationFailed, Count: -1})
	var deleted []string
	for range 4 {
		res := e.pass(t, s)
		deleted = append(deleted, res.Deleted...)
	}
	if want := []string{"primary.gone"}; !reflect.DeepEqual(deleted, want) {
		t.Errorf("Deleted = %q, want %q", deleted, want)
	}
	got := e.partitions(t, e.dstOp)
	for _, kept := range []string{"primary.a", "primary.b", "primary.old", "primary.dr.x"} {
		if got[kept] != 1 {
			t.Errorf("target topics = %v, want %s kept", got, kept)
		}
	}
	hide.Remove()

	// a deleted for real while it is hidden is deleted once it is not.
	e.deleteTopic(t, "a")
	deleted = nil
	for range 3 {
		deleted = append(deleted, e.pass(t, s).Deleted...)
	}
	if want := []string{"primary.a"}; !reflect.DeepEqual(deleted, want) {
		t.Errorf("after deleting a: Deleted = %q, want %q", deleted, want)
	}
}

// TestDeleteTopicsFailure checks that a refused deletion is reported once,
// counted on every pass, and retried until it succeeds.
func TestDeleteTopicsFailure(t *testing.T) {
	e := newEnv(t)
	e.create(t, e.srcOp, "a", 1, nil)
	l := &logs{}
	s := e.syncer(t, "    delete_topics: true\n")
	s.logger = slog.New(l)
	s.WithAccess(kafka.Access{}, kafka.Access{Cluster: "dr", Principal: "User:kmirror"})
	e.syncUntil(t, s, "creating nothing", func(r Result) bool { return len(r.Created) == 0 })
	e.deleteTopic(t, "a")
	fault := e.dstCluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.DeleteTopics}, Topic: "primary.a", Err: kerr.TopicAuthorizationFailed, Count: -1})
	var errs []error
	for range 4 {
		time.Sleep(metadataAge)
		res, err := s.Sync(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Deleted) != 0 {
			t.Fatalf("Deleted = %q while the target refuses", res.Deleted)
		}
		errs = append(errs, res.DeleteErrors...)
	}
	if len(errs) < 2 || !errors.Is(errs[0], kerr.TopicAuthorizationFailed) || !strings.Contains(errs[0].Error(), `DELETE on topic "primary.a"`) {
		t.Fatalf("DeleteErrors = %v, want one per pass after the first, naming DELETE on primary.a", errs)
	}
	if n := l.count("cannot delete target topic"); n != 1 {
		t.Errorf("problem logged %d times, want once; log:\n%s", n, l)
	}
	fault.Remove()
	res := e.pass(t, s)
	if !reflect.DeepEqual(res.Deleted, []string{"primary.a"}) {
		t.Errorf("after the fault: Deleted = %q, want [primary.a]", res.Deleted)
	}
	if got := e.partitions(t, e.dstOp); got["primary.a"] != 0 {
		t.Errorf("target topics = %v, want primary.a deleted", got)
	}
}
