package aclsync

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/kfaketest"
)

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// put creates bs on the cluster of adm.
func put(t *testing.T, ctx context.Context, adm *kadm.Client, bs ...Binding) {
	t.Helper()
	for _, bt := range batches(bs) {
		res, err := adm.CreateACLs(ctx, bt.builder())
		if err != nil {
			t.Fatalf("creating %v: %v", bt.proto, err)
		}
		for _, r := range res {
			if r.Err != nil {
				t.Fatalf("creating %s: %v", r.Name, r.Err)
			}
		}
	}
}

// remove deletes bs on the cluster of adm.
func remove(t *testing.T, ctx context.Context, adm *kadm.Client, bs ...Binding) {
	t.Helper()
	for _, bt := range batches(bs) {
		if _, err := adm.DeleteACLs(ctx, bt.builder()); err != nil {
			t.Fatalf("deleting %v: %v", bt.proto, err)
		}
	}
}

// acls returns the target's topic and group ACLs, one line each, sorted.
func acls(t *testing.T, ctx context.Context, adm *kadm.Client) []string {
	t.Helper()
	bs, err := Describe(ctx, adm, kafka.Access{})
	if err != nil {
		t.Fatal(err)
	}
	set := map[Binding]bool{}
	for _, b := range bs {
		set[b] = true
	}
	var out []string
	for _, b := range Sorted(set) {
		out = append(out, b.String())
	}
	return out
}

func lines(bs ...Binding) []string {
	set := map[Binding]bool{}
	for _, b := range bs {
		set[b] = true
	}
	var out []string
	for _, b := range Sorted(set) {
		out = append(out, b.String())
	}
	return out
}

