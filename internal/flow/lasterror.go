package flow

import (
	"fmt"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/status"
)

// lastErrors finds a flow's newest fault for its status record. Every
// fault of a flow is counted in kmirror_errors_total{flow,kind}, wherever
// it happens (health checks, topic sync, the data plane, group sync,
// heartbeats): a kind whose count grew since the previous look is the
// newest fault, so no caller has to report it twice. The message comes
// from what the flow keeps of the fault, when it keeps it: the health
// check's error of a cluster, the reason of a stuck topic or of a stopped
// partition; otherwise the message is left empty and the log has it.
type lastErrors struct {
	counts map[string]float64 // kind → count at the previous look
	last   *status.LastError
}

// newLastErrors starts watching the faults of f from now on.
func newLastErrors(f *Flow) *lastErrors {
	return &lastErrors{counts: f.errorCounts()}
}

// update looks at the counts again and returns the newest fault, or nil
// while there was none.
func (l *lastErrors) update(f *Flow, now time.Time) *status.LastError {
	counts := f.errorCounts()
	var grown []string
	for kind, n := range counts {
		if n > l.counts[kind] {
			grown = append(grown, kind)
		}
	}
	l.counts = counts
	if len(grown) == 0 {
		return l.last
	}
	slices.Sort(grown)
	// Prefer a kind whose message is known.
	pick, msg := grown[0], ""
	for _, kind := range grown {
		if m := f.faultMessage(kind); m != "" {
			pick, msg = kind, m
			break
		}
	}
	l.last = &status.LastError{Kind: pick, Message: msg, AtMs: now.UnixMilli()}
	return l.last
}

// errorCounts returns kmirror_errors_total of the flow by kind.
func (f *Flow) errorCounts() map[string]float64 {
	out := map[string]float64{}
	for _, m := range flowSeries(f.metrics.Errors, f.cfg.Name) {
		out[label(m, "kind")] = m.GetCounter().GetValue()
	}
	return out
}

// faultMessage is what the flow keeps of its current fault of kind, in
// one line, or "".
func (f *Flow) faultMessage(kind string) string {
	switch kind {
	case metrics.ErrUnreachable, metrics.ErrAuthentication, metrics.ErrTLS, metrics.ErrAuthorization:
		for _, side := range []struct {
			alias string
			err   *string
		}{{f.cfg.Source, f.sourceErr.Load()}, {f.cfg.Target, f.targetErr.Load()}} {
			if side.err != nil && f.lastKind(side.alias) == kind {
				return *side.err // names the cluster
			}
		}
	}
	switch kind {
	case metrics.ErrProduce, metrics.ErrRecordTooLarge, metrics.ErrInvalidRecord, metrics.ErrAuthorization, metrics.ErrDeadLetter,
		metrics.ErrDecompressTooLarge:
		if r := f.repl.Load(); r != nil {
			if st := r.Totals().Stopped; len(st) > 0 {
				s := st[0]
				return fmt.Sprintf("partition %s/%d stopped at source offset %d: %s", s.Topic, s.Partition, s.Offset, s.Reason)
			}
		}
	case metrics.ErrTopicSync, metrics.ErrPartitionShape, metrics.ErrUnknownTopic, metrics.ErrTopicDeleted, metrics.ErrConfigSync:
		if st := f.StuckTopics(); len(st) > 0 {
			return fmt.Sprintf("topic %s: %s", st[0].Topic, st[0].Reason)
		}
	}
	return ""
}

// flowSeries returns the series of collector c whose flow label is flow.
func flowSeries(c prometheus.Collector, flow string) []*dto.Metric {
	ch := make(chan prometheus.Metric, 16)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	var out []*dto.Metric
	for m := range ch {
		var d dto.Metric
		if m.Write(&d) != nil || label(&d, "flow") != flow {
			continue
		}
		out = append(out, &d)
	}
	return out
}

// label returns the value of label name of m, or "".
func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
