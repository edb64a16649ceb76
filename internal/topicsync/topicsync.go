// Package topicsync keeps a flow's target topics in step with its source:
// it discovers source topics that match the flow's policy, creates them on
// the target with the source's partition count and explicitly set configs
// before any record is written, grows target partitions when the source
// grows, brings the target topics' configs in step with the source's on
// every pass, and, if asked, deletes target topics whose source topics were
// deleted.
package topicsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/policy"
)

// Topic is a source topic that is ready to be replicated: its target
// exists with at least as many partitions.
type Topic struct {
	Source     string
	Target     string
	Partitions int32
	// SourceID and TargetID are the topics' Kafka topic IDs (base64), or
	// empty when a cluster does not report them. A name whose ID changed
	// was deleted and re-created.
	SourceID string `json:",omitempty"`
	TargetID string `json:",omitempty"`
	// Leaderless are the source partitions that had no leader in this
	// pass (their broker is down): they cannot be read until one is
	// elected.
	Leaderless []int32 `json:",omitempty"`
}

// TopicID returns id as a string, or "" for the zero ID of a cluster
// without topic IDs.
func TopicID(id kadm.TopicID) string {
	if id == (kadm.TopicID{}) {
		return ""
	}
	return id.String()
}

// Syncer creates and grows a flow's target topics and keeps their configs
// in step. It is used by one goroutine at a time.
type Syncer struct {
	source, target *kadm.Client
	// srcCl and tgtCl are the clients under source and target, for the
	// requests kadm does not batch the way a pass needs.
	srcCl, tgtCl      *kgo.Client
	policy            *policy.Topics
	replicationFactor int16
	logger            *slog.Logger
	// srcAccess and tgtAccess name the clusters and principals in errors
	// about missing ACLs.
	srcAccess, tgtAccess kafka.Access
	// known holds the partition count last made ready per source topic.
	known map[string]int32
	// created holds the IDs of the target topics created by this Syncer,
	// which a listing may not show yet.
	created map[string]string
	// problems holds, per source topic, the last problem reported, so a
	// persisting problem is logged once rather than on every pass.
	problems map[string]string
	// configs is the config policy; configProblems holds, per target
	// topic, the last config sync problem logged.
	configs        configPolicy
	configProblems map[string]string
	// requestProblems holds, per cluster ("source", "target"), the last
	// failure of a whole DescribeConfigs request logged.
	requestProblems map[string]string
	// managed holds, per target topic, the config keys kmirror manages
	// there (see manage).
	managed map[string]map[string]bool
	// deletes is the state of delete_topics; nil when it is off.
	deletes *deletions
	// headroom gives target topics a max.message.bytes with room for
	// the provenance header (WithProvenance); mutual says a flow with
	// provenance writes the other way too (see WithHeadroom).
	headroom, mutual bool
}

// WithProvenance says that the flow writes the provenance header on every
// record: the target topics get a max.message.bytes with room for it (see
// WithHeadroom), unless topic_config_exclude or topic_config_overrides
// name max.message.bytes. It returns s.
func (s *Syncer) WithProvenance(on bool) *Syncer {
	s.headroom = on
	return s
}

// WithMutual says that a flow with provenance also writes from the target
// cluster into the source cluster (see WithHeadroom). It returns s.
func (s *Syncer) WithMutual(on bool) *Syncer {
	s.mutual = on
	return s
}

// New returns a Syncer that reads the source through source and writes the
// target through target. replicationFactor <= 0 means the target's default.
// Topic configs follow the source but for config.DefaultTopicConfigExclude
// until WithConfigs says otherwise.
func New(source, target *kgo.Client, p *policy.Topics, replicationFactor int, logger *slog.Logger) *Syncer {
	rf := int16(replicationFactor)
	if rf <= 0 {
		rf = -1
	}
	return &Syncer{
		source: kadm.NewClient(source), target: kadm.NewClient(target), srcCl: source, tgtCl: target,
		policy: p, replicationFactor: rf, logger: logger,
		known: map[string]int32{}, created: map[string]string{}, problems: map[string]string{},
		configs:        configPolicy{exclude: defaultExclude()},
		configProblems: map[string]string{}, requestProblems: map[string]string{},
		managed: map[string]map[string]bool{},
	}
}

// WithAccess sets who kmirror is on the source and the target, named in
// errors about missing ACLs, and returns s.
func (s *Syncer) WithAccess(source, target kafka.Access) *Syncer {
	s.srcAccess, s.tgtAccess = source, target
	return s
}

