package replicate

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/provenance"
)

// HeaderProvenance is the header a flow with provenance on sets on every
// record it writes (see internal/provenance).
const HeaderProvenance = provenance.Header

// DefaultProofWait is how long a record whose mark cannot be proven or
// disproven yet waits, unless Options say otherwise (see
// Options.ProofWait).
const DefaultProofWait = 30 * time.Second

// Prover says whether a flow wrote a record of the source (a
// provenance.Ledger over the source cluster).
type Prover interface {
	Check(writer, topic, sourceTopic string, partition int32, offset int64) (provenance.Verdict, int64)
	// Changed returns a channel closed the next time Check may answer
	// differently.
	Changed() <-chan struct{}
	// Expire says a wait for writer's progress on the partition ran out.
	Expire(writer, sourceTopic string, partition int32)
}

// Provenance is what a flow with provenance on does with each record it
// reads, by the record's provenance mark (see internal/provenance):
//   - a record without a mark was first written to the source; so is a
//     record whose mark is not proven: the flow its mark names did not
//     write it (an application forwarded the header of a record it read,
//     or forged one). Such a record is written like any record of the
//     source, and counted as foreign;
//   - a proven copy whose path holds the target's cluster ID is already
//     there: it is not written (metrics.DropLoop);
//   - a proven copy of an origin that another flow brings to the target
//     (a mesh routes each origin by one way only) is not written
//     (metrics.DropRouted);
//   - any other proven copy is written with its path and the target's
//     cluster ID;
//   - a record whose mark cannot be proven or disproven yet (its writer
//     has not stored its progress that far) waits (Decision.Wait).
//
// Every record written carries the flow's mark, every other header kept
// as it is, in order.
type Provenance struct {
	// Flow is the flow's name: the writer its marks name.
	Flow string
	// SourceID and TargetID are the cluster IDs of the flow's clusters.
	SourceID, TargetID string
	// Routed reports whether another flow brings the records first written
	// to the cluster with ID origin to the target. Nil, or an origin it
	// does not know, means the record is written.
	Routed func(origin string) bool
	// Ledger proves the marks of source records. Nil proves none: every
	// mark is foreign.
	Ledger Prover
	// Legacy returns the flows that may have written a mark of the older
	// format (a bare path, naming no flow) whose path ends with the
	// cluster with ID prev and the source: the flows from that cluster
	// into the source that the configuration knows. Nil knows none: such
	// marks are foreign.
	Legacy func(prev string) []string

	originOnce sync.Once
	originSame []byte // the mark of a record of the source, same topic name
}

// Decision is what a flow does with one source record.
type Decision struct {
	// Headers are the headers to write, when the record is written.
	Headers []kgo.RecordHeader
	// Drop is why the record is not written (metrics.DropLoop,
	// metrics.DropRouted), or "".
	Drop string
	// Wait says the record's mark can be neither proven nor disproven
	// yet: nothing is decided (Headers are those of a record of the
	// source, should it be disproven).
	Wait bool
	// Foreign says the record carries a mark that is not proven: it is
	// written as a record of the source. Unproven says why: its mark was
	// neither proven nor disproven in time (else it was disproven).
	Foreign, Unproven bool
}

// Decide decides for source record in, copied to topic target. unproven
// says a mark still unknown is not waited for any more: it counts as not
// proven. in is not modified.
func (pv *Provenance) Decide(in *kgo.Record, target string, unproven bool) Decision {
	val, has := headerValue(in.Headers)
	if !has || len(val) == 0 {
		return Decision{Headers: pv.origin(in, target)}
	}
	m, ok := provenance.Parse(val)
	if !ok {
		return Decision{Headers: pv.origin(in, target), Foreign: true}
	}
	switch pv.verdict(m, in) {
	case provenance.Unknown:
		if !unproven {
			// The headers it gets if its mark is disproven, for a
			// comparison that cannot wait (see internal/resume).
			return Decision{Wait: true, Headers: pv.origin(in, target)}
		}
		return Decision{Headers: pv.origin(in, target), Foreign: true, Unproven: true}
	case provenance.Stale:
		return Decision{Headers: pv.origin(in, target), Foreign: true, Unproven: true}
	case provenance.NotCopy:
		return Decision{Headers: pv.origin(in, target), Foreign: true}
	}
	if m.Has(pv.TargetID) {
		return Decision{Drop: metrics.DropLoop}
	}
	if m.Origin() != pv.SourceID && pv.Routed != nil && pv.Routed(m.Origin()) {
		return Decision{Drop: metrics.DropRouted}
	}
	path := append(m.Path[:len(m.Path):len(m.Path)], pv.TargetID)
	return Decision{Headers: setHeader(in.Headers, pv.mark(path, in.Topic, target))}
}

// verdict checks mark m of source record in with the ledger.
func (pv *Provenance) verdict(m provenance.Mark, in *kgo.Record) provenance.Verdict {
	n := len(m.Path)
	if pv.Ledger == nil || m.Path[n-1] != pv.SourceID {
		// A copy on the source names the source last.
		return provenance.NotCopy
	}
	topic := in.Topic
	if m.SourceTopic != "" {
		topic = m.SourceTopic
	}
	writers := pv.writers(m)
	out := provenance.NotCopy
	for _, w := range writers {
		switch v, _ := pv.Ledger.Check(w, in.Topic, topic, in.Partition, in.Offset); v {
		case provenance.Copy:
			return v
		case provenance.Unknown:
			out = v
		case provenance.Stale:
			if out != provenance.Unknown {
				out = v
			}
		}
	}
	return out
}

