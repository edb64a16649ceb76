package batch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/kmirror/kmirror/internal/batch/batchtest"
	"github.com/twmb/franz-go/pkg/kgo"
)

// spec describes a batch to build for a test.
type spec = batchtest.Spec

func build(t testing.TB, s spec) []byte {
	t.Helper()
	return batchtest.Build(t, s)
}

func decode(t testing.TB, set []byte) []*kgo.Record {
	t.Helper()
	return batchtest.Decode(t, set)
}

func TestSplit(t *testing.T) {
	a, b := build(t, spec{Base: 0, Records: 3}), build(t, spec{Base: 3, Records: 2, Codec: int8(CodecLz4)})
	whole := append(append([]byte(nil), a...), b...)
	tests := []struct {
		name     string
		set      []byte
		batches  int
		rest     int
		wantErr  error
		firstOff int64
	}{
		{"empty", nil, 0, 0, nil, 0},
		{"two whole", whole, 2, 0, nil, 0},
		{"cut in the second's header", whole[:len(a)+10], 1, 10, nil, 0},
		{"cut in the second's records", whole[:len(whole)-1], 1, len(b) - 1, nil, 0},
		{"cut in the first's length", whole[:5], 0, 5, nil, 0},
		{"old format", append(append([]byte(nil), a...), oldFormat(b)...), 1, len(b), ErrOldFormat, 0},
		{"corrupt length", append(append([]byte(nil), a...), shortLength(b)...), 1, len(b), ErrCorrupt, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, rest, err := Split(tt.set)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if len(got) != tt.batches || len(rest) != tt.rest {
				t.Fatalf("%d batches and %d bytes left, want %d and %d", len(got), len(rest), tt.batches, tt.rest)
			}
			for _, g := range got {
				if err := g.CheckCRC(); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func oldFormat(b []byte) []byte {
	c := append([]byte(nil), b...)
	c[offMagic] = 1
	return c
}

func shortLength(b []byte) []byte {
	c := append([]byte(nil), b...)
	binary.BigEndian.PutUint32(c[offLength:], 10)
	return c
}

func TestHeader(t *testing.T) {
	b := Batch(build(t, spec{Base: 40, Records: 5, Codec: int8(CodecZstd), Transactional: true, Producer: 9}))
	if b.BaseOffset() != 40 || b.LastOffset() != 44 || b.NextOffset() != 45 || b.NumRecords() != 5 || !b.Dense() {
		t.Errorf("offsets: base %d last %d records %d dense %v", b.BaseOffset(), b.LastOffset(), b.NumRecords(), b.Dense())
	}
	if b.Codec() != CodecZstd || !b.Transactional() || b.Control() || b.LogAppendTime() {
		t.Errorf("attributes: codec %v transactional %v control %v", b.Codec(), b.Transactional(), b.Control())
	}
	if b.ProducerID() != 9 || b.ProducerEpoch() != 3 || b.BaseSequence() != 100 {
		t.Errorf("producer %d/%d/%d", b.ProducerID(), b.ProducerEpoch(), b.BaseSequence())
	}
	if b.FirstTimestamp() != 1_700_000_000_000 || b.MaxTimestamp() != 1_700_000_000_004 {
		t.Errorf("timestamps %d %d", b.FirstTimestamp(), b.MaxTimestamp())
	}
	if g := Batch(build(t, spec{Base: 0, Records: 4, Gaps: true})); g.Dense() {
		t.Errorf("a batch with holes (%d records over offsets %d-%d) is dense", g.NumRecords(), g.BaseOffset(), g.LastOffset())
	}
}

// TestStampKeepsRecords checks, for every codec, that a stamped batch is
// valid and reads back with every record as it was: key, value, headers,
// timestamp and offset delta; only the producer fields change.
func TestStampKeepsRecords(t *testing.T) {
	for _, codec := range []Codec{CodecNone, CodecGzip, CodecSnappy, CodecLz4, CodecZstd} {
		for _, txn := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/transactional=%v", codec, txn), func(t *testing.T) {
				orig := build(t, spec{Base: 1000, Records: 50, Codec: int8(codec), Transactional: !txn, Producer: 5})
				want := decode(t, orig)
				if len(want) != 50 {
					t.Fatalf("the source batch reads as %d records", len(want))
				}
				b := Batch(append([]byte(nil), orig...))
				b.Stamp(Producer{ID: 77, Epoch: 2}, 12345, txn)
				if err := b.CheckCRC(); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(b[HeaderSize:], orig[HeaderSize:]) {
					t.Fatal("the records' bytes changed")
				}
				if b.BaseOffset() != 0 || b.ProducerID() != 77 || b.ProducerEpoch() != 2 || b.BaseSequence() != 12345 || b.Transactional() != txn {
					t.Fatalf("stamped: base %d producer %d/%d/%d transactional %v", b.BaseOffset(), b.ProducerID(), b.ProducerEpoch(), b.BaseSequence(), b.Transactional())
				}
				if b.Codec() != codec || b.NumRecords() != 50 || b.LastOffset() != 49 || b.MaxTimestamp() != Batch(orig).MaxTimestamp() {
					t.Fatalf("header changed: codec %v records %d last %d", b.Codec(), b.NumRecords(), b.LastOffset())
				}
				// Read back at the source's offsets, record by record.
				binary.BigEndian.PutUint64(b, 1000)
				got := decode(t, b)
				if len(got) != len(want) {
					t.Fatalf("%d records, want %d", len(got), len(want))
				}
				for i := range want {
					g, w := got[i], want[i]
					if g.Offset != w.Offset || !bytes.Equal(g.Key, w.Key) || !bytes.Equal(g.Value, w.Value) ||
						!g.Timestamp.Equal(w.Timestamp) || fmt.Sprint(g.Headers) != fmt.Sprint(w.Headers) ||
						g.ProducerID != 77 || g.ProducerEpoch != 2 {
						t.Fatalf("record %d: got %+v, want %+v", i, g, w)
					}
				}
			})
		}
	}
}

func TestPlan(t *testing.T) {
	lz4 := Target{Codec: CodecLz4}
	keep := Target{AnyCodec: true}
	tests := []struct {
		name    string
		s       spec
		target  Target
		verdict Verdict
		reason  string
	}{
		{"same codec", spec{Records: 3, Codec: int8(CodecLz4)}, lz4, Forward, ""},
		{"kept codec", spec{Records: 3, Codec: int8(CodecZstd)}, keep, Forward, ""},
		{"uncompressed kept", spec{Records: 3}, keep, Forward, ""},
		{"other codec", spec{Records: 3, Codec: int8(CodecZstd)}, lz4, Decode, ReasonCompression},
		{"compacted", spec{Records: 3, Codec: int8(CodecLz4), Gaps: true}, lz4, Decode, ReasonCompacted},
		{"one record left by compaction", spec{Records: 1, Gaps: true}, keep, Decode, ReasonCompacted},
		{"log append time", spec{Records: 3, LogAppendTime: true}, keep, Decode, ReasonLogAppendTime},
		{"committed transaction", spec{Records: 3, Transactional: true, Producer: 4}, keep, Forward, ""},
		{"marker", spec{Control: true, Transactional: true, Producer: 4}, keep, Drop, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, reason := Plan(Batch(build(t, tt.s)), tt.target, nil)
			if v != tt.verdict || reason != tt.reason {
				t.Fatalf("got %v %q, want %v %q", v, reason, tt.verdict, tt.reason)
			}
		})
	}
}

