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
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

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
	// listed holds the selected source topics of the last listing, by
	// Changed or a pass (see noteListing).
	listed map[string]listedTopic
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
	return s.sync(ctx, true)
}

// SyncNew is the pass run when Changed saw a change: Sync without the
// work of a pass that did not change, so that the topics new to the
// Syncer are ready as soon as possible. It creates and grows target
// topics and brings in step the configs of the target topics that were
// there already and are ready for the first time, but leaves the configs
// of the topics ready before, and deletions, to the next Sync.
func (s *Syncer) SyncNew(ctx context.Context) (Result, error) {
	return s.sync(ctx, false)
}

func (s *Syncer) sync(ctx context.Context, full bool) (Result, error) {
	var res Result
	srcTopics, err := s.listSource(ctx)
	if err != nil {
		err = s.srcAccess.Denied(kafka.OpDescribe, kafka.ResCluster, "", err)
		return res, fmt.Errorf("listing source topics: %w", err)
	}
	s.noteListing(s.selected(srcTopics))
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
	if full && s.deletes != nil {
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

	var toCreate []string
	var existing []Topic // whose configs are kept in step in this pass
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
		_, wasReady := s.known[name]
		t := s.topic(srcTopics[name], targetNames[i], TopicID(tgt.ID))
		s.ready(&res, t)
		if full || !wasReady {
			existing = append(existing, t)
		}
	}

	// One description of the source configs serves both the topics to
	// create and the topics whose configs are kept in step.
	toDescribe := slices.Clone(toCreate)
	for _, t := range existing {
		toDescribe = append(toDescribe, t.Source)
	}
	var srcConfigs map[string]map[string]string
	var srcMax map[string]string
	var srcErrs map[string]error
	var srcReqErr error
	if len(toDescribe) > 0 {
		srcConfigs, srcMax, srcErrs, srcReqErr = describeConfigsFull(ctx, s.srcCl, toDescribe)
	}

	var creations []creation
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
		creations = append(creations, creation{topic: t, configs: configs})
	}
	for _, c := range s.createAll(ctx, creations) {
		if c.err != nil {
			res.fail(c.topic.Source, s.problem(c.topic.Source, c.err))
			continue
		}
		s.manage(c.topic.Target, c.configs)
		s.noteMaxMessage(&res, c.topic.Target, c.configs, nil)
		res.Created = append(res.Created, c.topic.Target)
		s.ready(&res, c.topic)
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

// creation is a target topic to create, with its explicit configs, and
// the outcome: err is nil once the topic exists and every partition has
// a leader.
type creation struct {
	topic   Topic
	configs map[string]string
	err     error
}

// createTimeout is the time the brokers are given to create the topics
// of one CreateTopics request (kadm's default).
const createTimeout = 15 * time.Second

// createAll creates the target topics of cs with one CreateTopics request,
// each with its source's partition count and its configs, then waits
// until every partition of each has a leader. It returns cs with the
// outcome of each, and the target topic IDs the brokers gave. A topic
// created meanwhile by someone else (TOPIC_ALREADY_EXISTS) counts as
// created; the next pass checks its shape.
func (s *Syncer) createAll(ctx context.Context, cs []creation) []creation {
	if len(cs) == 0 {
		return nil
	}
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = int32(createTimeout.Milliseconds())
	for _, c := range cs {
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic = c.topic.Target
		rt.NumPartitions = c.topic.Partitions
		rt.ReplicationFactor = s.replicationFactor
		for _, k := range slices.Sorted(maps.Keys(c.configs)) {
			rc := kmsg.NewCreateTopicsRequestTopicConfig()
			rc.Name, rc.Value = k, kmsg.StringPtr(c.configs[k])
			rt.Configs = append(rt.Configs, rc)
		}
		req.Topics = append(req.Topics, rt)
	}
	resp, reqErr := req.RequestWith(ctx, s.tgtCl)
	answers := map[string]kmsg.CreateTopicsResponseTopic{}
	if reqErr == nil {
		for _, rt := range resp.Topics {
			answers[rt.Topic] = rt
		}
	}
	wait := map[string]int32{}
	for i := range cs {
		c := &cs[i]
		rt, ok := answers[c.topic.Target]
		var err error
		switch {
		case reqErr != nil:
			err = reqErr
		case !ok:
			err = errors.New("no answer for the topic")
		default:
			err = kerr.ErrorForCode(rt.ErrorCode)
		}
		if errors.Is(err, kerr.TopicAlreadyExists) {
			c.topic.TargetID = ""
			continue // created concurrently; the next pass checks its shape
		}
		if err != nil {
			err = s.tgtAccess.Denied(kafka.OpCreate, kafka.ResTopic, c.topic.Target, err)
			msg := ""
			if ok && rt.ErrorMessage != nil && *rt.ErrorMessage != "" {
				msg = " (" + *rt.ErrorMessage + ")"
			}
			c.err = fmt.Errorf("creating target topic %q with %d partitions and configs %s: %w%s",
				c.topic.Target, c.topic.Partitions, describe(c.configs), err, msg)
			continue
		}
		s.logger.Info("created target topic", "topic", c.topic.Target, "source_topic", c.topic.Source,
			"partitions", c.topic.Partitions, "configs", describe(c.configs))
		c.topic.TargetID = TopicID(rt.TopicID)
		if c.topic.TargetID != "" {
			s.created[c.topic.Target] = c.topic.TargetID
		}
		wait[c.topic.Target] = c.topic.Partitions
	}
	errs := s.waitLeaders(ctx, wait)
	for i := range cs {
		if err := errs[cs[i].topic.Target]; err != nil && cs[i].err == nil {
			cs[i].err = err
		}
	}
	return cs
}

// leaderWait bounds how long a new or grown target topic may take to get a
// leader for every partition before it is handed to the data plane.
const leaderWait = 15 * time.Second

// leaderPoll is how often waitLeaders asks again; the partitions of a
// topic just created usually have their leaders at the first or second
// answer.
const leaderPoll = 25 * time.Millisecond

// waitLeaders waits until every partition of each topic of want (target
// topic name to partition count) has a leader that answers for it, so
// that the first writes do not meet UNKNOWN_TOPIC_OR_PARTITION or
// NOT_LEADER_OR_FOLLOWER and are not retried (which could write some
// records twice, and costs the client's retry backoff). A broker names
// the leaders in its metadata a moment before the leader serves the
// partition, so each leader is asked for the partitions' end offsets too
// (ListOffsets, once, without retries). The metadata is asked straight of
// a broker, for all the topics at once: kadm answers from the client's
// metadata cache, which would still hold the answer, from before the
// creation, that the topic does not exist. It returns the error of each
// topic not ready within leaderWait (all of them if ctx ends).
func (s *Syncer) waitLeaders(ctx context.Context, want map[string]int32) map[string]error {
	errs := map[string]error{}
	if len(want) == 0 {
		return errs
	}
	pending := maps.Clone(want)
	deadline := time.Now().Add(leaderWait)
	for {
		for _, topic := range s.servedTopics(ctx, pending) {
			delete(pending, topic)
		}
		if len(pending) == 0 {
			return errs
		}
		if time.Now().After(deadline) {
			for name := range pending {
				errs[name] = fmt.Errorf("target topic %q: not every partition has a leader after %s", name, leaderWait)
			}
			return errs
		}
		select {
		case <-ctx.Done():
			for name := range pending {
				errs[name] = ctx.Err()
			}
			return errs
		case <-time.After(leaderPoll):
		}
	}
}

// servedTopics returns the topics of want (name to partition count) that
// have at least that many partitions, each with a leader that answered a
// ListOffsets for it.
func (s *Syncer) servedTopics(ctx context.Context, want map[string]int32) []string {
	req := kmsg.NewPtrMetadataRequest()
	req.AllowAutoTopicCreation = false // a topic deleted meanwhile stays deleted
	for _, name := range slices.Sorted(maps.Keys(want)) {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(name)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, s.tgtCl)
	if err != nil {
		return nil
	}
	byLeader := map[int32]map[string][]int32{}
	led := map[string]bool{}
	for _, rt := range resp.Topics {
		if rt.Topic == nil || rt.ErrorCode != 0 || int32(len(rt.Partitions)) < want[*rt.Topic] {
			continue
		}
		ok := true
		for _, p := range rt.Partitions {
			if p.ErrorCode != 0 || p.Leader < 0 {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		led[*rt.Topic] = true
		for _, p := range rt.Partitions {
			if byLeader[p.Leader] == nil {
				byLeader[p.Leader] = map[string][]int32{}
			}
			byLeader[p.Leader][*rt.Topic] = append(byLeader[p.Leader][*rt.Topic], p.Partition)
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for leader, topics := range byLeader {
		wg.Add(1)
		go func() {
			defer wg.Done()
			failed := s.unserved(ctx, leader, topics)
			mu.Lock()
			defer mu.Unlock()
			for _, t := range failed {
				delete(led, t)
			}
		}()
	}
	wg.Wait()
	return slices.Sorted(maps.Keys(led))
}

// unserved asks broker leader, once, for the end offsets of the
// partitions of topics and returns the topics of those it did not answer
// for, or answered with an error that passes by waiting
// (NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC_OR_PARTITION, ...).
func (s *Syncer) unserved(ctx context.Context, leader int32, topics map[string][]int32) []string {
	req := kmsg.NewPtrListOffsetsRequest()
	req.ReplicaID = -1
	for topic, ps := range topics {
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = topic
		for _, p := range ps {
			rp := kmsg.NewListOffsetsRequestTopicPartition()
			rp.Partition, rp.Timestamp, rp.CurrentLeaderEpoch = p, -1, -1
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, s.tgtCl.Broker(int(leader)))
	if err != nil {
		return slices.Collect(maps.Keys(topics))
	}
	answered := map[string]int{}
	bad := map[string]bool{}
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			// Only a partition not served yet is waited for: an error
			// that would not pass by waiting (no DESCRIBE on the
			// topic) leaves it to the data plane, as before.
			if err := kerr.ErrorForCode(rp.ErrorCode); err != nil && kerr.IsRetriable(err) {
				bad[rt.Topic] = true
			}
			answered[rt.Topic]++
		}
	}
	for topic, ps := range topics {
		if answered[topic] < len(ps) {
			bad[topic] = true
		}
	}
	return slices.Collect(maps.Keys(bad))
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
	return s.waitLeaders(ctx, map[string]int32{target: partitions})[target]
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
