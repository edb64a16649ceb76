package offsets

import "sort"

// FirstCopyAtOrAfter returns the source offset of the first record of the
// map's partition whose copy lies at or after target offset tgt: every
// record before it that the flow copied has its copy before tgt. next is
// the flow's position (the next source offset it reads), or -1 if
// unknown; records from there on have no copy yet, so the answer is at
// most next when no copy lies at or after tgt.
//
// Where the map cannot tell, the answer is rounded down and exact is
// false: in a hole of the map (runs that were not stored) the copies of
// its records may lie at or after tgt, so the hole's start is returned;
// with the position unknown, the end of the newest run. Records before the
// map's window (older than its oldest run, or read before the flow
// started) are not counted: the window's start is returned.
func FirstCopyAtOrAfter(runs []Run, next, tgt int64) (src int64, exact bool) {
	n := len(runs)
	i := sort.Search(n, func(i int) bool { return runs[i].TargetEnd() > tgt })
	if i == n {
		// Every copy in the map lies before tgt.
		if n == 0 {
			return max(next, 0), next >= 0
		}
		return max(next, runs[n-1].SourceEnd()), next >= 0
	}
	r := runs[i]
	if tgt > r.Target {
		return r.Source + (tgt - r.Target), true
	}
	if i > 0 {
		prev := runs[i-1]
		if prev.Covered() < r.From() {
			// A hole: its records may have copies at or after tgt.
			return prev.Covered(), false
		}
		return r.Source, true
	}
	return r.From(), true
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

// Limit is a target offset a translation must not pass, because the
// record there was not read in any form.
type Limit struct {
	At int64
	// Tight says that every record from At on that is not one of the
	// flow's own copies is unread: lowering a translation to At then
	// re-reads only the own copies in between.
	Tight bool
}

// Below lowers a translation to limit l. A result at or below l is kept.
// A lowered result stays exact only when l is tight, the result was exact
// and none of the flow's own copies (own) lies between the two: the group
// then re-reads nothing.
func (r Result) Below(l Limit, own []Run) Result {
	if l.At >= r.Target {
		return r
	}
	at := max(l.At, 0)
	return Result{Target: at, Exact: r.Exact && l.Tight && !ownIn(own, at, r.Target)}
}

// ownIn reports whether a copy of the runs lies in target offsets
// [from, to).
func ownIn(runs []Run, from, to int64) bool {
	j := sort.Search(len(runs), func(j int) bool { return runs[j].TargetEnd() > from })
	return j < len(runs) && runs[j].Target < to
}
