package verify

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/kfaketest"
)

var ts = time.UnixMilli(1_700_000_000_000)

func rec(key, value []byte, ts time.Time, headers ...kgo.RecordHeader) *kgo.Record {
	return &kgo.Record{Key: key, Value: value, Timestamp: ts, Headers: headers}
}

func hdr(k string, v []byte) kgo.RecordHeader { return kgo.RecordHeader{Key: k, Value: v} }

func TestDiff(t *testing.T) {
	tests := []struct {
		name string
		a, b *kgo.Record
		want string // substring of the difference; "" means equal
	}{
		{"equal", rec([]byte("k"), []byte("v"), ts, hdr("h", []byte("1"))), rec([]byte("k"), []byte("v"), ts, hdr("h", []byte("1"))), ""},
		{"both null key and value", rec(nil, nil, ts), rec(nil, nil, ts), ""},
		{"both empty key and value", rec([]byte{}, []byte{}, ts), rec([]byte{}, []byte{}, ts), ""},
		{"null key vs empty key", rec(nil, []byte("v"), ts), rec([]byte{}, []byte("v"), ts), `key null != ""`},
		{"empty key vs null key", rec([]byte{}, []byte("v"), ts), rec(nil, []byte("v"), ts), `key "" != null`},
		{"null value vs empty value", rec([]byte("k"), nil, ts), rec([]byte("k"), []byte{}, ts), `value null != ""`},
		{"empty value vs null value", rec([]byte("k"), []byte{}, ts), rec([]byte("k"), nil, ts), `value "" != null`},
		{"different key", rec([]byte("a"), nil, ts), rec([]byte("b"), nil, ts), `key "a" != "b"`},
		{"different value", rec(nil, []byte("x"), ts), rec(nil, []byte("y"), ts), `value "x" != "y"`},
		{"long value is shortened", rec(nil, []byte(strings.Repeat("a", 40)), ts), rec(nil, []byte(strings.Repeat("b", 40)), ts), "(40 bytes)"},
		{"timestamp", rec(nil, nil, ts), rec(nil, nil, ts.Add(time.Millisecond)), "timestamp 1700000000000 != 1700000000001"},
		{"same instant in another zone", rec(nil, nil, ts), rec(nil, nil, ts.In(time.FixedZone("x", 3600))), ""},
		{
			"header order",
			rec(nil, nil, ts, hdr("a", []byte("1")), hdr("b", []byte("2"))),
			rec(nil, nil, ts, hdr("b", []byte("2")), hdr("a", []byte("1"))),
			`header 0 "a"="1" != "b"="2"`,
		},
		{
			"duplicate headers kept",
			rec(nil, nil, ts, hdr("a", []byte("1")), hdr("a", []byte("1"))),
			rec(nil, nil, ts, hdr("a", []byte("1"))),
			"2 headers != 1",
		},
		{
			"duplicate headers equal",
			rec(nil, nil, ts, hdr("a", []byte("1")), hdr("a", []byte("2"))),
			rec(nil, nil, ts, hdr("a", []byte("1")), hdr("a", []byte("2"))),
			"",
		},
		{
			"duplicate header values in order",
			rec(nil, nil, ts, hdr("a", []byte("1")), hdr("a", []byte("2"))),
			rec(nil, nil, ts, hdr("a", []byte("2")), hdr("a", []byte("1"))),
			`header 0 "a"="1" != "a"="2"`,
		},
		{
			"null header value vs empty",
			rec(nil, nil, ts, hdr("a", nil)),
			rec(nil, nil, ts, hdr("a", []byte{})),
			`header 0 "a"=null != "a"=""`,
		},
		{"missing header", rec(nil, nil, ts, hdr("a", nil)), rec(nil, nil, ts), "1 headers != 0"},
		{"header value", rec(nil, nil, ts, hdr("a", []byte("x"))), rec(nil, nil, ts, hdr("a", []byte("y"))), `header 0 "a"="x" != "a"="y"`},
		{"key reported before value", rec([]byte("a"), []byte("x"), ts), rec([]byte("b"), []byte("y"), ts), "key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Diff(tc.a, tc.b)
			switch {
			case tc.want == "" && got != "":
				t.Errorf("Diff = %q, want equal", got)
			case tc.want != "" && !strings.Contains(got, tc.want):
				t.Errorf("Diff = %q, want it to contain %q", got, tc.want)
			}
		})
	}
}

type env struct {
	ctx      context.Context
	src, dst *kgo.Client
}

