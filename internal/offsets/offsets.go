// Package offsets keeps, per source partition, the map from source offsets
// to the target offsets the data plane wrote them at, and translates
// committed consumer offsets with it.
//
// The map is a list of runs: records that are consecutive in both the
// source and the target, so target = source + (Run.Target - Run.Source)
// inside a run. A partition copied without gaps is one run whatever its
// size; every gap in the source offsets (compaction, transaction markers,
// aborted records) starts a new run.
//
// A run also says what it covers around it: Gap source offsets before its
// first record, and Tail source offsets after its last one, are known to
// hold no copied record (they were read and held nothing to copy, or were
// never returned by the source). A stretch between two runs that neither
// covers is a hole: runs may be missing there (a map stored by an older
// version, or a restart past positions whose runs were never stored), so
// an offset in it translates down to the end of the run before it, and is
// not exact.
package offsets

import (
	"sort"
)

// Run is a stretch of records replicated consecutively: source offsets
// [Source, Source+Len) became target offsets [Target, Target+Len).
type Run struct {
	Source int64 `json:"s"`
	Target int64 `json:"t"`
	Len    int64 `json:"n"`
	// LastMs is when the run's last record was acknowledged, in Unix
	// milliseconds; retention drops runs by it.
	LastMs int64 `json:"ms"`
	// Gap is how many source offsets before Source hold no copied record:
	// [Source-Gap, Source) was read and nothing in it was copied.
	Gap int64 `json:"g,omitempty"`
	// Tail is how many source offsets after the run's last record hold no
	// copied record: [SourceEnd, SourceEnd+Tail) was read past (transaction
	// markers, aborted records) and nothing in it was copied.
	Tail int64 `json:"tl,omitempty"`

	// unsaved marks a run changed since it was last stored.
	unsaved bool
}

// SourceEnd is the source offset after the run's last record.
func (r Run) SourceEnd() int64 { return r.Source + r.Len }

// TargetEnd is the target offset after the run's last record.
func (r Run) TargetEnd() int64 { return r.Target + r.Len }

// From is the first source offset the run covers: Source - Gap.
func (r Run) From() int64 { return r.Source - r.Gap }

// Covered is the source offset after what the run covers: SourceEnd + Tail.
func (r Run) Covered() int64 { return r.SourceEnd() + r.Tail }

// Unsaved returns r marked as not stored yet: a Map holding it returns it
// from TakeChanged.
func (r Run) Unsaved() Run { r.unsaved = true; return r }

// Saved returns r without the mark Unsaved sets, for comparisons.
func (r Run) Saved() Run { r.unsaved = false; return r }

// Map is one partition's offset map. It is not safe for concurrent use.
type Map struct {
	runs []Run
	// floor is the start of the newest run dropped by retention: a source
	// offset at or after floor.Source translates to at least floor.Target.
	floor Run
	// dirty is the index of the first run changed since the last
	// TakeChanged.
	dirty int
	// gapFrom is the source offset from which the offsets read so far hold
	// no copied record (after the last record added, or where reading
	// started), or -1 when unknown: then a new run covers nothing before
	// it.
	gapFrom int64
	// dropped are runs Cut removed, not yet handed out by TakeDropped:
	// the store must delete them.
	dropped []Run
}

// NewMap returns a map holding runs, which must be sorted and disjoint.
// Runs are taken as stored, except those marked Unsaved.
func NewMap(runs []Run) *Map {
	m := &Map{runs: runs, floor: Run{Source: -1, Target: 0}, dirty: len(runs), gapFrom: -1}
	for i, r := range runs {
		if r.unsaved {
			m.dirty = i
			break
		}
	}
	return m
}

// Start records that reading the source resumes at source offset next:
// offsets from there on are read in order, so a gap before the next record
// added holds no copied record. Offsets between what the map covers and
// next stay a hole, unless they are none.
func (m *Map) Start(next int64) {
	if n := len(m.runs); n > 0 {
		last := m.runs[n-1]
		if next <= last.Covered() {
			// Contiguous with what the map covers.
			m.gapFrom = last.SourceEnd()
			return
		}
	}
	m.gapFrom = next
}

