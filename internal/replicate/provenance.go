package replicate

import (
	"strings"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/metrics"
)

// HeaderProvenance is the header a flow with provenance on sets on every
// record it writes: the Kafka cluster IDs of the clusters the record was
// written to, in order, origin first, comma-separated.
const HeaderProvenance = "kmirror.provenance"

// Provenance is what a flow with provenance on does with each record it
// reads, by the record's provenance header:
//   - a record read without the header was first written to the source:
//     its path is the source's cluster ID;
//   - a record whose path holds the target's cluster ID is already there:
//     it is not written (metrics.DropLoop);
//   - a record of an origin that another flow brings to the target (a mesh
//     routes each origin by one way only) is not written
//     (metrics.DropRouted);
//   - any other record is written with the header set to its path and the
//     target's cluster ID, every other header kept as it is, in order.
type Provenance struct {
	// SourceID and TargetID are the cluster IDs of the flow's clusters.
	SourceID, TargetID string
	// Routed reports whether another flow brings the records first written
	// to the cluster with ID origin to the target. Nil, or an origin it
	// does not know, means the record is written.
	Routed func(origin string) bool

	once   sync.Once
	direct []byte // "SourceID,TargetID": the value for a record without the header
}

// Path returns the cluster IDs of a record's provenance header, origin
// first, or nil if it has none (or an empty one).
func Path(headers []kgo.RecordHeader) []string {
	for _, h := range headers {
		if h.Key == HeaderProvenance {
			if len(h.Value) == 0 {
				return nil
			}
			return strings.Split(string(h.Value), ",")
		}
	}
	return nil
}

// Apply returns the headers to write for a source record with headers in,
// or the reason the record is not written (metrics.DropLoop,
// metrics.DropRouted). in is not modified.
func (pv *Provenance) Apply(in []kgo.RecordHeader) ([]kgo.RecordHeader, string) {
	path := Path(in)
	if len(path) == 0 {
		// Produced on the source: the common case, without parsing.
		if pv.SourceID == pv.TargetID {
			return nil, metrics.DropLoop
		}
		pv.once.Do(func() { pv.direct = []byte(pv.SourceID + "," + pv.TargetID) })
		return setHeader(in, pv.direct), ""
	}
	if path[len(path)-1] != pv.SourceID {
		// Copied here by a flow that keeps no provenance: the source is
		// on the way too.
		path = append(path, pv.SourceID)
	}
	for _, id := range path {
		if id == pv.TargetID {
			return nil, metrics.DropLoop
		}
	}
	if path[0] != pv.SourceID && pv.Routed != nil && pv.Routed(path[0]) {
		return nil, metrics.DropRouted
	}
	return setHeader(in, []byte(strings.Join(append(path, pv.TargetID), ","))), ""
}

// setHeader returns in with the provenance header set to value: in the
// place of its first occurrence, others removed, or last.
func setHeader(in []kgo.RecordHeader, value []byte) []kgo.RecordHeader {
	out := make([]kgo.RecordHeader, 0, len(in)+1)
	set := false
	for _, h := range in {
		if h.Key != HeaderProvenance {
			out = append(out, h)
			continue
		}
		if !set {
			out = append(out, kgo.RecordHeader{Key: HeaderProvenance, Value: value})
			set = true
		}
	}
	if !set {
		out = append(out, kgo.RecordHeader{Key: HeaderProvenance, Value: value})
	}
	return out
}

// Copy returns the record a flow with provenance pv writes for source
// record in (key, value, timestamp and headers; nil pv copies the headers
// as they are), or false if it writes none.
func (pv *Provenance) Copy(in *kgo.Record) (*kgo.Record, bool) {
	out := &kgo.Record{Key: in.Key, Value: in.Value, Headers: in.Headers, Timestamp: in.Timestamp}
	if pv == nil {
		return out, true
	}
	h, drop := pv.Apply(in.Headers)
	if drop != "" {
		return nil, false
	}
	out.Headers = h
	return out, true
}

// Wrote reports whether a target record was written by the flow: its
// path ends with the source's and the target's cluster IDs. Records
// without it were written to the target by someone else (its own
// producers, other flows).
func (pv *Provenance) Wrote(rec *kgo.Record) bool {
	path := Path(rec.Headers)
	n := len(path)
	return n >= 2 && path[n-1] == pv.TargetID && path[n-2] == pv.SourceID
}
