// Package verify compares replicated topics with their source, record by
// record: partition, order, key, value (null and empty kept apart),
// headers (order and duplicates) and timestamp.
package verify

import (
	"bytes"
	"context"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Pair names a source topic and its replica on the target.
type Pair struct {
	Source, Target string
}

// TopicReport is the comparison of one pair.
type TopicReport struct {
	Pair
	SourceRecords int64
	TargetRecords int64
	Matched       int64
	// Mismatches describes the first differences found (at most a few per
	// partition).
	Mismatches []string
}

// OK reports whether the target holds exactly the source's records.
func (r TopicReport) OK() bool {
	return len(r.Mismatches) == 0 && r.SourceRecords == r.TargetRecords && r.Matched == r.SourceRecords
}

// Report is the comparison of every pair.
type Report struct {
	Topics []TopicReport
}

// OK reports whether every pair matched.
func (r Report) OK() bool {
	for _, t := range r.Topics {
		if !t.OK() {
			return false
		}
	}
	return true
}

// Records is the total number of source records compared.
func (r Report) Records() (source, matched int64) {
	for _, t := range r.Topics {
		source += t.SourceRecords
		matched += t.Matched
	}
	return source, matched
}

const maxMismatchesPerPartition = 3

// Compare reads every pair from both clusters, up to the end offsets seen
// when it starts, and compares them, leaving out the headers named ignore
// (headers the replicator adds to its copies, such as kmirror.provenance).
// src and dst are only used for their connection options.
func Compare(ctx context.Context, src, dst *kgo.Client, pairs []Pair, ignore ...string) (Report, error) {
	var rep Report
	for _, p := range pairs {
		srcRecs, err := ReadAll(ctx, src, p.Source)
		if err != nil {
			return rep, fmt.Errorf("reading source topic %q: %w", p.Source, err)
		}
		dstRecs, err := ReadAll(ctx, dst, p.Target)
		if err != nil {
			return rep, fmt.Errorf("reading target topic %q: %w", p.Target, err)
		}
		rep.Topics = append(rep.Topics, comparePair(p, srcRecs, dstRecs, ignore))
	}
	return rep, nil
}

func comparePair(p Pair, srcRecs, dstRecs map[int32][]*kgo.Record, ignore []string) TopicReport {
	tr := TopicReport{Pair: p}
	parts := map[int32]bool{}
	for id, rs := range srcRecs {
		parts[id] = true
		tr.SourceRecords += int64(len(rs))
	}
	for id, rs := range dstRecs {
		parts[id] = true
		tr.TargetRecords += int64(len(rs))
	}
	ids := make([]int32, 0, len(parts))
	for id := range parts {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		s, d := srcRecs[id], dstRecs[id]
		bad := 0
		for i := 0; i < len(s) && i < len(d); i++ {
			if diff := DiffIgnoring(s[i], d[i], ignore...); diff != "" {
				if bad < maxMismatchesPerPartition {
					tr.Mismatches = append(tr.Mismatches, fmt.Sprintf("partition %d record %d (source offset %d, target offset %d): %s", id, i, s[i].Offset, d[i].Offset, diff))
				}
				bad++
				continue
			}
			tr.Matched++
		}
		if len(s) != len(d) {
			tr.Mismatches = append(tr.Mismatches, fmt.Sprintf("partition %d: source has %d records, target has %d", id, len(s), len(d)))
		}
	}
	return tr
}

// Diff describes how b differs from a, or returns "" when they carry the
// same key, value, headers and timestamp.
func Diff(a, b *kgo.Record) string { return DiffIgnoring(a, b) }

// DiffIgnoring is Diff with the headers named keys left out of both
// records; every other header is compared, in order, duplicates included.
func DiffIgnoring(a, b *kgo.Record, keys ...string) string {
	ah, bh := without(a.Headers, keys), without(b.Headers, keys)
	switch {
	case !sameBytes(a.Key, b.Key):
		return fmt.Sprintf("key %s != %s", show(a.Key), show(b.Key))
	case !sameBytes(a.Value, b.Value):
		return fmt.Sprintf("value %s != %s", show(a.Value), show(b.Value))
	case !a.Timestamp.Equal(b.Timestamp):
		return fmt.Sprintf("timestamp %d != %d", a.Timestamp.UnixMilli(), b.Timestamp.UnixMilli())
	case len(ah) != len(bh):
		return fmt.Sprintf("%d headers != %d", len(ah), len(bh))
	}
	for i := range ah {
		ha, hb := ah[i], bh[i]
		if ha.Key != hb.Key || !sameBytes(ha.Value, hb.Value) {
			return fmt.Sprintf("header %d %q=%s != %q=%s", i, ha.Key, show(ha.Value), hb.Key, show(hb.Value))
		}
	}
	return ""
}

// without returns headers without those named keys.
func without(headers []kgo.RecordHeader, keys []string) []kgo.RecordHeader {
	if len(keys) == 0 {
		return headers
	}
	out := make([]kgo.RecordHeader, 0, len(headers))
	for _, h := range headers {
		if !slices.Contains(keys, h.Key) {
			out = append(out, h)
		}
	}
	return out
}

// sameBytes is bytes.Equal that tells null (nil) from empty.
func sameBytes(a, b []byte) bool {
	return (a == nil) == (b == nil) && bytes.Equal(a, b)
}

func show(b []byte) string {
	if b == nil {
		return "null"
	}
	if len(b) > 32 {
		return fmt.Sprintf("%q…(%d bytes)", b[:32], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// ReadAll reads topic from its start to the end offsets listed when it
// begins, and returns its records by partition. cl is used only for its
// connection options.
func ReadAll(ctx context.Context, cl *kgo.Client, topic string) (map[int32][]*kgo.Record, error) {
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	if err := ends.Error(); err != nil {
		return nil, err
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		return nil, err
	}
	out := map[int32][]*kgo.Record{}
	want := map[int32]kgo.Offset{}
	remaining := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		out[o.Partition] = nil
		s, _ := starts.Lookup(o.Topic, o.Partition)
		if o.Offset > s.Offset {
			want[o.Partition] = kgo.NewOffset().At(s.Offset)
			remaining[o.Partition] = o.Offset
		}
	})
	if len(want) == 0 {
		return out, nil
	}
	reader, err := kgo.NewClient(append(slices.Clone(cl.Opts()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: want}),
		kgo.FetchMaxBytes(64<<20),
	)...)
	if err != nil {
		return nil, err
	}
	defer reader.Close()
	for len(remaining) > 0 {
		fetches := reader.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%d partitions not read to their end: %w", len(remaining), err)
		}
		if errs := fetches.Errors(); len(errs) > 0 {
			return nil, errs[0].Err
		}
		fetches.EachRecord(func(r *kgo.Record) {
			end, ok := remaining[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			out[r.Partition] = append(out[r.Partition], r)
			if r.Offset >= end-1 {
				delete(remaining, r.Partition)
			}
		})
	}
	return out, nil
}
