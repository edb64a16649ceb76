package topicsync

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/kafka"
)

// describeBatch bounds the topics of one DescribeConfigs request.
const describeBatch = 1000

// configPolicy says which configs of a source topic its target topic gets.
type configPolicy struct {
	// exclude are the keys never set, changed or deleted on the target.
	exclude []*regexp.Regexp
	// overrides are forced on every target topic; they win over the
	// source and over exclude.
	overrides map[string]string
}

// defaultExclude compiles config.DefaultTopicConfigExclude as the config
// package compiles topic_config_exclude.
func defaultExclude() []*regexp.Regexp {
	out := make([]*regexp.Regexp, len(config.DefaultTopicConfigExclude))
	for i, re := range config.DefaultTopicConfigExclude {
		out[i] = regexp.MustCompile(`^(?:` + re + `)$`)
	}
	return out
}

// WithConfigs sets the keys never copied (topic_config_exclude, compiled
// as full matches) and the configs forced on every target topic
// (topic_config_overrides), and returns s.
func (s *Syncer) WithConfigs(exclude []*regexp.Regexp, overrides map[string]string) *Syncer {
	s.configs = configPolicy{exclude: exclude, overrides: maps.Clone(overrides)}
	return s
}

// excluded reports whether key is left alone on the target: it matches
// exclude and is not overridden.
func (c configPolicy) excluded(key string) bool {
	if _, ok := c.overrides[key]; ok {
		return false
	}
	for _, re := range c.exclude {
		if re.MatchString(key) {
			return true
		}
	}
	return false
}

// desired returns the configs the target topic of a source topic with the
// explicit configs source should have set explicitly: the source's, less
// the excluded ones, plus the overrides.
func (c configPolicy) desired(source map[string]string) map[string]string {
	out := make(map[string]string, len(source)+len(c.overrides))
	for k, v := range source {
		if !c.excluded(k) {
			out[k] = v
		}
	}
	maps.Copy(out, c.overrides)
	return out
}

// change is one config key to change on a target topic: set to New, or
// deleted (back to the target's default) when New is nil. Old is the
// target's explicit value before, nil if it had none.
type change struct {
	Key      string
	Old, New *string
}

func (c change) String() string {
	show := func(v *string) string {
		if v == nil {
			return "(default)"
		}
		return *v
	}
	return c.Key + ": " + show(c.Old) + " -> " + show(c.New)
}

// diffConfigs returns the changes, sorted by key, that bring a target
// topic whose explicit configs are target to the explicit configs desired.
// A key set on the target and not desired is deleted if deletable says so
// (kmirror manages it: the source had it and dropped it), and left alone
// otherwise.
func diffConfigs(desired, target map[string]string, deletable func(string) bool) []change {
	var out []change
	for _, k := range slices.Sorted(maps.Keys(desired)) {
		want := desired[k]
		if have, ok := target[k]; ok && have == want {
			continue
		}
		c := change{Key: k, New: &want}
		if have, ok := target[k]; ok {
			c.Old = &have
		}
		out = append(out, c)
	}
	for _, k := range slices.Sorted(maps.Keys(target)) {
		if _, ok := desired[k]; ok || !deletable(k) {
			continue
		}
		have := target[k]
		out = append(out, change{Key: k, Old: &have})
	}
	slices.SortFunc(out, func(a, b change) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// manage records that kmirror manages the keys of configs on target topic
// target: they came from the source or the overrides, so once the source
// drops one it is deleted on the target. A key only ever set on the
// target is the target's own and is never deleted.
func (s *Syncer) manage(target string, configs map[string]string) {
	m := s.managed[target]
	if m == nil {
		m = map[string]bool{}
		s.managed[target] = m
	}
	for k := range configs {
		m[k] = true
	}
}

// forgetTopics drops what is kept about target topics not in targets,
// which are no longer replicated.
func (s *Syncer) forgetTopics(targets []string) {
	keep := make(map[string]bool, len(targets))
	for _, t := range targets {
		keep[t] = true
	}
	for t := range s.configProblems {
		if !keep[t] {
			delete(s.configProblems, t)
		}
	}
	for t := range s.managed {
		if !keep[t] {
			delete(s.managed, t)
		}
	}
}

// describeConfigs returns, per topic, the configs set explicitly on it
// (config source DYNAMIC_TOPIC_CONFIG), or the topic's error. Topics are
// asked in batches of describeBatch, so a pass costs one request per
// cluster for up to that many topics; synonyms and documentation are not
// asked for. A request that fails as a whole gives its error to each of
// its topics and is returned as reqErr too (the last one, if several).
func describeConfigs(ctx context.Context, cl *kgo.Client, topics []string) (out map[string]map[string]string, errs map[string]error, reqErr error) {
	out, _, errs, reqErr = describeConfigsFull(ctx, cl, topics)
	return out, errs, reqErr
}

// describeConfigsFull is describeConfigs that also returns, per topic,
// its effective max.message.bytes: its own, or its broker's default.
func describeConfigsFull(ctx context.Context, cl *kgo.Client, topics []string) (out map[string]map[string]string, maxMessage map[string]string, errs map[string]error, reqErr error) {
	out = make(map[string]map[string]string, len(topics))
	maxMessage = make(map[string]string, len(topics))
	errs = map[string]error{}
	for batch := range slices.Chunk(topics, describeBatch) {
		req := kmsg.NewPtrDescribeConfigsRequest()
		for _, t := range batch {
			rr := kmsg.NewDescribeConfigsRequestResource()
			rr.ResourceType = kmsg.ConfigResourceTypeTopic
			rr.ResourceName = t
			req.Resources = append(req.Resources, rr)
		}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			reqErr = err
			for _, t := range batch {
				errs[t] = err
			}
			continue
		}
		for _, r := range resp.Resources {
			if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
				if r.ErrorMessage != nil && *r.ErrorMessage != "" {
					err = fmt.Errorf("%w (%s)", err, *r.ErrorMessage)
				}
				errs[r.ResourceName] = err
				continue
			}
			m := map[string]string{}
			for _, c := range r.Configs {
				if c.Name == MaxMessageBytesKey && c.Value != nil {
					maxMessage[r.ResourceName] = *c.Value
				}
				// A sensitive value is not returned; it cannot be copied.
				if c.Source == kmsg.ConfigSourceDynamicTopicConfig && c.Value != nil {
					m[c.Name] = *c.Value
				}
			}
			out[r.ResourceName] = m
		}
		for _, t := range batch {
			if _, ok := out[t]; !ok && errs[t] == nil {
				errs[t] = errors.New("no answer for the topic")
			}
		}
	}
	return out, maxMessage, errs, reqErr
}

