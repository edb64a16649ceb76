package aclsync

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/kafka"
)

// ErrNoAuthorizer is wrapped by the error of a pass on a cluster that has
// no authorizer (SECURITY_DISABLED): it has no ACLs to read or write.
var ErrNoAuthorizer = errors.New("the cluster has no authorizer (SECURITY_DISABLED), so it keeps no ACLs; " +
	"enable one (authorizer.class.name) or set the flow's acls to off")

// Options configure a Syncer.
type Options struct {
	Source, Target *kadm.Client
	Rules          Rules
	// Store records the ACLs the flow created on the target.
	Store *Store
	// ReplicationFactor is the state topic's, 0 for the cluster default.
	ReplicationFactor          int
	SourceAccess, TargetAccess kafka.Access
}

// Syncer runs ACL sync passes of one flow. Its methods are not safe for
// concurrent use.
type Syncer struct {
	o Options
	// created are the target ACLs the flow created and has not seen
	// deleted, as the store holds them; nil until loaded.
	created map[Binding]bool
}

// New returns a Syncer.
func New(o Options) *Syncer { return &Syncer{o: o} }

// Failure is an ACL the pass could not create or delete.
type Failure struct {
	Binding Binding
	Op      string // "create" or "delete"
	Err     error
}

// Report is the outcome of one pass.
type Report struct {
	// Wanted are the target ACLs the source's ACLs map to.
	Wanted int
	// Synced are those of them the target has after the pass.
	Synced int
	// Created and Deleted are the ACLs the pass created and deleted on
	// the target.
	Created, Deleted []Binding
	// Failed are the ACLs it could not create or delete; the next pass
	// tries them again.
	Failed []Failure
}

// Sync runs one pass: it reads the ACLs of both clusters, creates on the
// target the mapped source ACLs it lacks (recording each first) and, in
// mirror mode, deletes the target ACLs the flow created whose source ACL
// is gone. An error means the pass could not read or record what it
// needed; failures of single ACLs are in the report.
func (s *Syncer) Sync(ctx context.Context) (Report, error) {
	var rep Report
	if s.created == nil {
		if err := s.o.Store.Ensure(ctx, s.o.ReplicationFactor); err != nil {
			return rep, err
		}
		created, err := s.o.Store.Load(ctx)
		if err != nil {
			return rep, err
		}
		s.created = created
	}
	src, err := Describe(ctx, s.o.Source, s.o.SourceAccess)
	if err != nil {
		return rep, fmt.Errorf("reading the source's ACLs: %w", err)
	}
	tgt, err := Describe(ctx, s.o.Target, s.o.TargetAccess)
	if err != nil {
		return rep, fmt.Errorf("reading the target's ACLs: %w", err)
	}
	want := s.o.Rules.Want(src)
	have := map[Binding]bool{}
	for _, b := range tgt {
		have[b] = true
	}
	plan := Diff(s.o.Rules, want, have, s.created)
	rep.Wanted = len(want)
	rep.Synced = len(want) - len(plan.Create)

	// Recorded before they exist: an ACL created by a pass that dies
	// before recording it would never be deleted. Records already held
	// are not written again.
	var record []Binding
	for _, b := range plan.Create {
		if !s.created[b] {
			record = append(record, b)
		}
	}
	if err := s.o.Store.Record(ctx, record); err != nil {
		return rep, err
	}
	for _, b := range record {
		s.created[b] = true
	}
	created, failed, err := s.apply(ctx, plan.Create, create)
	rep.Created, rep.Failed = created, failed
	rep.Synced += len(created)
	if err != nil {
		return rep, err // the report holds what was done
	}

	deleted, failed, err := s.apply(ctx, plan.Delete, del)
	rep.Deleted, rep.Failed = deleted, append(rep.Failed, failed...)
	if err != nil {
		return rep, err
	}
	forget := append(plan.Forget, deleted...)
	if err := s.o.Store.Forget(ctx, forget); err != nil {
		return rep, err
	}
	for _, b := range forget {
		delete(s.created, b)
	}
	return rep, nil
}

// Plan is what one pass changes on the target.
type Plan struct {
	// Create are the wanted ACLs the target lacks.
	Create []Binding
	// Delete are the ACLs the flow created that the target still has and
	// the source no longer wants (mirror mode only).
	Delete []Binding
	// Forget are recorded ACLs the target no longer has and the source
	// no longer wants: their records can go.
	Forget []Binding
}

// Diff plans a pass: want are the target ACLs the source's map to, have
// the target's ACLs, created those the flow created earlier. Protected
// ACLs are never created or deleted; only mirror mode deletes.
func Diff(r Rules, want, have, created map[Binding]bool) Plan {
	var p Plan
	for _, b := range Sorted(want) {
		if !have[b] && !r.Protected(b) {
			p.Create = append(p.Create, b)
		}
	}
	for _, b := range Sorted(created) {
		switch {
		case want[b]:
		case !have[b]:
			p.Forget = append(p.Forget, b)
		case r.Mode == ModeMirror && !r.Protected(b):
			p.Delete = append(p.Delete, b)
		}
	}
	return p
}

const (
	create = "create"
	del    = "delete"
)