// Result is the outcome of one pass.
type Result struct {
	Ready   []Topic  // topics whose target is ready, sorted by source name
	Created []string // target topics created in this pass
	Removed []string // source topics that were ready before and are gone now
	Errors  []error  // per-topic problems; those topics are not in Ready
	// ConfigUpdated are the target topics whose configs were changed in
	// this pass; ConfigErrors the problems bringing configs in step (the
	// topics are still ready and replicated).
	ConfigUpdated []string
	ConfigErrors  []error
	// Deleted are the target topics deleted in this pass because their
	// source topics were deleted (WithDeleteTopics); DeleteErrors the
	// deletions that failed and are tried again on the next pass.
	Deleted      []string
	DeleteErrors []error
	// Problems holds the same problems by source topic.
	Problems map[string]error
	// MaxMessageBytes holds, per target topic whose max.message.bytes
	// kmirror set or found explicitly set, its value: the producer lets
	// a record that large through.
	MaxMessageBytes map[string]int32
}

func (res *Result) fail(topic string, err error) {
	res.Errors = append(res.Errors, err)
	if res.Problems == nil {
		res.Problems = map[string]error{}
	}
	res.Problems[topic] = err
}

// Sync lists the source topics and makes the target ready for each that
// the policy matches, then brings the configs of the target topics that
// were ready already in step with their source topics, and, with
// WithDeleteTopics, deletes the target topics of deleted source topics. An
// error is returned only when a cluster cannot be listed at all; per-topic
// problems are in Result.Errors, Result.ConfigErrors and
// Result.DeleteErrors.
func (s *Syncer) Sync(ctx context.Context) (Result, error) {
	var res Result
	srcTopics, err := s.source.ListTopics(ctx)
	if err != nil {
		err = s.srcAccess.Denied(kafka.OpDescribe, kafka.ResCluster, "", err)
		return res, fmt.Errorf("listing source topics: %w", err)
	}
	var wanted []string
	for name, d := range srcTopics {
		if d.Err != nil || d.IsInternal || !s.policy.Matches(name) {
			continue
		}
		wanted = append(wanted, name)
	}
	slices.Sort(wanted)
	for name := range s.known {
		if _, ok := srcTopics[name]; !ok {
			res.Removed = append(res.Removed, name)
			delete(s.known, name)
		}
	}
	slices.Sort(res.Removed)
	if s.deletes != nil {
		s.deleteGone(ctx, srcTopics, &res)
	}
	targetNames := make([]string, len(wanted))
	for i, name := range wanted {
		targetNames[i] = s.policy.TargetName(name)
	}
	s.forgetTopics(targetNames)
	if len(wanted) == 0 {
		return res, nil
	}
	tgtTopics, err := s.target.ListTopics(ctx, targetNames...)
	if err != nil {
		return res, fmt.Errorf("listing target topics: %w", err)
	}
	// One description of the source configs serves both the topics to
	// create and the topics whose configs are kept in step.
	srcConfigs, srcMax, srcErrs, srcReqErr := describeConfigsFull(ctx, s.srcCl, wanted)

	var toCreate []string
	var existing []Topic // ready before this pass: their configs are kept in step
	for i, name := range wanted {
		srcParts := int32(len(srcTopics[name].Partitions))
		tgt := tgtTopics[targetNames[i]]
		switch {
		case errors.Is(tgt.Err, kerr.UnknownTopicOrPartition) || (tgt.Err == nil && tgt.Topic == ""):
			toCreate = append(toCreate, name)
			continue
		case tgt.Err != nil:
			err := s.tgtAccess.Denied(kafka.OpDescribe, kafka.ResTopic, targetNames[i], tgt.Err)
			res.fail(name, s.problem(name, fmt.Errorf("target topic %q: %w", targetNames[i], err)))
			continue
		}
		tgtParts := int32(len(tgt.Partitions))
		if tgtParts < srcParts {
			if err := s.grow(ctx, targetNames[i], srcParts); err != nil {
				res.fail(name, s.problem(name, err))
				continue
			}
			s.logger.Info("grew target topic partitions", "topic", targetNames[i], "from", tgtParts, "to", srcParts)
		}
		t := s.topic(srcTopics[name], targetNames[i], TopicID(tgt.ID))
		s.ready(&res, t)
		existing = append(existing, t)
	}

	for _, name := range toCreate {
		if err := srcErrs[name]; err != nil {
			err = s.srcAccess.Denied(kafka.OpDescribeConfigs, kafka.ResTopic, name, err)
			res.fail(name, s.problem(name, fmt.Errorf("describing source topic %q configs: %w", name, err)))
			continue
		}
		t := s.topic(srcTopics[name], s.policy.TargetName(name), "")
		configs := s.configs.desired(srcConfigs[name])
		if s.headroom {
			configs = WithHeadroom(configs, srcMax[name], nil, s.configs.keepMaxMessage(), s.mutual)
		}
		id, err := s.create(ctx, t, configs)
		if err != nil {
			res.fail(name, s.problem(name, err))
			continue
		}
		s.manage(t.Target, configs)
		s.noteMaxMessage(&res, t.Target, configs, nil)
		t.TargetID = id
		res.Created = append(res.Created, t.Target)
		s.ready(&res, t)
	}
	slices.SortFunc(res.Ready, func(a, b Topic) int { return strings.Compare(a.Source, b.Source) })
	s.syncConfigs(ctx, existing, srcConfigs, srcMax, srcErrs, srcReqErr, &res)
	return res, nil
}

