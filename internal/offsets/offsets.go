// Package offsets keeps, per source partition, the map from source offsets
// to the target offsets the data plane wrote them at, and translates
// committed consumer offsets with it.
//
// The map is a list of runs: records that are consecutive in both the
// source and the target, so target = source + (Run.Target - Run.Source)
// inside a run. A partition copied without gaps is one run whatever its
// size; every gap in the source offsets (compaction, transaction markers,
// aborted records) starts a new run.
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
}

// SourceEnd is the source offset after the run's last record.
func (r Run) SourceEnd() int64 { return r.Source + r.Len }

// TargetEnd is the target offset after the run's last record.
func (r Run) TargetEnd() int64 { return r.Target + r.Len }

// Map is one partition's offset map. It is not safe for concurrent use.
type Map struct {
	runs []Run
	// floor is the start of the newest run dropped by retention: a source
	// offset at or after floor.Source translates to at least floor.Target.
	floor Run
	// dirty is the index of the first run changed since the last
	// TakeChanged.
	dirty int
}

// NewMap returns a map holding runs, which must be sorted and disjoint.
func NewMap(runs []Run) *Map {
	return &Map{runs: runs, floor: Run{Source: -1, Target: 0}, dirty: len(runs)}
}

// Add records that source offset src was written at target offset tgt, at
// ms. Offsets must grow; an offset at or below the last one is ignored (a
// record written again after a retry maps to its first copy).
func (m *Map) Add(src, tgt, ms int64) {
	if n := len(m.runs); n > 0 {
		last := &m.runs[n-1]
		if src < last.SourceEnd() || tgt < last.TargetEnd() {
			return
		}
		if src == last.SourceEnd() && tgt == last.TargetEnd() {
			last.Len++
			last.LastMs = ms
			m.dirty = min(m.dirty, n-1)
			return
		}
	}
	m.runs = append(m.runs, Run{Source: src, Target: tgt, Len: 1, LastMs: ms})
	m.dirty = min(m.dirty, len(m.runs)-1)
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
	changed = append([]Run(nil), m.runs[m.dirty:]...)
	m.dirty = len(m.runs)
	return changed, mark
}

// Restore marks the runs returned by the TakeChanged that gave mark as
// changed again.
func (m *Map) Restore(mark int) { m.dirty = min(m.dirty, mark) }

// Result is a translated offset.
type Result struct {
	Target int64
	// Exact is false when the source offset lies outside the map (before
	// its retained window, or past what was replicated) and Target was
	// rounded down, so a consumer re-reads records rather than skip any.
	Exact bool
}

// Translate returns the target offset of the first replicated record at or
// after source offset src. next is the target offset the next replicated
// record will get (the partition's position), used when src lies past the
// map.
func (m *Map) Translate(src, next int64) Result {
	i := sort.Search(len(m.runs), func(i int) bool { return m.runs[i].SourceEnd() > src })
	if i == len(m.runs) {
		// Past everything replicated: the first record at or after src
		// is not written yet; it will land at next or later.
		exact := len(m.runs) > 0 && src == m.runs[len(m.runs)-1].SourceEnd()
		return Result{Target: next, Exact: exact}
	}
	r := m.runs[i]
	if src >= r.Source {
		return Result{Target: r.Target + (src - r.Source), Exact: true}
	}
	// src falls in a gap before run i: if run i-1 exists, the gap holds
	// no replicated record, so the answer is run i's first record.
	if i > 0 {
		return Result{Target: r.Target, Exact: true}
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

// Inverse returns the map from target offsets back to source offsets:
// translating a target offset with it gives the source offset of the first
// copied record at or after it.
func (m *Map) Inverse() *Map {
	runs := make([]Run, len(m.runs))
	for i, r := range m.runs {
		runs[i] = Run{Source: r.Target, Target: r.Source, Len: r.Len, LastMs: r.LastMs}
	}
	return NewMap(runs)
}
