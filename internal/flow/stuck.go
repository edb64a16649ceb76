package flow

import (
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Stuck is a source topic, or some of its partitions, that the flow
// cannot replicate for now while it replicates the others: no leader on
// the source, offsets that cannot be listed, a target topic that cannot be
// created or grown. Every topic sync pass tries again.
type Stuck struct {
	Topic string `json:"topic"`
	// Partitions are the stuck partitions, sorted; empty means the whole
	// topic.
	Partitions []int32 `json:"partitions,omitempty"`
	Reason     string  `json:"reason"`
}

// stuckSet gathers the stuck topics of one topic sync pass.
type stuckSet struct {
	byTopic map[string]*Stuck
}

func newStuckSet() *stuckSet { return &stuckSet{byTopic: map[string]*Stuck{}} }

// add records partitions of topic (nil: the whole topic) as stuck for
// reason; the first reason of a topic is kept.
func (s *stuckSet) add(topic string, partitions []int32, reason string) {
	st, ok := s.byTopic[topic]
	if !ok {
		st = &Stuck{Topic: topic, Partitions: slices.Clone(partitions), Reason: reason}
		s.byTopic[topic] = st
		return
	}
	if partitions == nil || st.Partitions == nil {
		if partitions == nil {
			st.Partitions, st.Reason = nil, reason
		}
		return
	}
	for _, p := range partitions {
		if !slices.Contains(st.Partitions, p) {
			st.Partitions = append(st.Partitions, p)
		}
	}
}

// list returns the stuck topics sorted by name.
func (s *stuckSet) list() []Stuck {
	out := make([]Stuck, 0, len(s.byTopic))
	for _, name := range slices.Sorted(maps.Keys(s.byTopic)) {
		st := *s.byTopic[name]
		slices.Sort(st.Partitions)
		out = append(out, st)
	}
	return out
}

// publishStuck makes the pass's stuck topics visible in the status, in
// /readyz and in kmirror_topic_stuck, and logs a topic becoming stuck or
// replicating again once.
func (r *run) publishStuck(s *stuckSet) {
	list := s.list()
	now := map[string]bool{}
	for _, st := range list {
		now[st.Topic] = true
		r.metrics.TopicStuck.WithLabelValues(r.cfg.Name, st.Topic).Set(1)
		if !r.stuckTopics[st.Topic] {
			r.logger.Warn("topic partly or wholly not replicated; the other topics go on, retrying every topic sync pass",
				"topic", st.Topic, "partitions", describePartitions(st.Partitions), "reason", st.Reason)
		}
	}
	for topic := range r.stuckTopics {
		if !now[topic] {
			r.metrics.TopicStuck.DeleteLabelValues(r.cfg.Name, topic)
			r.logger.Info("topic replicating again", "topic", topic)
		}
	}
	r.stuckTopics = now
	r.stuck.Store(&list)
}

func describePartitions(ps []int32) string {
	if len(ps) == 0 {
		return "all"
	}
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(p)))
	}
	return b.String()
}