// Add records that source offset src was written at target offset tgt, at
// ms. Offsets must grow; an offset at or below the last one is ignored (a
// record written again after a retry maps to its first copy).
func (m *Map) Add(src, tgt, ms int64) {
	var gap int64
	if n := len(m.runs); n > 0 {
		last := &m.runs[n-1]
		if src < last.SourceEnd() || tgt < last.TargetEnd() {
			return
		}
		if src == last.SourceEnd() && tgt == last.TargetEnd() {
			last.Len++
			last.LastMs = ms
			last.Tail = 0
			last.unsaved = true
			m.dirty = min(m.dirty, n-1)
			m.gapFrom = src + 1
			return
		}
	}
	if m.gapFrom >= 0 && m.gapFrom <= src {
		gap = src - m.gapFrom
	}
	m.runs = append(m.runs, Run{Source: src, Target: tgt, Len: 1, LastMs: ms, Gap: gap, unsaved: true})
	m.dirty = min(m.dirty, len(m.runs)-1)
	m.gapFrom = src + 1
}

// AddRun records that the n source offsets from src were written at the n
// target offsets from tgt, as a record batch written whole is: Add for
// each, at once.
func (m *Map) AddRun(src, tgt, n, ms int64) {
	if n <= 0 {
		return
	}
	m.Add(src, tgt, ms)
	if k := len(m.runs); k > 0 && n > 1 {
		last := &m.runs[k-1]
		if last.SourceEnd() == src+1 && last.TargetEnd() == tgt+1 {
			last.Len += n - 1
			m.gapFrom = src + n
		}
	}
}

// Advance records that the source was read up to source offset next and
// every record before it that was copied is in the map (the position moved
// past transaction markers or aborted records): the newest run then covers
// up to next, unless a hole lies between them.
func (m *Map) Advance(next int64) {
	n := len(m.runs)
	if n == 0 || m.gapFrom < 0 {
		return
	}
	last := &m.runs[n-1]
	if m.gapFrom != last.SourceEnd() || next <= last.Covered() {
		return
	}
	last.Tail = next - last.SourceEnd()
	last.unsaved = true
	m.dirty = min(m.dirty, n-1)
}

// Runs returns the runs, oldest first. The slice must not be modified.
func (m *Map) Runs() []Run { return m.runs }

// Len is the number of runs.
func (m *Map) Len() int { return len(m.runs) }

// TakeChanged returns the runs added or extended since the last call, and
// a mark to pass to Restore if they could not be stored.
func (m *Map) TakeChanged() (changed []Run, mark int) {
	mark = m.dirty
	if m.dirty >= len(m.runs) {
		return nil, mark
	}
	for i := m.dirty; i < len(m.runs); i++ {
		m.runs[i].unsaved = false
		changed = append(changed, m.runs[i])
	}
	m.dirty = len(m.runs)
	return changed, mark
}

// Restore marks the runs returned by the TakeChanged that gave mark as
// changed again.
func (m *Map) Restore(mark int) {
	m.dirty = min(m.dirty, mark)
	for i := m.dirty; i < len(m.runs); i++ {
		m.runs[i].unsaved = true
	}
}

// Result is a translated offset.
type Result struct {
	Target int64
	// Exact is false when Target was rounded down, so a consumer re-reads
	// records rather than skip any: the source offset lies before the
	// map's window, past what was replicated, or in a hole of the map.
	Exact bool
}

// Translate returns the target offset of the first replicated record at or
// after source offset src. next is the target offset the next replicated
// record will get (the partition's position); it is the answer when the
// map holds no run.
func (m *Map) Translate(src, next int64) Result {
	n := len(m.runs)
	if n == 0 {
		return Result{Target: next, Exact: false}
	}
	i := sort.Search(n, func(i int) bool { return m.runs[i].SourceEnd() > src })
	if i == n {
		// Past everything replicated: exact while the newest run covers
		// src (the next copied record lands right after it); else
		// ahead of replication, or in a hole: round down.
		last := m.runs[n-1]
		return Result{Target: last.TargetEnd(), Exact: src <= last.Covered()}
	}
	r := m.runs[i]
	if src >= r.Source {
		return Result{Target: r.Target + (src - r.Source), Exact: true}
	}
	// src lies in the stretch before run i.
	if src >= r.From() {
		return Result{Target: r.Target, Exact: true}
	}
	if i > 0 {
		prev := m.runs[i-1]
		if prev.Covered() >= r.From() {
			// The whole stretch is known to hold no copied record.
			return Result{Target: r.Target, Exact: true}
		}
		// A hole: runs may be missing; re-read from the previous run's
		// end.
		return Result{Target: prev.TargetEnd(), Exact: false}
	}
	// Before the map's window (trimmed, or never copied): round down.
	if m.floor.Source >= 0 && src >= m.floor.Source {
		return Result{Target: m.floor.Target, Exact: false}
	}
	return Result{Target: 0, Exact: false}
}

