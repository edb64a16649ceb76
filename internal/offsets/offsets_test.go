package offsets

import (
	"reflect"
	"slices"
	"testing"
)

// build adds (source, target) pairs in order.
func build(pairs ...[2]int64) *Map {
	m := NewMap(nil)
	for i, p := range pairs {
		m.Add(p[0], p[1], int64(i))
	}
	return m
}

// saved returns runs without their unsaved marks, for comparisons.
func saved(runs []Run) []Run {
	out := make([]Run, len(runs))
	for i, r := range runs {
		out[i] = r.Saved()
	}
	return out
}

func TestRuns(t *testing.T) {
	tests := []struct {
		name  string
		pairs [][2]int64
		want  []Run
	}{
		{"contiguous is one run", [][2]int64{{0, 10}, {1, 11}, {2, 12}}, []Run{{Source: 0, Target: 10, Len: 3, LastMs: 2}}},
		{"source gap starts a run covering the gap", [][2]int64{{0, 0}, {1, 1}, {5, 2}, {6, 3}},
			[]Run{{Source: 0, Target: 0, Len: 2, LastMs: 1}, {Source: 5, Target: 2, Len: 2, LastMs: 3, Gap: 3}}},
		{"target gap starts a run", [][2]int64{{0, 0}, {1, 2}}, []Run{{Source: 0, Target: 0, Len: 1, LastMs: 0}, {Source: 1, Target: 2, Len: 1, LastMs: 1}}},
		{"offsets at or below the last are ignored", [][2]int64{{0, 0}, {1, 1}, {1, 7}, {0, 8}, {2, 2}}, []Run{{Source: 0, Target: 0, Len: 3, LastMs: 4}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := saved(build(tc.pairs...).Runs()); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("runs = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestTranslate(t *testing.T) {
	// Source offsets 0-4 and 10-12 (a compacted or aborted gap at 5-9),
	// written at target offsets 100-104 and 106-108 (a marker at 105).
	m := build([2]int64{0, 100}, [2]int64{1, 101}, [2]int64{2, 102}, [2]int64{3, 103}, [2]int64{4, 104},
		[2]int64{10, 106}, [2]int64{11, 107}, [2]int64{12, 108})
	const next = 109
	tests := []struct {
		src  int64
		want Result
	}{
		{0, Result{100, true}},
		{3, Result{103, true}},
		{4, Result{104, true}},
		{5, Result{106, true}}, // in the gap: the first replicated record after it
		{9, Result{106, true}},
		{10, Result{106, true}},
		{12, Result{108, true}},
		{13, Result{109, true}},  // consumed everything replicated
		{20, Result{109, false}}, // ahead of replication: re-read rather than skip
	}
	for _, tc := range tests {
		if got := m.Translate(tc.src, next); got != tc.want {
			t.Errorf("Translate(%d) = %+v, want %+v", tc.src, got, tc.want)
		}
	}
}

func TestTranslateMapStartingLate(t *testing.T) {
	// Replication started at source offset 50 (start_from latest or
	// retention): offsets before it were never copied.
	m := build([2]int64{50, 0}, [2]int64{51, 1})
	if got := m.Translate(10, 2); got != (Result{0, false}) {
		t.Errorf("Translate before the map = %+v, want rounded down to 0", got)
	}
	if got := m.Translate(51, 2); got != (Result{1, true}) {
		t.Errorf("Translate(51) = %+v", got)
	}
}

func TestTrimRoundsDown(t *testing.T) {
	m := NewMap(nil)
	m.Add(0, 0, 1)
	m.Add(1, 1, 1)
	m.Add(5, 2, 2) // run 2
	m.Add(9, 3, 3) // run 3
	m.Add(12, 4, 4)
	dropped := m.Trim(0, 3, 100) // drop runs last acknowledged before ms 3
	if len(dropped) != 2 || m.Len() != 2 {
		t.Fatalf("dropped %+v, kept %+v", dropped, m.Runs())
	}
	// Inside the kept window: exact.
	if got := m.Translate(9, 5); got != (Result{3, true}) {
		t.Errorf("Translate(9) = %+v", got)
	}
	// In the dropped window: never above the exact answer (2 for source 5).
	if got := m.Translate(5, 5); got.Exact || got.Target > 2 {
		t.Errorf("Translate(5) after trim = %+v, want rounded down, at most 2", got)
	}
	if got := m.Translate(0, 5); got.Exact || got.Target != 0 {
		t.Errorf("Translate(0) after trim = %+v, want 0", got)
	}
	// The newest run is always kept.
	if dropped := m.Trim(100, 100, 1); m.Len() != 1 || len(dropped) != 1 {
		t.Errorf("kept %+v", m.Runs())
	}
	// maxRuns bounds the map.
	m2 := NewMap(nil)
	for i := int64(0); i < 10; i++ {
		m2.Add(i*2, i, i)
	}
	m2.Trim(0, 0, 4)
	if m2.Len() != 4 || m2.Runs()[0].Source != 12 {
		t.Errorf("maxRuns trim kept %+v", m2.Runs())
	}
}

func TestTakeChanged(t *testing.T) {
	m := NewMap(nil)
	m.Add(0, 0, 0)
	m.Add(1, 1, 0)
	if got, _ := m.TakeChanged(); len(got) != 1 || got[0].Len != 2 {
		t.Fatalf("changed = %+v", got)
	}
	if got, _ := m.TakeChanged(); got != nil {
		t.Fatalf("nothing changed, got %+v", got)
	}
	m.Add(2, 2, 0) // extends the run
	m.Add(5, 3, 0) // new run
	got, mark := m.TakeChanged()
	if len(got) != 2 || got[0].Len != 3 || got[1].Source != 5 {
		t.Fatalf("changed = %+v", got)
	}
	// Storing them failed: they are changed again, with what came since.
	m.Add(6, 4, 0)
	m.Restore(mark)
	if got, _ := m.TakeChanged(); len(got) != 2 || got[0].Source != 0 || got[1].Len != 2 {
		t.Fatalf("changed after Restore = %+v", got)
	}
}

func TestInverse(t *testing.T) {
	// Source 0-2 → target 10-12, source 7-8 → target 13-14.
	m := build([2]int64{0, 10}, [2]int64{1, 11}, [2]int64{2, 12}, [2]int64{7, 13}, [2]int64{8, 14})
	inv := m.Inverse()
	tests := []struct{ tgt, want int64 }{{10, 0}, {12, 2}, {13, 7}, {14, 8}, {15, 9}}
	for _, tc := range tests {
		if got := inv.Translate(tc.tgt, 9); got.Target != tc.want {
			t.Errorf("inverse Translate(%d) = %+v, want %d", tc.tgt, got, tc.want)
		}
	}
}

func TestTranslateCoverage(t *testing.T) {
	// Stored runs, as a restart loads them:
	//   A: source 0-9 → target 0-9, covering up to 12 (markers 10-11,
	//      an aborted record at 11, say);
	//   B: source 20-29 → target 10-19, covering back to 15 only: 12-14
	//      is a hole (runs not stored);
	//   C: source 40-49 → target 25-34 after a gap it covers (30-39):
	//      target 20-24 holds records of the hole, so B and C are not
	//      contiguous on the target;
	//   and C covers 3 offsets after it (trailing markers).
	runs := []Run{
		{Source: 0, Target: 0, Len: 10, Tail: 2},
		{Source: 20, Target: 10, Len: 10, Gap: 5},
		{Source: 40, Target: 25, Len: 10, Gap: 10, Tail: 3},
	}
	m := NewMap(runs)
	tests := []struct {
		name string
		src  int64
		want Result
	}{
		{"inside a run", 5, Result{5, true}},
		{"end of a run, then a hole", 10, Result{10, false}},
		{"in the tail", 11, Result{10, false}}, // the stretch 10-19 has a hole at 12-14
		{"in the hole", 13, Result{10, false}},
		{"in B's gap", 15, Result{10, true}},
		{"in B's gap, last offset", 19, Result{10, true}},
		{"B's first record", 20, Result{10, true}},
		{"in C's gap", 30, Result{25, true}},
		{"C's last record", 49, Result{34, true}},
		{"past C, in its tail", 51, Result{35, true}},
		{"end of C's coverage", 53, Result{35, true}},
		{"past the coverage: not replicated yet, or a hole", 54, Result{35, false}},
	}
	for _, tc := range tests {
		if got := m.Translate(tc.src, 1000); got != tc.want {
			t.Errorf("%s: Translate(%d) = %+v, want %+v", tc.name, tc.src, got, tc.want)
		}
	}
	// A's tail and B's gap meeting make the stretch between them covered.
	full := NewMap([]Run{{Source: 0, Target: 0, Len: 10, Tail: 4}, {Source: 20, Target: 10, Len: 1, Gap: 6}})
	for _, src := range []int64{10, 13, 14, 17} {
		if got := full.Translate(src, 11); got != (Result{10, true}) {
			t.Errorf("covered stretch: Translate(%d) = %+v, want 10 exact", src, got)
		}
	}
}

func TestStartAdvanceAndAdd(t *testing.T) {
	tests := []struct {
		name   string
		stored []Run
		start  int64
		steps  [][3]int64 // {kind: 0 add / 1 advance, src, tgt}
		want   []Run
	}{
		{
			name:   "restart where the map ends: the next run covers the gap",
			stored: []Run{{Source: 0, Target: 0, Len: 10, Tail: 1}},
			start:  11,
			steps:  [][3]int64{{0, 15, 10}},
			want:   []Run{{Source: 0, Target: 0, Len: 10, Tail: 1}, {Source: 15, Target: 10, Len: 1, Gap: 5}},
		},
		{
			name:   "restart past a hole: the next run covers only from the restart",
			stored: []Run{{Source: 0, Target: 0, Len: 10}},
			start:  30,
			steps:  [][3]int64{{1, 31, 0}, {0, 32, 50}},
			want:   []Run{{Source: 0, Target: 0, Len: 10}, {Source: 32, Target: 50, Len: 1, Gap: 2}},
		},
		{
			name:   "the position moving past markers extends the tail",
			stored: []Run{{Source: 0, Target: 0, Len: 10}},
			start:  10,
			steps:  [][3]int64{{1, 11, 0}, {0, 11, 10}, {1, 13, 0}},
			want:   []Run{{Source: 0, Target: 0, Len: 10, Tail: 1}, {Source: 11, Target: 10, Len: 1, Gap: 1, Tail: 1}},
		},
		{
			name:   "a tail is never shortened",
			stored: []Run{{Source: 0, Target: 0, Len: 10, Tail: 5}},
			start:  15,
			steps:  [][3]int64{{1, 12, 0}},
			want:   []Run{{Source: 0, Target: 0, Len: 10, Tail: 5}},
		},
		{
			name:   "past a hole the tail does not grow",
			stored: []Run{{Source: 0, Target: 0, Len: 10}},
			start:  20,
			steps:  [][3]int64{{1, 25, 0}},
			want:   []Run{{Source: 0, Target: 0, Len: 10}},
		},
		{
			name:  "a fresh map covers from where reading started",
			start: 100,
			steps: [][3]int64{{1, 102, 0}, {0, 103, 0}},
			want:  []Run{{Source: 103, Target: 0, Len: 1, Gap: 3}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMap(append([]Run(nil), tc.stored...))
			m.Start(tc.start)
			for _, s := range tc.steps {
				if s[0] == 0 {
					m.Add(s[1], s[2], 0)
				} else {
					m.Advance(s[1])
				}
			}
			if got := saved(m.Runs()); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("runs = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestUnsavedRunsAreChanged(t *testing.T) {
	// A map rebuilt from runs some of which were never stored (added
	// while resuming, or read from a record of an older format) returns
	// them from TakeChanged.
	m := NewMap([]Run{{Source: 0, Len: 1}, Run{Source: 5, Target: 1, Len: 1}.Unsaved(), {Source: 9, Target: 2, Len: 1}})
	got, _ := m.TakeChanged()
	if len(got) != 2 || got[0].Source != 5 || got[1].Source != 9 {
		t.Fatalf("changed = %+v", got)
	}
	if got, _ := m.TakeChanged(); got != nil {
		t.Fatalf("changed again = %+v", got)
	}
	if got := NewMap([]Run{{Source: 0, Len: 1}}); got.dirty != 1 {
		t.Fatalf("stored runs are not changed")
	}
}

func TestCut(t *testing.T) {
	// Runs: source 0-9 → target 0-9; source 20-29 → target 10-19 (a gap of
	// markers before it), covered up to 35 (markers after it).
	newMap := func() *Map {
		m := NewMap(nil)
		m.Start(0)
		for i := int64(0); i < 10; i++ {
			m.Add(i, i, 1)
		}
		for i := int64(20); i < 30; i++ {
			m.Add(i, i-10, 1)
		}
		m.Advance(35)
		m.TakeChanged()
		return m
	}
	tests := []struct {
		name        string
		src, tgt    int64
		wantRuns    []Run
		wantDropped []Run
		// translate: source offset → want result after the cut
		translate map[int64]Result
	}{
		{
			name: "source truncated inside the second run",
			src:  25, tgt: -1,
			wantRuns:    []Run{{Source: 0, Target: 0, Len: 10, LastMs: 1}, {Source: 20, Target: 10, Len: 5, LastMs: 1, Gap: 10}},
			wantDropped: nil,
			translate:   map[int64]Result{22: {Target: 12, Exact: true}, 15: {Target: 10, Exact: true}},
		},
		{
			name: "source truncated in the markers after the newest run keeps the tail below it",
			src:  32, tgt: -1,
			wantRuns: []Run{{Source: 0, Target: 0, Len: 10, LastMs: 1}, {Source: 20, Target: 10, Len: 10, LastMs: 1, Gap: 10, Tail: 2}},
		},
		{
			name: "source truncated before the second run drops it",
			src:  15, tgt: -1,
			wantRuns:    []Run{{Source: 0, Target: 0, Len: 10, LastMs: 1}},
			wantDropped: []Run{{Source: 20, Target: 10, Len: 10, LastMs: 1, Gap: 10, Tail: 5}},
		},
		{
			name: "target lost copies from target offset 5",
			src:  -1, tgt: 5,
			wantRuns:    []Run{{Source: 0, Target: 0, Len: 5, LastMs: 1}},
			wantDropped: []Run{{Source: 20, Target: 10, Len: 10, LastMs: 1, Gap: 10, Tail: 5}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newMap()
			m.Cut(tc.src, tc.tgt)
			if got := saved(m.Runs()); !reflect.DeepEqual(got, tc.wantRuns) {
				t.Fatalf("runs after Cut(%d, %d) =\n%+v\nwant\n%+v", tc.src, tc.tgt, got, tc.wantRuns)
			}
			if got := saved(m.TakeDropped()); len(got) != len(tc.wantDropped) || len(got) > 0 && !reflect.DeepEqual(got, tc.wantDropped) {
				t.Fatalf("dropped = %+v, want %+v", got, tc.wantDropped)
			}
			if d := m.TakeDropped(); len(d) != 0 {
				t.Fatalf("TakeDropped twice returned %+v", d)
			}
			// A shortened run is stored again.
			changed, _ := m.TakeChanged()
			for _, r := range saved(changed) {
				if !slices.Contains(tc.wantRuns, r) {
					t.Fatalf("changed run %+v is not among the runs", r)
				}
			}
			for src, want := range tc.translate {
				if got := m.Translate(src, -1); got != want {
					t.Errorf("Translate(%d) = %+v, want %+v", src, got, want)
				}
			}
		})
	}
}

func TestCutThenNewDataAfterSourceTruncation(t *testing.T) {
	m := NewMap(nil)
	m.Start(0)
	for i := int64(0); i < 10; i++ {
		m.Add(i, i, 1)
	}
	m.Cut(6, -1) // the source lost offsets 6..9; new records reuse them
	for i := int64(6); i < 9; i++ {
		m.Add(i, i+4, 2) // copied after the old copies: target 10..12
	}
	// Source 6 (new data) is at target 10, exactly; 3 is unchanged.
	for src, want := range map[int64]Result{3: {Target: 3, Exact: true}, 6: {Target: 10, Exact: true}, 8: {Target: 12, Exact: true}} {
		if got := m.Translate(src, 13); got != want {
			t.Errorf("Translate(%d) = %+v, want %+v", src, got, want)
		}
	}
}

// TestAddRunEqualsAdds checks that AddRun gives the map Add would give
// record by record, batches following each other, after gaps (markers),
// at or below what the map holds, and of one record.
func TestAddRunEqualsAdds(t *testing.T) {
	type run struct{ src, tgt, n int64 }
	tests := []struct {
		name string
		runs []run
	}{
		{"contiguous batches", []run{{0, 0, 5}, {5, 5, 3}}},
		{"a marker between batches", []run{{0, 0, 5}, {6, 5, 4}}},
		{"target moved on", []run{{0, 10, 2}, {2, 20, 2}}},
		{"one-record batches", []run{{0, 0, 1}, {1, 1, 1}, {3, 2, 1}}},
		{"a batch again at or below the map", []run{{0, 0, 5}, {3, 3, 2}, {5, 5, 2}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			byRun, byRecord := NewMap(nil), NewMap(nil)
			for _, r := range tc.runs {
				byRun.AddRun(r.src, r.tgt, r.n, 1)
				for i := range r.n {
					byRecord.Add(r.src+i, r.tgt+i, 1)
				}
			}
			if got, want := saved(byRun.Runs()), saved(byRecord.Runs()); !reflect.DeepEqual(got, want) {
				t.Fatalf("AddRun gave %+v, Add record by record %+v", got, want)
			}
		})
	}
}