// alteration is the changes to make to one target topic.
type alteration struct {
	topic   Topic
	changes []change
	// desired and current are the explicit configs the topic is to
	// have and has.
	desired, current map[string]string
}

// syncConfigs brings the explicit configs of the target topics of ready
// in step with the source configs src (described in this pass; srcErrs
// holds the topics that could not be, srcReqErr the failure of a whole
// request), with one DescribeConfigs of the target and one
// IncrementalAlterConfigs for every topic that changed. Problems are
// logged once each (a failed request once, not once per topic) and
// reported in res; they never make a topic unready.
func (s *Syncer) syncConfigs(ctx context.Context, ready []Topic, src map[string]map[string]string, srcMax map[string]string, srcErrs map[string]error, srcReqErr error, res *Result) {
	if len(ready) == 0 {
		return
	}
	targets := make([]string, len(ready))
	for i, t := range ready {
		targets[i] = t.Target
	}
	tgt, tgtErrs, tgtReqErr := describeConfigs(ctx, s.tgtCl, targets)
	s.requestProblem(res, "source", srcReqErr)
	s.requestProblem(res, "target", tgtReqErr)
	var alters []alteration
	for _, t := range ready {
		if err := srcErrs[t.Source]; srcReqErr != nil && errors.Is(err, srcReqErr) {
			continue // reported above
		} else if err != nil {
			err = s.srcAccess.Denied(kafka.OpDescribeConfigs, kafka.ResTopic, t.Source, err)
			s.configProblem(res, t, fmt.Errorf("describing source topic %q configs: %w", t.Source, err))
			continue
		}
		if err := tgtErrs[t.Target]; tgtReqErr != nil && errors.Is(err, tgtReqErr) {
			continue
		} else if err != nil {
			err = s.tgtAccess.Denied(kafka.OpDescribeConfigs, kafka.ResTopic, t.Target, err)
			s.configProblem(res, t, fmt.Errorf("describing target topic %q configs: %w", t.Target, err))
			continue
		}
		desired := s.configs.desired(src[t.Source])
		if s.headroom {
			existing := tgt[t.Target]
			if existing == nil {
				existing = map[string]string{} // it exists, with no explicit config
			}
			desired = WithHeadroom(desired, srcMax[t.Source], existing, s.configs.keepMaxMessage(), s.mutual)
		}
		s.manage(t.Target, desired)
		managed := s.managed[t.Target]
		for k := range managed {
			if _, set := tgt[t.Target][k]; !set {
				if _, want := desired[k]; !want {
					delete(managed, k) // gone from both sides
				}
			}
		}
		changes := diffConfigs(desired, tgt[t.Target], func(k string) bool { return managed[k] && !s.configs.excluded(k) })
		if len(changes) == 0 {
			s.noteMaxMessage(res, t.Target, desired, tgt[t.Target])
			s.configInStep(t)
			continue
		}
		alters = append(alters, alteration{topic: t, changes: changes, desired: desired, current: tgt[t.Target]})
	}
	if len(alters) == 0 {
		return
	}
	errs := s.alterConfigs(ctx, alters)
	for _, a := range alters {
		if err := errs[a.topic.Target]; err != nil {
			err = s.tgtAccess.Denied(kafka.OpAlterConfigs, kafka.ResTopic, a.topic.Target, err)
			s.configProblem(res, a.topic, fmt.Errorf("changing target topic %q configs (%s): %w", a.topic.Target, describeChanges(a.changes), err))
			continue
		}
		s.logger.Info("updated target topic configs", "topic", a.topic.Target, "source_topic", a.topic.Source,
			"changes", describeChanges(a.changes))
		res.ConfigUpdated = append(res.ConfigUpdated, a.topic.Target)
		s.noteMaxMessage(res, a.topic.Target, a.desired, a.current)
		s.configInStep(a.topic)
	}
}