// topic describes source topic d, replicated to target.
func (s *Syncer) topic(d kadm.TopicDetail, target, targetID string) Topic {
	t := Topic{Source: d.Topic, Target: target, Partitions: int32(len(d.Partitions)), SourceID: TopicID(d.ID), TargetID: targetID}
	if t.TargetID == "" {
		t.TargetID = s.created[target]
	} else {
		delete(s.created, target)
	}
	for _, p := range d.Partitions.Sorted() {
		if p.Leader < 0 || errors.Is(p.Err, kerr.LeaderNotAvailable) {
			t.Leaderless = append(t.Leaderless, p.Partition)
		}
	}
	return t
}

func (s *Syncer) ready(res *Result, t Topic) {
	s.known[t.Source] = t.Partitions
	delete(s.problems, t.Source)
	if s.deletes != nil {
		s.deletes.replicated[t.Source] = true
	}
	res.Ready = append(res.Ready, t)
}

// problem logs err the first time it is seen for topic and returns it.
func (s *Syncer) problem(topic string, err error) error {
	if s.problems[topic] != err.Error() {
		s.problems[topic] = err.Error()
		s.logger.Error("cannot replicate topic", "topic", topic, "err", err)
	}
	return err
}

// create creates the target topic of t and returns its ID, if known.
func (s *Syncer) create(ctx context.Context, t Topic, configs map[string]string) (string, error) {
	ptrs := make(map[string]*string, len(configs))
	for k, v := range configs {
		ptrs[k] = kadm.StringPtr(v)
	}
	resp, err := s.target.CreateTopic(ctx, t.Partitions, s.replicationFactor, ptrs, t.Target)
	if errors.Is(err, kerr.TopicAlreadyExists) {
		return "", nil // created concurrently; the next pass checks its shape
	}
	if err != nil {
		err = s.tgtAccess.Denied(kafka.OpCreate, kafka.ResTopic, t.Target, err)
		msg := resp.ErrMessage
		if msg != "" {
			msg = " (" + msg + ")"
		}
		return "", fmt.Errorf("creating target topic %q with %d partitions and configs %s: %w%s",
			t.Target, t.Partitions, describe(configs), err, msg)
	}
	s.logger.Info("created target topic", "topic", t.Target, "source_topic", t.Source,
		"partitions", t.Partitions, "configs", describe(configs))
	id := TopicID(resp.ID)
	if id != "" {
		s.created[t.Target] = id
	}
	return id, s.waitLeaders(ctx, t.Target, t.Partitions)
}

// leaderWait bounds how long a new or grown target topic may take to get a
// leader for every partition before it is handed to the data plane.
const leaderWait = 15 * time.Second

// waitLeaders waits until every partition of target has a leader, so that
// the first writes do not meet UNKNOWN_TOPIC_OR_PARTITION and are not
// retried (which could write some records twice).
func (s *Syncer) waitLeaders(ctx context.Context, target string, partitions int32) error {
	deadline := time.Now().Add(leaderWait)
	for {
		details, err := s.target.ListTopics(ctx, target)
		if err == nil {
			if d, ok := details[target]; ok && d.Err == nil && int32(len(d.Partitions)) >= partitions && allLed(d.Partitions) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("target topic %q: not every partition has a leader after %s", target, leaderWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func allLed(ps kadm.PartitionDetails) bool {
	for _, p := range ps {
		if p.Err != nil || p.Leader < 0 {
			return false
		}
	}
	return true
}

func (s *Syncer) grow(ctx context.Context, target string, partitions int32) error {
	resp, err := s.target.UpdatePartitions(ctx, int(partitions), target)
	if err == nil {
		if r, ok := resp[target]; ok {
			err = r.Err
		}
	}
	if err != nil {
		err = s.tgtAccess.Denied(kafka.OpAlter, kafka.ResTopic, target, err)
		return fmt.Errorf("growing target topic %q to %d partitions: %w", target, partitions, err)
	}
	return s.waitLeaders(ctx, target, partitions)
}

// describe prints configs sorted by key, for logs and errors.
func describe(configs map[string]string) string {
	if len(configs) == 0 {
		return "{}"
	}
	parts := make([]string, 0, len(configs))
	for _, k := range slices.Sorted(maps.Keys(configs)) {
		parts = append(parts, k+"="+configs[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}
