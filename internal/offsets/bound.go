package offsets

import "sort"

// FirstCopyAtOrAfter returns the source offset of the first record of the
// map's partition whose copy lies at or after target offset tgt: every
// record before it that the flow copied has its copy before tgt. next is
// the flow's position (the next source offset it reads), or -1 if
// unknown; records from there on have no copy yet, so the answer is at
// most next when no copy lies at or after tgt.
//
// Where the map cannot tell, the answer is rounded down: in a hole of the
// map (runs that were not stored) the copies of its records may lie at or
// after tgt, so the hole's start is returned. Records before the map's
// window (older than its oldest run, or read before the flow started) are
// not counted: the window's start is returned.
func FirstCopyAtOrAfter(runs []Run, next, tgt int64) int64 {
	n := len(runs)
	i := sort.Search(n, func(i int) bool { return runs[i].TargetEnd() > tgt })
	if i == n {
		// Every copy in the map lies before tgt.
		if n == 0 {
			return max(next, 0)
		}
		return max(next, runs[n-1].SourceEnd())
	}
	r := runs[i]
	if tgt > r.Target {
		return r.Source + (tgt - r.Target)
	}
	if i > 0 {
		prev := runs[i-1]
		if prev.Covered() < r.From() {
			// A hole: its records may have copies at or after tgt.
			return prev.Covered()
		}
		return r.Source
	}
	return r.From()
}

// PastOwn returns the first target offset at or after t that is not the
// copy of a record in the runs: the flow's own copies are skipped.
func PastOwn(runs []Run, t int64) int64 {
	for {
		j := sort.Search(len(runs), func(j int) bool { return runs[j].TargetEnd() > t })
		if j == len(runs) || runs[j].Target > t {
			return t
		}
		t = runs[j].TargetEnd()
	}
}

// Bound lowers a translation to limit: a target offset the group must
// not pass, because a record there was not read in any form. A result
// above limit becomes limit and is no longer exact.
func (r Result) Bound(limit int64) Result {
	if limit < r.Target {
		return Result{Target: max(limit, 0), Exact: false}
	}
	return r
}
