package status

import (
	"math"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// LatencyWindow estimates quantiles of a cumulative histogram (such as
// kmirror_replication_latency_seconds) over its last Span, from snapshots
// taken now and then: the samples of the window are the difference
// between the newest snapshot and the newest one at least Span older.
type LatencyWindow struct {
	Span  time.Duration
	snaps []histSnap
}

type histSnap struct {
	at     time.Time
	count  uint64
	bounds []float64 // upper bounds of the finite buckets, seconds
	cum    []uint64  // cumulative counts of those buckets
}

// Add takes a snapshot of h at time at.
func (w *LatencyWindow) Add(at time.Time, h *dto.Histogram) {
	s := histSnap{at: at, count: h.GetSampleCount()}
	for _, b := range h.GetBucket() {
		if math.IsInf(b.GetUpperBound(), 1) {
			continue
		}
		s.bounds = append(s.bounds, b.GetUpperBound())
		s.cum = append(s.cum, b.GetCumulativeCount())
	}
	w.snaps = append(w.snaps, s)
	for len(w.snaps) > 2 && !w.snaps[1].at.After(at.Add(-w.Span)) {
		w.snaps = w.snaps[1:]
	}
}

// Quantile returns the upper bound, in milliseconds, of the bucket that
// holds quantile q of the window's samples, and false when the window
// has none. A quantile above the largest finite bucket is that bucket's
// bound.
func (w *LatencyWindow) Quantile(q float64) (float64, bool) {
	if len(w.snaps) < 2 {
		return 0, false
	}
	base, last := w.snaps[0], w.snaps[len(w.snaps)-1]
	n := last.count - base.count
	if n == 0 || last.count < base.count || len(last.bounds) == 0 || len(base.cum) != len(last.cum) {
		return 0, false
	}
	for i, bound := range last.bounds {
		if float64(last.cum[i]-base.cum[i]) >= q*float64(n) {
			return bound * 1000, true
		}
	}
	return last.bounds[len(last.bounds)-1] * 1000, true
}
