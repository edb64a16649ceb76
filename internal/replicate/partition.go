package replicate

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/progress"
)

// partition is the state of one replicated source partition.
type partition struct {
	id     progress.Partition
	target string

	// fedNext is the offset after the last record handed to the producer.
	// paused, probeOne and probing are the poll loop's too: probeOne says
	// the next record fed is a probe, sent alone; probing that it was, and
	// nothing more is fed until its answer.
	fedNext  int64
	paused   bool
	probeOne bool
	probing  bool
	// dropNext is the offset after the last record counted as dropped
	// for its provenance, so a record fetched again after a rewind is
	// counted once; foreignNext the same for records counted as foreign.
	dropNext, foreignNext int64
	// held, if not empty, starts with the record whose provenance mark is
	// not decided yet, followed by the records fetched after it: the
	// partition is paused at it since heldSince, and they are fed once it
	// is decided. Marks of records before unprovenTo are not waited for
	// any more.
	held       []*kgo.Record
	heldSince  time.Time
	unprovenTo int64

	inflight atomic.Int64
	hwm      atomic.Int64 // source end offset last seen, -1 if unknown
	// halted is set when a write failed, before that write counts as
	// settled: no record is handed to the producer, and no record already
	// handed to it is sent, after a write failed (see orderGate).
	halted atomic.Bool
	// produced counts records handed to the producer; settled those the
	// producer answered. orderGate compares them.
	produced, settled atomic.Int64

	// start is where reading starts once the start position is stored
	// (Assignment.StoreFirst); nil when reading started.
	start *kgo.Offset

	mu    sync.Mutex
	acked progress.Position // advanced only over acknowledged records
	// fences are the producers of earlier owners still to fence on the
	// target partition, each by one copy (fence.go); fencing counts the
	// fence writes in flight, the first ones of fences.
	fences  []fenceStep
	fencing int
	// unfenced says fences is not empty, read without mu by the
	// per-record write path.
	unfenced atomic.Bool
	// noForward says the partition's batches are no longer passed
	// through (the target refused the batch writer's sequence);
	// forwarding counts its batches handed to the batch writer and not
	// answered yet.
	noForward  atomic.Bool
	forwarding atomic.Int64
	// committed is, for an exactly-once replicator, the position stored
	// by the last committed transaction (the start position before).
	committed progress.Position
	omap      *offsets.Map // source→target offsets of acknowledged records
	persisted int64        // acked.SourceNext last written to progress
	// persistedIdle is acked.IdleEnd last written to progress.
	persistedIdle int64
	// storedStopped says the position last stored is Stopped (or, before
	// the first store, the start position was).
	storedStopped bool
	// doubt says a write failed in a way that may have left it on the
	// target (not refused by the target, not failed unsent): records past
	// acked may be there until a later write is acknowledged, so the
	// position is not exact and is not stored as Stopped.
	doubt    bool
	failed   bool
	failedAt int64 // first source offset whose write failed
	// pendingControl is the offset of the newest transaction marker seen
	// while writes were in flight, or -1; the position moves past it once
	// they are acknowledged.
	pendingControl int64
	// ackedEpoch is the source leader epoch of the record just before
	// acked.SourceNext, or -1 when unknown; pendingEpoch that of
	// pendingControl. Stored with the position, it lets a restart detect
	// a source truncated while the flow was stopped.
	ackedEpoch, pendingEpoch int32
	failures                 int // consecutive failed attempts, for the backoff
	retryAt                  time.Time
	// probe says the next retry sends the failed record alone: it was
	// refused as too large or invalid, maybe only with the records
	// batched with it. probeAt is the offset of the probe in flight, or -1.
	probe    bool
	probeAt  int64
	probeEnd int64 // the last offset refused as too large or invalid in this streak
	// refused is the record the target refused alone, if any: the
	// partition is stopped at it, or it is on its way to the dead-letter
	// topic.
	refused *refusal
	// truncated says the rewind at failedAt follows a source truncation:
	// the position and the offset map are cut back to failedAt.
	truncated bool
	// targetLossAt is when the producer last reported, and targetBackAt
	// when acked last saw, that the target partition lost records, each
	// counted then; zero once the other report of the same loss came.
	targetLossAt, targetBackAt time.Time

	records, bytes, retried, duplicates prometheus.Counter
	lost, deadLettered                  prometheus.Counter
	loopDrops, routedDrops              prometheus.Counter
	foreign, unproven                   prometheus.Counter
	lag                                 prometheus.Gauge

	// pend are the records handed to the producer, for Pending.
	pendMu sync.Mutex
	pend   pendingList
}

// refusal is a record the target refused on its own.
type refusal struct {
	rec    *kgo.Record // as produced to the target
	offset int64       // source offset
	reason string
	since  time.Time
	// stopped says the partition counts as stopped (no dead-letter topic,
	// or writing there failed).
	stopped bool
	// writing says the dead-letter write is in flight.
	writing bool
	// unread says the partition stopped at a source record batch that
	// decompresses past the flow's limit (batchTooLarge): rec is nil,
	// and there is nothing to write to a dead-letter topic.
	unread bool
}
