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