// writers returns the flows that may have written mark m: the one it
// names, or for a mark of the older format the flows Legacy knows.
func (pv *Provenance) writers(m provenance.Mark) []string {
	if !m.Legacy {
		return []string{m.Writer}
	}
	if n := len(m.Path); n >= 2 && pv.Legacy != nil {
		return pv.Legacy(m.Path[n-2])
	}
	return nil
}

// Expire tells the ledger that the wait for the mark of source record in
// ran out: later records of the same writers on the partition are not
// waited for until their progress moves.
func (pv *Provenance) Expire(in *kgo.Record) {
	val, _ := headerValue(in.Headers)
	m, ok := provenance.Parse(val)
	if !ok || pv.Ledger == nil {
		return
	}
	topic := in.Topic
	if m.SourceTopic != "" {
		topic = m.SourceTopic
	}
	for _, w := range pv.writers(m) {
		pv.Ledger.Expire(w, topic, in.Partition)
	}
}

// DecideWait is Decide, waiting up to wait for a mark to be proven or
// disproven; past it (or once ctx ends) the mark counts as not proven.
func (pv *Provenance) DecideWait(ctx context.Context, in *kgo.Record, target string, wait time.Duration) Decision {
	d := pv.Decide(in, target, false)
	if !d.Wait {
		return d
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	// A writer in the same process decides without storing anything:
	// look again now and then too.
	tick := time.NewTicker(heldPoll)
	defer tick.Stop()
	for {
		ch := pv.Ledger.Changed()
		if d = pv.Decide(in, target, false); !d.Wait {
			return d
		}
		select {
		case <-ch:
		case <-tick.C:
		case <-deadline.C:
			pv.Expire(in)
			return pv.Decide(in, target, true)
		case <-ctx.Done():
			return pv.Decide(in, target, true)
		}
	}
}

// origin returns the headers of a record first written to the source.
func (pv *Provenance) origin(in *kgo.Record, target string) []kgo.RecordHeader {
	if in.Topic == target {
		// The common case, once per flow rather than once per record: the
		// value is shared by the copies and never modified.
		pv.originOnce.Do(func() { pv.originSame = pv.mark([]string{pv.SourceID, pv.TargetID}, target, target) })
		return setHeader(in.Headers, pv.originSame)
	}
	return setHeader(in.Headers, pv.mark([]string{pv.SourceID, pv.TargetID}, in.Topic, target))
}

func (pv *Provenance) mark(path []string, source, target string) []byte {
	m := provenance.Mark{Writer: pv.Flow, Path: path}
	if source != target {
		m.SourceTopic = source
	}
	return m.Encode()
}

func headerValue(hs []kgo.RecordHeader) ([]byte, bool) {
	for _, h := range hs {
		if h.Key == HeaderProvenance {
			return h.Value, true
		}
	}
	return nil, false
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

// Wrote reports whether a target record was written by the flow: its
// mark names the flow (or, in the older format, ends with the source's
// and the target's cluster IDs). Records without it were written to the
// target by someone else (its own producers, other flows). A mark can be
// forged: a comparison that trusts Wrote must fail safe on a record that
// only claims to be the flow's.
func (pv *Provenance) Wrote(rec *kgo.Record) bool {
	val, ok := headerValue(rec.Headers)
	if !ok {
		return false
	}
	m, ok := provenance.Parse(val)
	if !ok {
		return false
	}
	n := len(m.Path)
	if n < 2 || m.Path[n-1] != pv.TargetID || m.Path[n-2] != pv.SourceID {
		return false
	}
	return m.Legacy || m.Writer == pv.Flow
}

// Proof says whether the flow wrote the record at offset of partition of
// target topic topic, copied from sourceTopic, as far as its acknowledged
// writes tell (see provenance.LiveWriter): Copy where its offset map in
// memory has the offset; NotCopy below the partition's acknowledged
// position otherwise; Unknown past it, or for a partition it does not
// replicate now.
func (r *Replicator) Proof(topic, sourceTopic string, partition int32, offset int64) (provenance.Verdict, int64) {
	p := r.lookup(sourceTopic, partition)
	if p == nil || p.target != topic {
		return provenance.Unknown, -1
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	runs := p.omap.Runs()
	i := sort.Search(len(runs), func(i int) bool { return runs[i].TargetEnd() > offset })
	if i < len(runs) && runs[i].Target <= offset {
		return provenance.Copy, runs[i].Source + (offset - runs[i].Target)
	}
	if from := runs0(runs); offset < p.acked.TargetNext && offset >= from {
		return provenance.NotCopy, -1
	}
	return provenance.Unknown, -1
}

// runs0 is the first target offset runs cover, or 0 without runs.
func runs0(runs []offsets.Run) int64 {
	if len(runs) == 0 {
		return 0
	}
	return runs[0].Target
}