// TestAborted walks a partition where producers 1 and 2 interleave
// transactions: 1 aborts its first and commits its second, 2 commits,
// and a plain producer writes between them.
func TestAborted(t *testing.T) {
	type step struct {
		s    spec
		skip bool
	}
	steps := []step{
		{spec{Base: 0, Records: 2, Transactional: true, Producer: 1}, true},
		{spec{Base: 2, Records: 2, Transactional: true, Producer: 2}, false},
		{spec{Base: 4, Records: 1}, false},
		{spec{Base: 5, Records: 2, Transactional: true, Producer: 1}, true},
		{spec{Base: 7, Control: true, Transactional: true, Producer: 1}, true}, // 1's abort marker
		{spec{Base: 8, Control: true, Transactional: true, Producer: 2}, false},
		{spec{Base: 9, Records: 2, Transactional: true, Producer: 1}, false},
		{spec{Base: 11, Records: 1, Transactional: true, Producer: 3}, true},
		{spec{Base: 12, Records: 1}, false},
	}
	a := NewAborted([]AbortedTxn{{ProducerID: 3, FirstOffset: 11}, {ProducerID: 1, FirstOffset: 0}})
	for _, st := range steps {
		if got := a.Skip(Batch(build(t, st.s))); got != st.skip {
			t.Errorf("batch at %d of producer %d: skip %v, want %v", st.s.Base, st.s.Producer, got, st.skip)
		}
	}
	var none *Aborted
	if none.Skip(Batch(build(t, steps[0].s))) {
		t.Error("a nil Aborted skipped a batch")
	}
}

func TestParseCodec(t *testing.T) {
	for _, c := range []Codec{CodecNone, CodecGzip, CodecSnappy, CodecLz4, CodecZstd} {
		if got, ok := ParseCodec(c.String()); !ok || got != c {
			t.Errorf("ParseCodec(%q) = %v, %v", c.String(), got, ok)
		}
	}
	for _, s := range []string{"source", "producer", "lz5"} {
		if _, ok := ParseCodec(s); ok {
			t.Errorf("ParseCodec(%q) named a codec", s)
		}
	}
}

// FuzzSplit feeds arbitrary bytes to Split and the header readers: no
// input may panic, and every batch returned lies within the input.
func FuzzSplit(f *testing.F) {
	f.Add(build(f, spec{Records: 3, Codec: int8(CodecLz4)}))
	f.Add(append(build(f, spec{Records: 1}), 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 49, 0, 0, 0, 0, 2))
	f.Fuzz(func(t *testing.T, set []byte) {
		batches, rest, _ := Split(set)
		n := len(rest)
		for _, b := range batches {
			n += len(b)
			_ = b.Dense()
			_, _ = Plan(b, Target{AnyCodec: true}, NewAborted([]AbortedTxn{{ProducerID: b.ProducerID()}}))
			_ = b.CheckCRC()
		}
		if n != len(set) {
			t.Fatalf("batches and rest hold %d bytes of %d", n, len(set))
		}
	})
}