// Trim drops runs that ended before source offset minSource, or whose last
// record was acknowledged before minMs, keeping at least the newest run,
// and at most maxRuns runs. It returns the dropped runs.
func (m *Map) Trim(minSource, minMs int64, maxRuns int) []Run {
	k := 0
	for k < len(m.runs)-1 {
		r := m.runs[k]
		if r.SourceEnd() <= minSource || r.LastMs < minMs || len(m.runs)-k > maxRuns {
			k++
			continue
		}
		break
	}
	if k == 0 {
		return nil
	}
	dropped := append([]Run(nil), m.runs[:k]...)
	m.floor = dropped[k-1]
	m.runs = append(m.runs[:0:0], m.runs[k:]...)
	m.dirty = max(m.dirty-k, 0)
	return dropped
}

// Cut forgets what the map holds at or after source offset src or target
// offset tgt (-1: no bound): the source partition was truncated below what
// was copied, or the target partition lost copies. Runs wholly past the
// bound are removed and kept for TakeDropped, so the store deletes them;
// the run crossing it is shortened, loses its tail and counts as changed.
// After a source cut, reading resumes at src, so the next run covers the
// stretch from there; after a target cut, the source offsets whose copies
// were lost are a hole, translated down.
func (m *Map) Cut(src, tgt int64) {
	keep := m.runs[:0:0]
	for _, r := range m.runs {
		n := r.Len
		if src >= 0 {
			n = min(n, src-r.Source)
		}
		if tgt >= 0 {
			n = min(n, tgt-r.Target)
		}
		if n <= 0 {
			m.dropped = append(m.dropped, r)
			continue
		}
		tail := r.Tail
		if n < r.Len || tgt >= 0 {
			tail = 0
		} else if src >= 0 {
			tail = min(tail, src-r.SourceEnd())
		}
		if n != r.Len || tail != r.Tail {
			r.Len, r.Tail, r.unsaved = n, tail, true
			m.dirty = min(m.dirty, len(keep))
		}
		keep = append(keep, r)
	}
	m.runs = keep
	m.dirty = min(m.dirty, len(m.runs))
	m.gapFrom = -1
	if n := len(m.runs); n > 0 && src >= 0 && tgt < 0 {
		// Everything below src was read before the cut and is unchanged:
		// after the newest run left, nothing below src was copied.
		m.gapFrom = m.runs[n-1].SourceEnd()
	}
}

// TakeDropped returns the runs Cut removed, and those RestoreDropped gave
// back, since the last call: the store must delete them.
func (m *Map) TakeDropped() []Run {
	d := m.dropped
	m.dropped = nil
	return d
}

// RestoreDropped keeps runs removed from the map (by Cut or Trim) that the
// store could not delete yet, for the next TakeDropped.
func (m *Map) RestoreDropped(d []Run) { m.dropped = append(d, m.dropped...) }

// Inverse returns the map from target offsets back to source offsets:
// translating a target offset with it gives the source offset of the first
// copied record at or after it. The flow writes a target partition
// without gaps of its own, so a gap between two runs in target offsets is
// taken as covered (records written again after a retry).
func (m *Map) Inverse() *Map {
	runs := make([]Run, len(m.runs))
	for i, r := range m.runs {
		runs[i] = Run{Source: r.Target, Target: r.Source, Len: r.Len, LastMs: r.LastMs}
		if i > 0 {
			runs[i].Gap = max(r.Target-m.runs[i-1].TargetEnd(), 0)
		}
	}
	return NewMap(runs)
}
