package topicsync

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/policy"
)

// missingPasses is how many consecutive passes a source topic must be
// missing from the listing before its target topic is deleted, so that
// one odd metadata answer deletes nothing.
const missingPasses = 2

// deletions is the state of delete_topics.
type deletions struct {
	// replicated are the source topics the flow replicated: made ready
	// by this Syncer, or named by WithDeleteTopics.
	replicated map[string]bool
	// missing counts, per replicated source topic, the consecutive
	// passes it was missing from the source listing.
	missing map[string]int
	// problems holds, per target topic, the last deletion problem logged.
	problems map[string]string
}

// WithDeleteTopics makes s delete the target topic of a source topic the
// flow replicated once the source topic is deleted (delete_topics). The
// source topic must be missing from two consecutive listings and then be
// unknown to the source when asked for by name, so that a topic kmirror
// can no longer see (an ACL removed) or a listing that left it out is
// never taken for a deletion. replicated are source topics the flow
// replicated before (its stored progress), so that a topic deleted while
// no kmirror ran the flow is deleted on the target too. It returns s.
func (s *Syncer) WithDeleteTopics(replicated []string) *Syncer {
	s.deletes = &deletions{replicated: map[string]bool{}, missing: map[string]int{}, problems: map[string]string{}}
	for _, t := range replicated {
		s.deletes.replicated[t] = true
	}
	for t := range s.known {
		s.deletes.replicated[t] = true
	}
	return s
}

// deleteGone deletes the target topics of the replicated source topics
// that the listing srcTopics no longer holds, once they were missing in
// missingPasses passes in a row and the source confirms they are unknown.
// Only topics the policy selects are considered, named by its naming;
// internal topics never are.
func (s *Syncer) deleteGone(ctx context.Context, srcTopics kadm.TopicDetails, res *Result) {
	d := s.deletes
	var gone []string
	for name := range d.replicated {
		if !s.policy.Matches(name) || policy.IsInternal(s.policy.TargetName(name)) {
			delete(d.missing, name)
			continue
		}
		if _, ok := srcTopics[name]; ok {
			delete(d.missing, name)
			continue
		}
		d.missing[name]++
		if d.missing[name] >= missingPasses {
			gone = append(gone, name)
		}
	}
	if len(gone) == 0 {
		return
	}
	slices.Sort(gone)
	confirmed, err := s.unknownToSource(ctx, gone)
	if err != nil {
		s.logger.Debug("cannot confirm source topic deletions; trying again on the next pass", "topics", gone, "err", err)
		return
	}
	var targets []string
	source := map[string]string{}
	for _, name := range gone {
		if !confirmed[name] {
			continue
		}
		t := s.policy.TargetName(name)
		targets = append(targets, t)
		source[t] = name
	}
	if len(targets) == 0 {
		return
	}
	resp, err := s.target.DeleteTopics(ctx, targets...)
	for _, t := range targets {
		name := source[t]
		e := err
		if e == nil {
			r, ok := resp[t]
			switch {
			case !ok:
				e = errors.New("no answer for the topic")
			case r.Err != nil:
				e = r.Err
				if r.ErrMessage != "" {
					e = fmt.Errorf("%w (%s)", e, r.ErrMessage)
				}
			}
		}
		switch {
		case errors.Is(e, kerr.UnknownTopicOrPartition):
			// Deleted already (by an operator, or by a flow that ran
			// before this one).
			s.logger.Debug("target topic of a deleted source topic is gone already", "topic", t, "source_topic", name)
			d.forget(name, t)
		case e != nil:
			e = s.tgtAccess.Denied(kafka.OpDelete, kafka.ResTopic, t, e)
			e = fmt.Errorf("deleting target topic %q of deleted source topic %q: %w", t, name, e)
			res.DeleteErrors = append(res.DeleteErrors, e)
			if d.problems[t] != e.Error() {
				d.problems[t] = e.Error()
				s.logger.Error("cannot delete target topic; retrying every pass", "topic", t, "source_topic", name, "err", e)
			}
		default:
			s.logger.Info("deleted target topic because its source topic was deleted (delete_topics)", "topic", t, "source_topic", name)
			res.Deleted = append(res.Deleted, t)
			d.forget(name, t)
		}
	}
}

// unknownToSource asks the source for topics by name, bypassing any
// cached metadata, and returns those it answers
// UNKNOWN_TOPIC_OR_PARTITION for. A topic that exists but may not be
// described answers TOPIC_AUTHORIZATION_FAILED instead (and is left out of
// a listing of all topics just like a deleted one); a topic that exists
// again answers without error. Topics are never created by asking.
func (s *Syncer) unknownToSource(ctx context.Context, topics []string) (map[string]bool, error) {
	req := kmsg.NewPtrMetadataRequest()
	req.AllowAutoTopicCreation = false
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, s.srcCl)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, t := range resp.Topics {
		if t.Topic != nil && t.ErrorCode == kerr.UnknownTopicOrPartition.Code {
			out[*t.Topic] = true
		} else if t.Topic != nil && t.ErrorCode == 0 {
			delete(s.deletes.missing, *t.Topic) // there after all
		}
	}
	return out, nil
}

func (d *deletions) forget(source, target string) {
	delete(d.replicated, source)
	delete(d.missing, source)
	delete(d.problems, target)
}
