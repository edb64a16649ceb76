package flow

import (
	"maps"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/replicate"
	"github.com/kmirror/kmirror/internal/status"
	"github.com/kmirror/kmirror/internal/topicsync"
)

// RecoveryPoint is what the target would miss if the source cluster died
// now: the recovery point of a disaster-recovery failover.
//
//   - Records is the sum over partitions of the source end offset last
//     seen by the data plane minus the position (the next source offset
//     not yet acknowledged by the target). Transaction markers count as
//     records.
//   - Bytes estimates their key, value and header bytes: exact for the
//     records fetched and not yet acknowledged, and the topic's average
//     record size (bytes over records acknowledged by this process, or of
//     the fetched records when none was acknowledged yet) for the others.
//   - Seconds is the age, now minus its timestamp, of the oldest source
//     record the data plane fetched and the target did not acknowledge; 0
//     when none is pending. Records beyond the fetched ones are not read
//     for their timestamps: the data plane fetches ahead, so while the
//     target is behind the oldest record is among the fetched ones.
type RecoveryPoint struct {
	Records int64   `json:"records"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
}

// TopicStatus is a replicated topic in a flow's Status, with its own
// recovery point (null while the flow does not run here).
type TopicStatus struct {
	topicsync.Topic
	RecoveryPoint *RecoveryPoint `json:"recovery_point"`
}

// RecoveryPoints returns the flow's recovery point, in total and by
// source topic, and false if the flow does not replicate here now. The
// heartbeat topic is left out: its freshness is the heartbeat age.
func (f *Flow) RecoveryPoints(now time.Time) (RecoveryPoint, map[string]RecoveryPoint, bool) {
	repl := f.repl.Load()
	if repl == nil || !f.started.Load() {
		return RecoveryPoint{}, nil, false
	}
	parts := repl.Pending()
	if hb := policy.NewTopics(f.cfg).WithGraph(f.graph, f.cfg).HeartbeatTopic(); hb != "" {
		parts = slices.DeleteFunc(parts, func(p replicate.PartitionPending) bool { return p.Partition.Topic == hb })
	}
	total, byTopic := recoveryPoints(parts, f.averageSize, now)
	return total, byTopic, true
}

// topicStatuses returns the topics with their recovery points, and the
// flow's, nil while it does not replicate here.
func (f *Flow) topicStatuses(topics *[]topicsync.Topic, now time.Time) ([]TopicStatus, *RecoveryPoint) {
	total, byTopic, ok := f.RecoveryPoints(now)
	if topics == nil {
		if !ok {
			return nil, nil
		}
		return nil, &total
	}
	out := make([]TopicStatus, len(*topics))
	for i, t := range *topics {
		out[i].Topic = t
		if ok {
			rp := byTopic[t.Source]
			out[i].RecoveryPoint = &rp
		}
	}
	if !ok {
		return out, nil
	}
	return out, &total
}

func (rp *RecoveryPoint) add(o RecoveryPoint) {
	rp.Records += o.Records
	rp.Bytes += o.Bytes
	rp.Seconds = max(rp.Seconds, o.Seconds)
}

// recoveryPoints sums the pending records of the partitions by topic;
// avg returns a topic's average record size, and false if unknown.
func recoveryPoints(parts []replicate.PartitionPending, avg func(topic string) (float64, bool), now time.Time) (RecoveryPoint, map[string]RecoveryPoint) {
	byTopic := map[string]RecoveryPoint{}
	type fetched struct{ n, bytes int64 }
	seen := map[string]fetched{}
	for _, p := range parts {
		rp := byTopic[p.Partition.Topic]
		rp.Records += p.Records
		if p.Fetched > 0 && p.Records > 0 {
			rp.Seconds = max(rp.Seconds, now.Sub(p.Oldest).Seconds())
		}
		byTopic[p.Partition.Topic] = rp
		s := seen[p.Partition.Topic]
		s.n += p.Fetched
		s.bytes += p.FetchedBytes
		seen[p.Partition.Topic] = s
	}
	var total RecoveryPoint
	for _, topic := range slices.Sorted(maps.Keys(byTopic)) {
		rp, s := byTopic[topic], seen[topic]
		size, ok := avg(topic)
		if !ok && s.n > 0 {
			size = float64(s.bytes) / float64(s.n)
		}
		rp.Bytes = s.bytes + int64(float64(max(rp.Records-s.n, 0))*size)
		byTopic[topic] = rp
		total.add(rp)
	}
	return total, byTopic
}

// averageSize is the average size of the records of topic the flow
// copied in this process (kmirror_replicated_bytes_total over
// kmirror_replicated_records_total), and false before the first.
func (f *Flow) averageSize(topic string) (float64, bool) {
	n := counterValue(f.metrics.ReplicatedRecords, f.cfg.Name, topic)
	if n <= 0 {
		return 0, false
	}
	return counterValue(f.metrics.ReplicatedBytes, f.cfg.Name, topic) / n, true
}

// counterValue is the value of one series of a counter vector.
func counterValue(c *prometheus.CounterVec, labels ...string) float64 {
	var d dto.Metric
	if m, err := c.GetMetricWithLabelValues(labels...); err == nil && m.Write(&d) == nil {
		return d.GetCounter().GetValue()
	}
	return 0
}

// RecoveryGauges keeps the kmirror_recovery_point_* gauges of flows up
// to date; a flow that does not replicate here, and a topic it no longer
// replicates, lose their series.
type RecoveryGauges struct {
	m      *metrics.Metrics
	topics map[string]map[string]bool // flow → topics with series
}

// NewRecoveryGauges returns gauges kept in m.
func NewRecoveryGauges(m *metrics.Metrics) *RecoveryGauges {
	return &RecoveryGauges{m: m, topics: map[string]map[string]bool{}}
}

// Update sets the gauges of every flow as it stands at now.
func (g *RecoveryGauges) Update(flows []*Flow, now time.Time) {
	for _, f := range flows {
		_, byTopic, _ := f.RecoveryPoints(now)
		name := f.Name()
		for topic := range g.topics[name] {
			if _, ok := byTopic[topic]; !ok {
				g.m.RecoveryPointRecords.DeleteLabelValues(name, topic)
				g.m.RecoveryPointBytes.DeleteLabelValues(name, topic)
				g.m.RecoveryPointSeconds.DeleteLabelValues(name, topic)
			}
		}
		had := map[string]bool{}
		for topic, rp := range byTopic {
			g.m.RecoveryPointRecords.WithLabelValues(name, topic).Set(float64(rp.Records))
			g.m.RecoveryPointBytes.WithLabelValues(name, topic).Set(float64(rp.Bytes))
			g.m.RecoveryPointSeconds.WithLabelValues(name, topic).Set(rp.Seconds)
			had[topic] = true
		}
		g.topics[name] = had
	}
}

// recoveryPoint sets the recovery point fields of the status record.
func (r *run) recoveryPoint(rec *status.Record, now time.Time) {
	total, _, ok := r.RecoveryPoints(now)
	if !ok {
		return
	}
	rec.RecoveryPointBytes, rec.RecoveryPointSeconds = &total.Bytes, &total.Seconds
}
