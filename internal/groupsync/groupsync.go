// Package groupsync carries consumer group positions from the source
// cluster to the target: it reads the groups' committed source offsets,
// translates them exactly with the flow's offset map, stores them as
// checkpoints in the target, and commits them to the same groups on the
// target while those groups have no active member there.
//
// With other writers on the target (active-active, meshes), a translation
// never passes a record the group has not read in any form (see Peers),
// and an offset kmirror itself committed on the source is never carried
// back (see Peers.Echo).
package groupsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/offsets"
)

// Translator maps a committed source offset to the target.
type Translator interface {
	// Translate returns the target offset for source offset src of a
	// replicated partition, and false if the partition is not replicated.
	Translate(topic string, partition int32, src int64) (offsets.Result, bool)
}

// Options configure a Syncer.
type Options struct {
	Source, Target   *kadm.Client
	Include, Exclude []*regexp.Regexp
	// TargetName maps a source topic to its name on the target.
	TargetName func(string) string
	// TopicID returns the ID of the replicated source topic, "" if
	// unknown; nil means IDs are not recorded.
	TopicID    func(string) string
	Translator Translator
	// Own returns the flow's offset map of a replicated partition (its
	// own copies on the target), for Peers; nil: none known.
	Own func(topic string, partition int32) []offsets.Run
	// Peers are the configuration's other flows; nil: none.
	Peers  *Peers
	Store  *Store
	Logger *slog.Logger
}

// Syncer syncs group offsets; Sync is one pass.
type Syncer struct {
	opts Options
	// written holds the checkpoints last stored, to store only changes.
	written map[key]Checkpoint
}

// New returns a Syncer.
func New(opts Options) *Syncer {
	return &Syncer{opts: opts, written: map[key]Checkpoint{}}
}

// Seed tells the syncer which checkpoints are already stored.
func (s *Syncer) Seed(cps []Checkpoint) {
	for _, c := range cps {
		s.written[c.key()] = c
	}
}

// GroupResult is what one pass did for one group.
type GroupResult struct {
	Group       string
	Checkpoints []Checkpoint
	// Committed is the number of target partitions whose committed offset
	// was moved forward.
	Committed int
	// Echoed is the number of source partitions left alone because their
	// committed offset was written there by kmirror (a flow into the
	// source), not by a consumer.
	Echoed int
	// Active is true when the group has members on the target (classic
	// or consumer protocol), so its offsets there were left alone.
	Active bool
	Err    error
}

// Report is the outcome of one pass.
type Report struct {
	Groups []GroupResult
}

// Matches reports whether the flow syncs group.
func (s *Syncer) Matches(group string) bool {
	for _, re := range s.opts.Exclude {
		if re.MatchString(group) {
			return false
		}
	}
	for _, re := range s.opts.Include {
		if re.MatchString(group) {
			return true
		}
	}
	return false
}

// Sync runs one pass over every matching source group. It returns an error
// only when the source groups cannot be listed or the checkpoints cannot
// be stored; per-group problems are in the report.
func (s *Syncer) Sync(ctx context.Context) (Report, error) {
	var rep Report
	listed, err := s.opts.Source.ListGroups(ctx)
	if err != nil {
		return rep, fmt.Errorf("listing source consumer groups: %w", err)
	}
	var groups []string
	for _, g := range listed.Groups() {
		if s.Matches(g) {
			groups = append(groups, g)
		}
	}
	warn, err := s.opts.Peers.Load(ctx)
	if err != nil {
		return rep, err
	}
	if warn != nil && s.opts.Logger != nil {
		s.opts.Logger.Warn("group offsets are rounded down: what other writers put into the target cannot be known", "err", warn)
	}
	var toStore []Checkpoint
	for _, g := range groups {
		res := s.checkpoints(ctx, g)
		for _, c := range res.Checkpoints {
			if old, ok := s.written[c.key()]; !ok || old.SourceOffset != c.SourceOffset || old.TargetOffset != c.TargetOffset || old.TopicID != c.TopicID {
				toStore = append(toStore, c)
			}
		}
		rep.Groups = append(rep.Groups, res)
	}
	if err := s.opts.Store.Write(ctx, toStore); err != nil {
		return rep, err
	}
	for _, c := range toStore {
		s.written[c.key()] = c
	}
	for i := range rep.Groups {
		r := &rep.Groups[i]
		if r.Err != nil || len(r.Checkpoints) == 0 {
			continue
		}
		r.Committed, r.Active, r.Err = Commit(ctx, s.opts.Target, r.Group, r.Checkpoints)
	}
	return rep, nil
}

