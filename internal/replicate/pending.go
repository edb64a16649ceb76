package replicate

import (
	"sort"
	"time"

	"github.com/kmirror/kmirror/internal/progress"
)

// pendingTrimEvery is how many records a partition hands to the producer
// between two trims of its pending list.
const pendingTrimEvery = 256

// pendingRec is a record handed to the producer and maybe not yet
// acknowledged.
type pendingRec struct {
	offset int64
	tsMs   int64
	size   int64
}

// pendingList holds, in offset order, the records of one partition handed
// to the producer, for the recovery point (see Pending). Entries below the
// acknowledged position are stale and dropped by trim; push, from the
// poll loop only, trims every pendingTrimEvery records, so the list stays
// about as long as the records in flight.
type pendingList struct {
	q      []pendingRec
	head   int
	pushes int
}

// push records a record handed to the producer. A record at or below
// the newest entry is a rewind (a failed write retried): the entries from
// it are dropped first.
func (l *pendingList) push(offset int64, ts time.Time, size int64) {
	if n := len(l.q); n > l.head && l.q[n-1].offset >= offset {
		i := l.head + sort.Search(n-l.head, func(i int) bool { return l.q[l.head+i].offset >= offset })
		l.q = l.q[:i]
	}
	l.q = append(l.q, pendingRec{offset: offset, tsMs: ts.UnixMilli(), size: size})
}

// trim drops the entries below next, the acknowledged position.
func (l *pendingList) trim(next int64) {
	for l.head < len(l.q) && l.q[l.head].offset < next {
		l.head++
	}
	if l.head == len(l.q) {
		l.q, l.head = l.q[:0], 0
	} else if l.head > len(l.q)/2 {
		l.q = append(l.q[:0], l.q[l.head:]...)
		l.head = 0
	}
}

// PartitionPending is what a replicated source partition has not yet on
// the target: what would be lost if the source died now.
type PartitionPending struct {
	Partition progress.Partition
	// Records is the source end offset last seen minus the acknowledged
	// position (transaction markers included), or, while the end offset
	// is unknown, the records fetched and not acknowledged.
	Records int64
	// Fetched are the records among them handed to the producer and not
	// acknowledged yet, FetchedBytes their key, value and header bytes.
	Fetched, FetchedBytes int64
	// Oldest is the timestamp of the oldest of the fetched ones; zero if
	// none is.
	Oldest time.Time
}

// notePending records a record handed to the producer for Pending, and
// trims the partition's list now and then. Poll loop only.
func (r *Replicator) notePending(p *partition, offset int64, ts time.Time, size int64) {
	p.pendMu.Lock()
	p.pend.push(offset, ts, size)
	p.pend.pushes++
	trim := p.pend.pushes%pendingTrimEvery == 0
	p.pendMu.Unlock()
	if trim {
		p.mu.Lock()
		next := p.acked.SourceNext
		p.mu.Unlock()
		p.pendMu.Lock()
		p.pend.trim(next)
		p.pendMu.Unlock()
	}
}

// Pending returns, for every replicated partition, the records not yet
// acknowledged by the target, and the timestamp of the oldest of those
// fetched.
func (r *Replicator) Pending() []PartitionPending {
	var out []PartitionPending
	r.each(func(p *partition) {
		p.mu.Lock()
		next := p.acked.SourceNext
		p.mu.Unlock()
		pp := PartitionPending{Partition: p.id}
		p.pendMu.Lock()
		p.pend.trim(next)
		for _, e := range p.pend.q[p.pend.head:] {
			if pp.Fetched == 0 {
				pp.Oldest = time.UnixMilli(e.tsMs)
			}
			pp.Fetched++
			pp.FetchedBytes += e.size
		}
		p.pendMu.Unlock()
		pp.Records = pp.Fetched
		if hwm := p.hwm.Load(); hwm >= 0 {
			pp.Records = max(hwm-next, pp.Fetched)
		}
		out = append(out, pp)
	})
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Partition, out[j].Partition
		return a.Topic < b.Topic || a.Topic == b.Topic && a.Partition < b.Partition
	})
	return out
}