// alterConfigs applies alters with one IncrementalAlterConfigs request
// (set and delete operations only: keys not named are left as they are)
// and returns the error of each target topic that was not changed.
func (s *Syncer) alterConfigs(ctx context.Context, alters []alteration) map[string]error {
	req := kmsg.NewPtrIncrementalAlterConfigsRequest()
	for _, a := range alters {
		rr := kmsg.NewIncrementalAlterConfigsRequestResource()
		rr.ResourceType = kmsg.ConfigResourceTypeTopic
		rr.ResourceName = a.topic.Target
		for _, c := range a.changes {
			rc := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
			rc.Name = c.Key
			if c.New == nil {
				rc.Op = kmsg.IncrementalAlterConfigOpDelete
			} else {
				rc.Op = kmsg.IncrementalAlterConfigOpSet
				rc.Value = kmsg.StringPtr(*c.New)
			}
			rr.Configs = append(rr.Configs, rc)
		}
		req.Resources = append(req.Resources, rr)
	}
	errs := map[string]error{}
	resp, err := req.RequestWith(ctx, s.tgtCl)
	if err != nil {
		for _, a := range alters {
			errs[a.topic.Target] = err
		}
		return errs
	}
	answered := map[string]bool{}
	for _, r := range resp.Resources {
		answered[r.ResourceName] = true
		if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
			if r.ErrorMessage != nil && *r.ErrorMessage != "" {
				err = fmt.Errorf("%w (%s)", err, *r.ErrorMessage)
			}
			errs[r.ResourceName] = err
		}
	}
	for _, a := range alters {
		if !answered[a.topic.Target] {
			errs[a.topic.Target] = errors.New("no answer for the topic")
		}
	}
	return errs
}

func describeChanges(cs []change) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = c.String()
	}
	return strings.Join(parts, ", ")
}

// configProblem reports err about the configs of topic t in res, and logs
// it unless it is the problem last logged for t.
func (s *Syncer) configProblem(res *Result, t Topic, err error) {
	res.ConfigErrors = append(res.ConfigErrors, err)
	if s.configProblems[t.Target] == err.Error() {
		return
	}
	s.configProblems[t.Target] = err.Error()
	s.logger.Error("cannot bring target topic configs in step with the source; replication goes on, retrying every pass",
		"topic", t.Target, "source_topic", t.Source, "err", err)
}

// requestProblem reports err, the failure of a whole DescribeConfigs
// request to the cluster on side ("source" or "target"), in res, and logs
// it unless it is the problem last logged for side. A nil err clears it.
func (s *Syncer) requestProblem(res *Result, side string, err error) {
	if err == nil {
		delete(s.requestProblems, side)
		return
	}
	err = fmt.Errorf("describing %s topic configs: %w", side, err)
	res.ConfigErrors = append(res.ConfigErrors, err)
	if s.requestProblems[side] == err.Error() {
		return
	}
	s.requestProblems[side] = err.Error()
	s.logger.Error("cannot describe topic configs; their sync waits, replication goes on, retrying every pass",
		"cluster", side, "err", err)
}

// configInStep records that the configs of t are in step, logging it if a
// problem was logged before.
func (s *Syncer) configInStep(t Topic) {
	if _, ok := s.configProblems[t.Target]; ok {
		delete(s.configProblems, t.Target)
		s.logger.Info("target topic configs in step with the source again", "topic", t.Target, "source_topic", t.Source)
	}
}