// checkpoints reads and translates group's committed source offsets.
func (s *Syncer) checkpoints(ctx context.Context, group string) GroupResult {
	res := GroupResult{Group: group}
	committed, err := s.opts.Source.FetchOffsets(ctx, group)
	if err != nil {
		res.Err = fmt.Errorf("fetching committed offsets of group %q on the source: %w", group, err)
		return res
	}
	now := time.Now().UnixMilli()
	committed.Each(func(o kadm.OffsetResponse) {
		if o.Err != nil || o.At < 0 {
			return
		}
		if s.opts.Peers.Echo(group, o.Topic, o.Partition, o.At) {
			res.Echoed++
			return
		}
		tr, ok := s.opts.Translator.Translate(o.Topic, o.Partition, o.At)
		if !ok {
			return
		}
		var own []offsets.Run
		if s.opts.Own != nil {
			own = s.opts.Own(o.Topic, o.Partition)
		}
		if limit, bounded := s.opts.Peers.Limit(o.Topic, o.Partition, o.At, own); bounded {
			tr = tr.Below(limit, own)
		}
		c := Checkpoint{
			Group: group, Topic: o.Topic, Partition: o.Partition, TargetTopic: s.opts.TargetName(o.Topic),
			SourceOffset: o.At, TargetOffset: tr.Target, Exact: tr.Exact, Metadata: o.Metadata, UpdatedMs: now,
		}
		if s.opts.TopicID != nil {
			c.TopicID = s.opts.TopicID(o.Topic)
		}
		res.Checkpoints = append(res.Checkpoints, c)
	})
	return res
}

// liveMembers returns how many members group has on the target, whatever
// its protocol. A classic group's members are listed by DescribeGroups; a
// group of the consumer protocol (KIP-848, Kafka 4.0+) is not a classic
// group, so DescribeGroups reports it as not found, and its members are
// listed by ConsumerGroupDescribe.
func liveMembers(ctx context.Context, target *kadm.Client, group string) (int, error) {
	described, err := target.DescribeGroups(ctx, group)
	if err != nil {
		return 0, fmt.Errorf("describing group %q on the target: %w", group, err)
	}
	if d, ok := described[group]; ok {
		if d.Err != nil && !errors.Is(d.Err, kerr.GroupIDNotFound) {
			return 0, fmt.Errorf("describing group %q on the target: %w", group, d.Err)
		}
		if d.Err == nil && d.State != "Dead" {
			return len(d.Members), nil // a classic group
		}
	}
	consumer, err := target.DescribeConsumerGroups(ctx, group)
	if err != nil {
		if !supportsConsumerGroups(ctx, target) {
			return 0, nil // no broker knows the consumer protocol: the group does not exist
		}
		return 0, fmt.Errorf("describing consumer-protocol group %q on the target: %w", group, err)
	}
	d, ok := consumer[group]
	if !ok || errors.Is(d.Err, kerr.GroupIDNotFound) {
		return 0, nil
	}
	if d.Err != nil {
		return 0, fmt.Errorf("describing consumer-protocol group %q on the target: %w", group, d.Err)
	}
	return len(d.Members), nil
}

// supportsConsumerGroups reports whether a broker of the target answers
// ConsumerGroupDescribe (Kafka 4.0+).
func supportsConsumerGroups(ctx context.Context, target *kadm.Client) bool {
	versions, err := target.ApiVersions(ctx)
	if err != nil {
		return true // unknown: report the describe error
	}
	supported := false
	versions.Each(func(v kadm.BrokerApiVersions) {
		if _, ok := v.KeyMaxVersion(int16(kmsg.ConsumerGroupDescribe)); ok {
			supported = true
		}
	})
	return supported
}

// ErrGroupActive is returned by Commit when the group has members on the
// target.
var ErrGroupActive = errors.New("group has active members on the target")

// Commit commits the checkpoints' target offsets to group on the target,
// unless the group has active members there. It never moves a partition's
// committed offset backwards. It returns how many partitions it moved and
// whether the group was active.
func Commit(ctx context.Context, target *kadm.Client, group string, cps []Checkpoint) (int, bool, error) {
	// A cluster without any group yet creates its offsets topic on the
	// first group request and answers "coordinator not available" while
	// it loads: retry those for a while.
	deadline := time.Now().Add(20 * time.Second)
	for {
		n, active, err := commit(ctx, target, group, cps)
		if err == nil || !retriable(err) || time.Now().After(deadline) {
			return n, active, err
		}
		select {
		case <-ctx.Done():
			return n, active, err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func retriable(err error) bool {
	var ke *kerr.Error
	return errors.As(err, &ke) && ke.Retriable
}

func commit(ctx context.Context, target *kadm.Client, group string, cps []Checkpoint) (int, bool, error) {
	members, err := liveMembers(ctx, target, group)
	if err != nil {
		return 0, false, err
	}
	if members > 0 {
		return 0, true, nil
	}
	current, err := target.FetchOffsets(ctx, group)
	if errors.Is(err, kerr.GroupIDNotFound) {
		// No offsets yet (Kafka answers with none; some brokers with
		// this error).
		current, err = nil, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("fetching committed offsets of group %q on the target: %w", group, err)
	}
	var commit kadm.Offsets
	for _, c := range cps {
		if cur, ok := current.Lookup(c.TargetTopic, c.Partition); ok && cur.Err == nil && cur.At >= c.TargetOffset {
			continue
		}
		commit.Add(kadm.Offset{Topic: c.TargetTopic, Partition: c.Partition, At: c.TargetOffset, LeaderEpoch: -1, Metadata: c.Metadata})
	}
	if len(commit) == 0 {
		return 0, false, nil
	}
	resp, err := target.CommitOffsets(ctx, group, commit)
	if err != nil {
		return 0, false, fmt.Errorf("committing offsets of group %q on the target: %w", group, err)
	}
	if err := resp.Error(); err != nil {
		return 0, false, fmt.Errorf("committing offsets of group %q on the target: %w", group, err)
	}
	n := 0
	for _, ps := range commit {
		n += len(ps)
	}
	return n, false, nil
}
