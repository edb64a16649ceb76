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
	}{
		{next: 5, tgt: 0, want: 0}, // nothing read: west 0 is unread
		{next: 5, tgt: 1, want: 0}, // east 1 is w0's copy, unread
		{next: 5, tgt: 2, want: 3}, // w0's copy read; next copy at east 5
		{next: 5, tgt: 5, want: 3},
		{next: 5, tgt: 6, want: 4}, // inside the second run
		{next: 5, tgt: 7, want: 5}, // every copy read: the position
		{next: 9, tgt: 9, want: 9},
		{next: -1, tgt: 9, want: 5}, // position unknown: after the last copy
	} {
		if got := FirstCopyAtOrAfter(runs, c.next, c.tgt); got != c.want {
			t.Errorf("FirstCopyAtOrAfter(next %d, tgt %d) = %d, want %d", c.next, c.tgt, got, c.want)
		}
	}
	// A hole between runs: its records' copies may be at or after tgt.
	holed := []Run{{Source: 0, Target: 0, Len: 2}, {Source: 10, Target: 4, Len: 2}}
	if got := FirstCopyAtOrAfter(holed, 12, 3); got != 2 {
		t.Errorf("in a hole: %d, want 2 (its start)", got)
	}
	if got := FirstCopyAtOrAfter(holed, 12, 5); got != 11 {
		t.Errorf("past a hole: %d, want 11", got)
	}
	// Before the window: its start.
	late := []Run{{Source: 100, Target: 50, Len: 2, Gap: 10}}
	if got := FirstCopyAtOrAfter(late, 102, 10); got != 90 {
		t.Errorf("before the window: %d, want 90", got)
	}
	if got := FirstCopyAtOrAfter(nil, 7, 3); got != 7 {
		t.Errorf("no run: %d, want the position 7", got)
	}
	if got := FirstCopyAtOrAfter(nil, -1, 3); got != 0 {
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

func TestResultBound(t *testing.T) {
	if got := (Result{Target: 5, Exact: true}).Bound(3); got != (Result{Target: 3}) {
		t.Errorf("lowered: %+v", got)
	}
	if got := (Result{Target: 5, Exact: true}).Bound(5); got != (Result{Target: 5, Exact: true}) {
		t.Errorf("at the limit: %+v", got)
	}
}
