package batch

import "sort"

// Reasons a batch is not forwarded as it is, as metric labels.
const (
	// ReasonCompacted: compaction left holes in the batch's offsets, and a
	// broker takes a batch only with a record at every offset.
	ReasonCompacted = "compacted"
	// ReasonLogAppendTime: the source broker set the batch's timestamps;
	// written as a producer's batch they would read as other times.
	ReasonLogAppendTime = "log_append_time"
	// ReasonCompression: the target is to be written with another codec.
	ReasonCompression = "compression"
	// ReasonOldFormat: the batch is in a message format before v2.
	ReasonOldFormat = "old_format"
)

// Verdict is what becomes of one fetched batch.
type Verdict int

const (
	// Forward: the batch is written to the target as it is, stamped with
	// the copier's producer.
	Forward Verdict = iota
	// Drop: nothing of the batch is written (a transaction marker, or a
	// batch of an aborted transaction read read_committed); its offsets
	// are passed over as records never copied.
	Drop
	// Decode: the batch's records are written one by one, as a batch
	// that cannot be forwarded is.
	Decode
)

// Target says what the target's batches must be.
type Target struct {
	// Codec is the compression the target is written with, unless
	// AnyCodec.
	Codec Codec
	// AnyCodec keeps each batch's own compression.
	AnyCodec bool
}

// Plan returns what becomes of b, written to t, and why a batch that is
// not forwarded is decoded. aborted is nil unless the source is read
// read_committed.
func Plan(b Batch, t Target, aborted *Aborted) (Verdict, string) {
	if aborted.Skip(b) || b.Control() {
		return Drop, ""
	}
	switch {
	case !b.Dense():
		return Decode, ReasonCompacted
	case b.LogAppendTime():
		return Decode, ReasonLogAppendTime
	case !t.AnyCodec && b.Codec() != t.Codec:
		return Decode, ReasonCompression
	}
	return Forward, ""
}

// AbortedTxn is a transaction a fetch response names as aborted: its
// producer's batches from FirstOffset on, up to that producer's next
// transaction marker, are not to be read read_committed.
type AbortedTxn struct {
	ProducerID  int64
	FirstOffset int64
}

// Aborted tells the batches of aborted transactions from the others, in
// one pass over a fetched partition's batches in offset order. A nil
// *Aborted skips nothing (the source is read read_uncommitted).
type Aborted struct {
	pending []AbortedTxn   // by FirstOffset, not yet reached
	open    map[int64]bool // producers inside an aborted transaction
}

// NewAborted returns an Aborted for a fetch response's aborted
// transactions.
func NewAborted(txns []AbortedTxn) *Aborted {
	pending := append([]AbortedTxn(nil), txns...)
	sort.SliceStable(pending, func(i, j int) bool { return pending[i].FirstOffset < pending[j].FirstOffset })
	return &Aborted{pending: pending, open: map[int64]bool{}}
}

// Skip reports whether b belongs to an aborted transaction. Batches must
// be passed in offset order, control batches included: a producer's
// marker ends its aborted transaction.
func (a *Aborted) Skip(b Batch) bool {
	if a == nil {
		return false
	}
	for len(a.pending) > 0 && a.pending[0].FirstOffset <= b.LastOffset() {
		a.open[a.pending[0].ProducerID] = true
		a.pending = a.pending[1:]
	}
	if !b.Transactional() || !a.open[b.ProducerID()] {
		return false
	}
	if b.Control() {
		// The abort marker: the producer's later batches are another
		// transaction's. The marker itself is no record either way.
		delete(a.open, b.ProducerID())
	}
	return true
}