func newClient(t *testing.T) *kgo.Client {
	t.Helper()
	return kfaketest.New(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
}

func newEnv(t *testing.T) *env {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return &env{ctx: ctx, src: newClient(t), dst: newClient(t)}
}

// write creates topic with partitions partitions on cl and writes recs, in
// order, to the partitions they name.
func (e *env) write(t *testing.T, cl *kgo.Client, topic string, partitions int32, recs []*kgo.Record) {
	t.Helper()
	if _, err := kadm.NewClient(cl).CreateTopic(e.ctx, partitions, -1, nil, topic); err != nil {
		t.Fatalf("creating %q: %v", topic, err)
	}
	if len(recs) == 0 {
		return
	}
	out := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		c := *r
		c.Topic = topic
		out[i] = &c
	}
	if err := cl.ProduceSync(e.ctx, out...).FirstErr(); err != nil {
		t.Fatalf("producing to %q: %v", topic, err)
	}
}

// sample is 3 partitions of records with null and empty keys and values,
// duplicate headers and old timestamps.
func sample() []*kgo.Record {
	var out []*kgo.Record
	for p := range int32(3) {
		for i := range 5 {
			r := &kgo.Record{
				Partition: p,
				Key:       []byte(fmt.Sprintf("k%d-%d", p, i)),
				Value:     []byte(fmt.Sprintf("v%d-%d", p, i)),
				Timestamp: ts.Add(time.Duration(i) * time.Second),
			}
			switch i {
			case 1:
				r.Key, r.Value = nil, nil
			case 2:
				r.Key, r.Value = []byte{}, []byte{}
			case 3:
				r.Headers = []kgo.RecordHeader{hdr("h", []byte("1")), hdr("h", []byte("1")), hdr("e", []byte{}), hdr("n", nil)}
			}
			out = append(out, r)
		}
	}
	return out
}

func TestCompare(t *testing.T) {
	e := newEnv(t)
	changed := func(recs []*kgo.Record) []*kgo.Record {
		c := *recs[7] // partition 1, record 2
		c.Value = []byte("changed")
		recs[7] = &c
		return recs
	}
	tests := []struct {
		name       string
		target     func([]*kgo.Record) []*kgo.Record
		ok         bool
		mismatches []string // substrings, each expected in some mismatch
		matched    int64
		tgtRecords int64
	}{
		{
			name:       "identical",
			target:     func(r []*kgo.Record) []*kgo.Record { return r },
			ok:         true,
			matched:    15,
			tgtRecords: 15,
		},
		{
			name:       "one record changed",
			target:     changed,
			mismatches: []string{`partition 1 record 2 (source offset 2, target offset 2): value "" != "changed"`},
			matched:    14,
			tgtRecords: 15,
		},
		{
			name:       "one record missing",
			target:     func(r []*kgo.Record) []*kgo.Record { return r[:14] }, // last of partition 2
			mismatches: []string{"partition 2: source has 5 records, target has 4"},
			matched:    14,
			tgtRecords: 14,
		},
		{
			name: "one record extra",
			target: func(r []*kgo.Record) []*kgo.Record {
				return append(r, &kgo.Record{Partition: 0, Value: []byte("extra"), Timestamp: ts})
			},
			mismatches: []string{"partition 0: source has 5 records, target has 6"},
			matched:    15,
			tgtRecords: 16,
		},
		{
			name: "record in another partition",
			target: func(r []*kgo.Record) []*kgo.Record {
				c := *r[4] // last of partition 0 goes to partition 2
				c.Partition = 2
				return append(r[:4:4], append(r[5:15:15], &c)...)
			},
			mismatches: []string{"partition 0: source has 5 records, target has 4", "partition 2: source has 5 records, target has 6"},
			matched:    14,
			tgtRecords: 15,
		},
		{
			name: "reordered within a partition",
			target: func(r []*kgo.Record) []*kgo.Record {
				out := append([]*kgo.Record(nil), r...)
				out[10], out[11] = out[11], out[10] // partition 2, records 0 and 1
				return out
			},
			mismatches: []string{"partition 2 record 0 ", "partition 2 record 1 "},
			matched:    13,
			tgtRecords: 15,
		},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src, dst := fmt.Sprintf("src-%d", i), fmt.Sprintf("primary.src-%d", i)
			e.write(t, e.src, src, 3, sample())
			e.write(t, e.dst, dst, 3, tc.target(sample()))
			rep, err := Compare(e.ctx, e.src, e.dst, []Pair{{Source: src, Target: dst}})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Topics) != 1 {
				t.Fatalf("%d topic reports, want 1", len(rep.Topics))
			}
			tr := rep.Topics[0]
			if rep.OK() != tc.ok || tr.OK() != tc.ok {
				t.Errorf("OK = %v (topic %v), want %v; mismatches %q", rep.OK(), tr.OK(), tc.ok, tr.Mismatches)
			}
			if tr.SourceRecords != 15 || tr.TargetRecords != tc.tgtRecords || tr.Matched != tc.matched {
				t.Errorf("source %d target %d matched %d; want 15, %d, %d", tr.SourceRecords, tr.TargetRecords, tr.Matched, tc.tgtRecords, tc.matched)
			}
			if s, m := rep.Records(); s != 15 || m != tc.matched {
				t.Errorf("Records() = %d, %d; want 15, %d", s, m, tc.matched)
			}
			if tc.ok && len(tr.Mismatches) > 0 {
				t.Errorf("mismatches %q, want none", tr.Mismatches)
			}
			if len(tr.Mismatches) != len(tc.mismatches) {
				t.Errorf("%d mismatches %q, want %d", len(tr.Mismatches), tr.Mismatches, len(tc.mismatches))
			}
			for _, want := range tc.mismatches {
				found := false
				for _, m := range tr.Mismatches {
					found = found || strings.Contains(m, want)
				}
				if !found {
					t.Errorf("no mismatch contains %q; got %q", want, tr.Mismatches)
				}
			}
		})
	}
}