// apply creates or deletes bs on the target, batched by everything but
// the resource name, and returns those done and those that failed. An
// error means a request failed as a whole.
func (s *Syncer) apply(ctx context.Context, bs []Binding, op string) (done []Binding, failed []Failure, err error) {
	for _, batch := range batches(bs) {
		builder := batch.builder()
		if op == create {
			res, err := s.o.Target.CreateACLs(ctx, builder)
			if err != nil {
				return done, failed, s.denied(op, err)
			}
			for _, r := range res {
				b := Binding{r.Type, r.Name, r.Pattern, r.Principal, r.Host, r.Operation, r.Permission}
				switch {
				case r.Err == nil:
					done = append(done, b)
				case refused(r.Err):
					err = s.singleErr(op, r.Err, r.ErrMessage)
				default:
					failed = append(failed, Failure{b, op, s.singleErr(op, r.Err, r.ErrMessage)})
				}
			}
			if err != nil {
				return done, failed, err
			}
			continue
		}
		res, err := s.o.Target.DeleteACLs(ctx, builder)
		if err != nil {
			return done, failed, s.denied(op, err)
		}
		for i, r := range res {
			b := batch.binding(i)
			errs := []error{}
			if r.Err != nil {
				errs = append(errs, s.singleErr(op, r.Err, r.ErrMessage))
			}
			for _, d := range r.Deleted {
				if d.Err != nil {
					errs = append(errs, s.singleErr(op, d.Err, d.ErrMessage))
				}
			}
			if len(errs) == 0 {
				done = append(done, b)
				continue
			}
			for _, e := range errs {
				if refused(e) {
					err = e
				} else {
					failed = append(failed, Failure{b, op, e})
				}
			}
		}
		if err != nil {
			return done, failed, err
		}
	}
	return done, failed, nil
}

// refused reports whether err says kmirror may not change ACLs at all (no
// ALTER on the cluster, no authorizer): the whole pass fails with it, once,
// rather than every ACL on its own.
func refused(err error) bool {
	return kafka.IsDenied(err) || errors.Is(err, kerr.SecurityDisabled)
}

// denied names the permission a refused create or delete needed: ALTER on
// the target cluster.
func (s *Syncer) denied(op string, err error) error {
	return fmt.Errorf("%s ACLs on the target: %w", op, s.o.TargetAccess.Denied(kafka.OpAlter, kafka.ResCluster, "", noAuthorizer(err)))
}

// singleErr returns the error of one ACL's create or delete, with the
// broker's message unless the error is a refusal for a missing permission
// (whose message holds request details that change at every attempt).
func (s *Syncer) singleErr(op string, err error, msg string) error {
	if msg != "" && !refused(err) {
		err = fmt.Errorf("%w (%s)", err, msg)
	}
	return s.denied(op, err)
}

// batch is ACLs that differ only in their resource names.
type batch struct {
	proto Binding
	names []string
}

func batches(bs []Binding) []*batch {
	var out []*batch
	index := map[Binding]*batch{}
	for _, b := range bs {
		k := b
		k.Name = ""
		bt := index[k]
		if bt == nil {
			bt = &batch{proto: k}
			index[k] = bt
			out = append(out, bt)
		}
		bt.names = append(bt.names, b.Name)
	}
	return out
}

// builder returns the ACL builder that creates, or deletes exactly, the
// ACLs of bt, in the order of its names.
func (bt *batch) builder() *kadm.ACLBuilder {
	b := kadm.NewACLs().ResourcePatternType(bt.proto.Pattern).Operations(bt.proto.Operation)
	if bt.proto.Resource == kmsg.ACLResourceTypeTopic {
		b.MaybeTopics(bt.names...)
	} else {
		b.MaybeGroups(bt.names...)
	}
	if bt.proto.Permission == kmsg.ACLPermissionTypeAllow {
		b.Allow(bt.proto.Principal).AllowHosts(bt.proto.Host)
	} else {
		b.Deny(bt.proto.Principal).DenyHosts(bt.proto.Host)
	}
	return b
}

// binding returns the i-th ACL of bt.
func (bt *batch) binding(i int) Binding {
	b := bt.proto
	b.Name = bt.names[i]
	return b
}

// Describe returns the topic and group ACLs of the cluster of adm with a
// LITERAL or PREFIXED name; access names kmirror on that cluster in
// errors. Reading ACLs needs DESCRIBE on the cluster.
func Describe(ctx context.Context, adm *kadm.Client, access kafka.Access) ([]Binding, error) {
	builder := kadm.NewACLs().Topics().Groups().ResourcePatternType(kadm.ACLPatternAny).
		Operations().Allow().AllowHosts().Deny().DenyHosts()
	res, err := adm.DescribeACLs(ctx, builder)
	if err != nil {
		return nil, access.Denied(kafka.OpDescribe, kafka.ResCluster, "", noAuthorizer(err))
	}
	var out []Binding
	for _, r := range res {
		if r.Err != nil {
			err := r.Err
			if r.ErrMessage != "" && !refused(err) {
				err = fmt.Errorf("%w (%s)", err, r.ErrMessage)
			}
			return nil, access.Denied(kafka.OpDescribe, kafka.ResCluster, "", noAuthorizer(err))
		}
		for _, d := range r.Described {
			b := Binding{d.Type, d.Name, d.Pattern, d.Principal, d.Host, d.Operation, d.Permission}
			if b.valid() {
				out = append(out, b)
			}
		}
	}
	return out, nil
}

// noAuthorizer explains SECURITY_DISABLED.
func noAuthorizer(err error) error {
	if errors.Is(err, kerr.SecurityDisabled) {
		return fmt.Errorf("%w: %w", ErrNoAuthorizer, err)
	}
	return err
}