func sameLines(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\ngot\n  %s\nwant\n  %s", what, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// TestSyncSafeThenMirror runs passes against two fake clusters: safe mode
// copies the MirrorMaker 2 subset, a second pass changes nothing, mirror
// mode copies everything, and a source ACL removed while no syncer runs is
// removed from the target by the next syncer over the same state topic
// (a restart), while an equal ACL that was on the target before kmirror
// and kmirror's own ACLs stay.
func TestSyncSafeThenMirror(t *testing.T) {
	ctx := testContext(t)
	srcCl, tgtCl := kfaketest.New(t), kfaketest.New(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	src, tgt := kadm.NewClient(srcCl), kadm.NewClient(tgtCl)
	const alice, bob = "User:alice", "User:bob"

	read := acl(topic, literal, "orders", alice, opRead, allow)
	write := acl(topic, literal, "orders", alice, opWrite, allow)
	all := acl(topic, literal, "orders", bob, opAll, allow)
	denied := acl(topic, literal, "orders", bob, opWrite, deny)
	pfx := acl(topic, prefixed, "pay", alice, opRead, allow)
	grp := acl(group, literal, "billing", alice, opRead, allow)
	grpPfx := acl(group, prefixed, "app-", alice, opAll, allow)
	excluded := acl(topic, literal, "secret", alice, opRead, allow)
	ownSrc := acl(topic, literal, "orders", "User:kmirror", opRead, allow)
	put(t, ctx, src, read, write, all, denied, pfx, grp, grpPfx, excluded, ownSrc)

	// On the target before kmirror: an ACL equal to one it would copy,
	// and kmirror's own.
	preexisting := acl(topic, literal, "src.orders", alice, opRead, allow)
	own := acl(topic, prefixed, "src.", "User:kmirror", opAll, allow)
	put(t, ctx, tgt, preexisting, own)

	syncer := func(mode string) *Syncer {
		r := rulesOf(t, "    acls: "+mode+"\n    topics_exclude: [secret]\n")
		return New(Options{
			Source: src, Target: tgt, Rules: r,
			Store: NewStore(tgtCl, StateTopic("f")),
		})
	}
	m := func(b Binding) Binding {
		b.Name = "src." + b.Name
		return b
	}
	// Group ACLs keep their names.
	readOf := func(b Binding) Binding { b.Operation = opRead; return b }

	s := syncer(ModeSafe)
	rep, err := s.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	safeSet := []Binding{m(read), readOf(m(all)), m(denied), m(pfx), grp, readOf(grpPfx)}
	sameLines(t, "target after a safe pass", acls(t, ctx, tgt), lines(append(safeSet, preexisting, own)...))
	if rep.Wanted != 6 || rep.Synced != 6 || len(rep.Created) != 5 || len(rep.Deleted) != 0 || len(rep.Failed) != 0 {
		t.Errorf("safe pass report: %+v", rep)
	}
	rep, err = s.Sync(ctx)
	if err != nil || len(rep.Created)+len(rep.Deleted) != 0 || rep.Synced != 6 {
		t.Errorf("second safe pass: %+v, %v; want no change", rep, err)
	}

	// Mirror, as a restarted process: everything as it is; the READ that
	// safe mode made of ALLOW ALL goes, since kmirror created it.
	s = syncer(ModeMirror)
	rep, err = s.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mirrorSet := []Binding{m(read), m(write), m(all), m(denied), m(pfx), grp, grpPfx}
	sameLines(t, "target after a mirror pass", acls(t, ctx, tgt), lines(append(mirrorSet, preexisting, own)...))
	if len(rep.Deleted) != 2 { // bob's READ and the group's READ
		t.Errorf("mirror pass deleted %v, want the 2 READs made of ALLOW ALL", rep.Deleted)
	}

	// Removed on the source while kmirror is down: a new syncer deletes
	// the ones it created, not the one that was there before it.
	remove(t, ctx, src, read, write, grpPfx)
	s = syncer(ModeMirror)
	rep, err = s.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sameLines(t, "target after the source's removal", acls(t, ctx, tgt),
		lines(m(all), m(denied), m(pfx), grp, preexisting, own))
	if len(rep.Deleted) != 2 {
		t.Errorf("deleted %v, want WRITE and the prefixed group ACL", rep.Deleted)
	}
	// The record is clean: a further restart changes nothing.
	rep, err = syncer(ModeMirror).Sync(ctx)
	if err != nil || len(rep.Created)+len(rep.Deleted) != 0 {
		t.Errorf("pass after restart: %+v, %v; want no change", rep, err)
	}
	created, err := NewStore(tgtCl, StateTopic("f")).Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sameLines(t, "recorded as created", lines(Sorted(created)...), lines(m(all), m(denied), m(pfx), grp))
}

func TestNoAuthorizerExplained(t *testing.T) {
	err := kafka.Access{Cluster: "src"}.Denied(kafka.OpDescribe, kafka.ResCluster, "", noAuthorizer(fmt.Errorf("describe: %w", kerr.SecurityDisabled)))
	if !errors.Is(err, ErrNoAuthorizer) || !strings.Contains(err.Error(), "acls to off") {
		t.Errorf("got %v", err)
	}
	err = kafka.Access{Cluster: "dst", Principal: "User:kmirror"}.Denied(kafka.OpAlter, kafka.ResCluster, "", noAuthorizer(kerr.ClusterAuthorizationFailed))
	if want := `cluster "dst": not authorized: ALTER on cluster (principal User:kmirror)`; !strings.Contains(err.Error(), want) {
		t.Errorf("got %v, want it to contain %s", err, want)
	}
}

// TestSyncRefusedOnce: a target that refuses ACL changes (no ALTER on the
// cluster) fails the pass with one error naming the permission, and a
// pass failing again does not write its records again.
func TestSyncRefusedOnce(t *testing.T) {
	ctx := testContext(t)
	const pass = "kmirror-pw"
	all := func(res kmsg.ACLResourceType, name string, pat kmsg.ACLResourcePatternType, op kmsg.ACLOperation) kfake.ACL {
		return kfake.ACL{Resource: res, Name: name, Pattern: pat, Operation: op, Allow: true}
	}
	c := kfaketest.Cluster(t, kfake.EnableSASL(), kfake.EnableACLs(), kfake.Superuser("PLAIN", "admin", "admin-pw"),
		kfake.User("PLAIN", "kmirror", pass,
			all(topic, "__kmirror.", prefixed, opAll),
			all(kmsg.ACLResourceTypeCluster, "kafka-cluster", literal, opDescr),
			all(kmsg.ACLResourceTypeCluster, "kafka-cluster", literal, opIdem)))
	tgtCl := kfaketest.Client(t, c, kgo.SASL(plain.Auth{User: "kmirror", Pass: pass}.AsMechanism()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	srcCl := kfaketest.New(t)
	put(t, ctx, kadm.NewClient(srcCl), acl(topic, literal, "orders", "User:alice", opRead, allow), acl(group, literal, "g", "User:alice", opRead, allow))

	store := NewStore(tgtCl, StateTopic("f"))
	s := New(Options{
		Source: kadm.NewClient(srcCl), Target: kadm.NewClient(tgtCl),
		Rules: rulesOf(t, "    acls: mirror\n"), Store: store,
		TargetAccess: kafka.Access{Cluster: "dst", Principal: "User:kmirror"},
	})
	want := `cluster "dst": not authorized: ALTER on cluster (principal User:kmirror)`
	ends := func() int64 {
		o, err := kadm.NewClient(tgtCl).ListEndOffsets(ctx, store.Topic())
		if err != nil {
			t.Fatal(err)
		}
		e, _ := o.Lookup(store.Topic(), 0)
		return e.Offset
	}
	for pass := 1; pass <= 2; pass++ {
		rep, err := s.Sync(ctx)
		var denied *kafka.DeniedError
		if !errors.As(err, &denied) || !strings.Contains(err.Error(), want) {
			t.Fatalf("pass %d: error %v, want one containing %s", pass, err, want)
		}
		if len(rep.Created) != 0 || len(rep.Failed) != 0 {
			t.Errorf("pass %d: report %+v; want nothing created and no per-ACL failure", pass, rep)
		}
		if n := ends(); n != 2 {
			t.Errorf("pass %d: state topic holds %d records, want the 2 ACLs recorded once", pass, n)
		}
	}
}
