package main

import (
	"encoding/json"
	"os"
	"testing"
	"time"
)

func TestEventsAreJSONOfOneKiB(t *testing.T) {
	g := newEventGen(1)
	seen := map[string]bool{}
	for range 2000 {
		v := g.value()
		if len(v) != recordSize {
			t.Fatalf("event of %d bytes, want %d: %s", len(v), recordSize, v)
		}
		if !json.Valid(v) {
			t.Fatalf("not JSON: %s", v)
		}
		if seen[string(v)] {
			t.Fatalf("duplicate event %s", v)
		}
		seen[string(v)] = true
	}
}

func TestReadProcSelf(t *testing.T) {
	s, err := readProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.rss <= 0 || s.hwm < s.rss {
		t.Fatalf("rss %d, hwm %d", s.rss, s.hwm)
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i))
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {99, 99}, {100, 100}, {1, 1}, {99.9, 100}} {
		if got := percentile(ds, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
}

func BenchmarkEvent(b *testing.B) {
	g := newEventGen(1)
	for b.Loop() {
		g.value()
	}
}

func TestVerificationAndFigures(t *testing.T) {
	v := verification{partitions: 2, records: 10, extra: 1, extraParts: 1, examples: []string{"t[0]: 6 records, source has 5"}}
	if got, want := v.short(), "not verified: 1 duplicates"; got != want {
		t.Errorf("short() = %q, want %q", got, want)
	}
	if got := v.String(); got != "NOT verified: 1 records more than the source (duplicates) in 1 partitions; e.g. t[0]: 6 records, source has 5" {
		t.Errorf("String() = %q", got)
	}
	f := figure{v: 2, shown: true, note: "(not verified)"}
	if got := f.fmt("%.1f"); got != "2.0 (not verified)" {
		t.Errorf("fmt = %q", got)
	}
	if got := ratio(f, val(1)); got != "—" {
		t.Errorf("ratio of a figure that does not count = %q, want —", got)
	}
	if got := ratio(val(3), val(2)); got != "1.50×" {
		t.Errorf("ratio = %q", got)
	}
}

func TestCountRatios(t *testing.T) {
	zero := figure{v: 0, ok: true, noRatio: true}
	if got := ratio(zero, val(5)); got != "—" {
		t.Errorf("ratio of a count of 0 = %q, want —", got)
	}
	if got := ratio(val(5), zero); got != "—" {
		t.Errorf("ratio to a count of 0 = %q, want —", got)
	}
}

func TestCommittedCompleteAt(t *testing.T) {
	t0 := time.Unix(1000, 0)
	c := &committedCounter{
		want:  offsets{"km.t": {0: 2, 1: 1}},
		count: offsets{"km.t": {0: 2, 1: 1}},
		last:  offsets{"km.t": {0: 5, 1: 2}},
		// Partition 0's second record is at offset 2 (a marker at 1),
		// then more markers; partition 1's only record at offset 0.
		reach: offsets{"km.t": {0: 3, 1: 1}},
	}
	w := &copyWatch{counter: c, history: []offsetsAt{
		{t0, offsets{"km.t": {0: 2, 1: 2}}},
		{t0.Add(time.Second), offsets{"km.t": {0: 3, 1: 2}}},
		{t0.Add(2 * time.Second), offsets{"km.t": {0: 5, 1: 2}}},
	}}
	at, ok := w.completeAt()
	if !ok || !at.Equal(t0.Add(time.Second)) {
		t.Fatalf("completeAt = %v, %v; want %v", at, ok, t0.Add(time.Second))
	}
	if copied, extra := c.progress(); copied != 3 || extra != 0 {
		t.Errorf("progress = %d, %d; want 3, 0", copied, extra)
	}
	c.count["km.t"][1] = 0
	if _, ok := w.completeAt(); ok {
		t.Error("complete with a partition short of its count")
	}
}

func TestToolNames(t *testing.T) {
	for in, want := range map[string]string{"mm2": toolMM2, "MM2-EOS": toolMM2EOS, "kmirror-eos": toolKmirrorEOS, " pipe": toolPipe} {
		if got, ok := canonicalTool(in); !ok || got != want {
			t.Errorf("canonicalTool(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	if _, ok := canonicalTool("mm3"); ok {
		t.Error("mm3 accepted")
	}
	if _, err := parseFlags([]string{"-tools", "kmirror,kmirror-eos,mm2,mm2-eos"}); err != nil {
		t.Fatal(err)
	}
}