func TestCompareSeveralPairsAndEmptyTopics(t *testing.T) {
	e := newEnv(t)
	e.write(t, e.src, "empty", 2, nil)
	e.write(t, e.dst, "empty", 2, nil)
	e.write(t, e.src, "full", 3, sample())
	e.write(t, e.dst, "full", 3, sample()[:10]) // partition 2 missing entirely
	rep, err := Compare(e.ctx, e.src, e.dst, []Pair{{"empty", "empty"}, {"full", "full"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Topics) != 2 {
		t.Fatalf("%d topic reports, want 2", len(rep.Topics))
	}
	if !rep.Topics[0].OK() || rep.Topics[0].SourceRecords != 0 {
		t.Errorf("empty pair: %+v, want OK with 0 records", rep.Topics[0])
	}
	if rep.Topics[1].OK() || rep.OK() {
		t.Errorf("full pair OK with partition 2 missing: %+v", rep.Topics[1])
	}
	if want := "partition 2: source has 5 records, target has 0"; len(rep.Topics[1].Mismatches) != 1 || rep.Topics[1].Mismatches[0] != want {
		t.Errorf("mismatches %q, want [%q]", rep.Topics[1].Mismatches, want)
	}
}

func TestCompareMissingTargetTopic(t *testing.T) {
	e := newEnv(t)
	e.write(t, e.src, "t", 1, sample()[:5])
	if _, err := Compare(e.ctx, e.src, e.dst, []Pair{{"t", "nope"}}); err == nil || !strings.Contains(err.Error(), `target topic "nope"`) {
		t.Errorf("Compare with a missing target topic: err = %v, want one naming it", err)
	}
}

func TestReadAllKeepsNullAndEmpty(t *testing.T) {
	e := newEnv(t)
	in := sample()
	e.write(t, e.src, "t", 3, in)
	got, err := ReadAll(e.ctx, e.src, "t")
	if err != nil {
		t.Fatal(err)
	}
	for p := range int32(3) {
		if len(got[p]) != 5 {
			t.Fatalf("partition %d: %d records, want 5", p, len(got[p]))
		}
		for i, r := range got[p] {
			if d := Diff(in[int(p)*5+i], r); d != "" {
				t.Errorf("partition %d record %d read back differently: %s", p, i, d)
			}
			if r.Offset != int64(i) {
				t.Errorf("partition %d record %d at offset %d", p, i, r.Offset)
			}
		}
	}
}

func TestDiffIgnoring(t *testing.T) {
	const p = "kmirror.provenance"
	src := rec([]byte("k"), []byte("v"), ts, hdr("a", []byte("1")), hdr("b", []byte("2")))
	for _, tc := range []struct {
		name string
		b    *kgo.Record
		want string
	}{
		{"header added last", rec([]byte("k"), []byte("v"), ts, hdr("a", []byte("1")), hdr("b", []byte("2")), hdr(p, []byte("S,T"))), ""},
		{"header added between", rec([]byte("k"), []byte("v"), ts, hdr("a", []byte("1")), hdr(p, []byte("S,T")), hdr("b", []byte("2"))), ""},
		{"another header still compared", rec([]byte("k"), []byte("v"), ts, hdr("a", []byte("1")), hdr(p, []byte("S,T"))), "2 headers != 1"},
		{"order of the others still compared", rec([]byte("k"), []byte("v"), ts, hdr("b", []byte("2")), hdr("a", []byte("1")), hdr(p, nil)), `header 0 "a"="1" != "b"="2"`},
		{"value still compared", rec([]byte("k"), []byte("w"), ts, hdr("a", []byte("1")), hdr("b", []byte("2")), hdr(p, nil)), `value "v" != "w"`},
	} {
		got := DiffIgnoring(src, tc.b, p)
		if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("%s: DiffIgnoring = %q, want %q", tc.name, got, tc.want)
		}
	}
	if Diff(src, rec([]byte("k"), []byte("v"), ts, hdr("a", []byte("1")), hdr("b", []byte("2")), hdr(p, nil))) == "" {
		t.Error("Diff ignores a header")
	}
}
