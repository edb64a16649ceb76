package offsets

import "testing"

func TestFirstCopyAtOrAfter(t *testing.T) {
	// The reverse flow west→east: west offsets 0 and 3..4 were copied to
	// east 1 and 5..6; west 1..2 are our own copies it dropped (Tail).
	runs := []Run{
		{Source: 0, Target: 1, Len: 1, Tail: 2},
		{Source: 3, Target: 5, Len: 2},
	}
	for _, c := range []struct {
		next, tgt, want int64
		exact           bool
	}{
		{next: 5, tgt: 0, want: 0, exact: true}, // nothing read: west 0 is unread
		{next: 5, tgt: 1, want: 0, exact: true}, // east 1 is w0's copy, unread
		{next: 5, tgt: 2, want: 3, exact: true}, // w0's copy read; next copy at east 5
		{next: 5, tgt: 5, want: 3, exact: true},
		{next: 5, tgt: 6, want: 4, exact: true}, // inside the second run
		{next: 5, tgt: 7, want: 5, exact: true}, // every copy read: the position
		{next: 9, tgt: 9, want: 9, exact: true},
		{next: -1, tgt: 9, want: 5, exact: false}, // position unknown: after the last copy
	} {
		if got, exact := FirstCopyAtOrAfter(runs, c.next, c.tgt); got != c.want || exact != c.exact {
			t.Errorf("FirstCopyAtOrAfter(next %d, tgt %d) = %d, %t; want %d, %t", c.next, c.tgt, got, exact, c.want, c.exact)
		}
	}
	// A hole between runs: its records' copies may be at or after tgt.
	holed := []Run{{Source: 0, Target: 0, Len: 2}, {Source: 10, Target: 4, Len: 2}}
	if got, exact := FirstCopyAtOrAfter(holed, 12, 3); got != 2 || exact {
		t.Errorf("in a hole: %d, %t; want 2 (its start), not exact", got, exact)
	}
	if got, exact := FirstCopyAtOrAfter(holed, 12, 5); got != 11 || !exact {
		t.Errorf("past a hole: %d, %t; want 11, exact", got, exact)
	}
	// Before the window: its start.
	late := []Run{{Source: 100, Target: 50, Len: 2, Gap: 10}}
	if got, _ := FirstCopyAtOrAfter(late, 102, 10); got != 90 {
		t.Errorf("before the window: %d, want 90", got)
	}
	if got, _ := FirstCopyAtOrAfter(nil, 7, 3); got != 7 {
		t.Errorf("no run: %d, want the position 7", got)
	}
	if got, _ := FirstCopyAtOrAfter(nil, -1, 3); got != 0 {
		t.Errorf("nothing known: %d, want 0", got)
	}
}

func TestPastOwn(t *testing.T) {
	own := []Run{{Source: 0, Target: 1, Len: 2}, {Source: 2, Target: 3, Len: 1}, {Source: 5, Target: 6, Len: 1}}
	for _, c := range []struct{ t, want int64 }{{0, 0}, {1, 4}, {2, 4}, {4, 4}, {5, 5}, {6, 7}, {9, 9}} {
		if got := PastOwn(own, c.t); got != c.want {
			t.Errorf("PastOwn(%d) = %d, want %d", c.t, got, c.want)
		}
	}
}

func TestResultBelow(t *testing.T) {
	own := []Run{{Source: 0, Target: 1, Len: 1}, {Source: 1, Target: 5, Len: 1}}
	exact := Result{Target: 5, Exact: true}
	for _, c := range []struct {
		l    Limit
		want Result
	}{
		{Limit{At: 5, Tight: true}, exact},                          // at the limit: kept
		{Limit{At: 7}, exact},                                       // above: kept
		{Limit{At: 2, Tight: true}, Result{Target: 2, Exact: true}}, // only unread records between
		{Limit{At: 2}, Result{Target: 2}},                           // not tight
		{Limit{At: 0, Tight: true}, Result{Target: 0}},              // an own copy (1) between: re-read
	} {
		if got := exact.Below(c.l, own); got != c.want {
			t.Errorf("Below(%+v) = %+v, want %+v", c.l, got, c.want)
		}
	}
	if got := (Result{Target: 5}).Below(Limit{At: 2, Tight: true}, own); got.Exact {
		t.Errorf("an inexact result became exact: %+v", got)
	}
}
