package verify

import (
	"context"
	"fmt"
	"hash/maphash"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/offsets"
)

// Kinds of difference.
const (
	// KindMissing: a source record the flow copied (or should have
	// copied) is not on the target.
	KindMissing = "missing"
	// KindAltered: the target record a source record became differs from
	// it in key, value, headers or timestamp.
	KindAltered = "altered"
	// KindDuplicated: a target record the flow's offset map does not
	// account for is a copy of a record already compared.
	KindDuplicated = "duplicated"
	// KindExtra: a target record the flow's offset map does not account
	// for, and not a copy of one compared.
	KindExtra = "extra"
)

// Difference is one record that differs between source and target.
type Difference struct {
	Topic       string `json:"topic"`
	TargetTopic string `json:"target_topic"`
	Partition   int32  `json:"partition"`
	Kind        string `json:"kind"`
	// SourceOffset is the source record's offset, or -1 (an extra target
	// record of no source record).
	SourceOffset int64 `json:"source_offset"`
	// TargetOffset is the target record's offset, or the offset the
	// offset map gives the source record (missing), or -1 if none.
	TargetOffset int64  `json:"target_offset"`
	Detail       string `json:"detail"`
}

func (d Difference) String() string {
	src, tgt := "-", "-"
	if d.SourceOffset >= 0 {
		src = fmt.Sprint(d.SourceOffset)
	}
	if d.TargetOffset >= 0 {
		tgt = fmt.Sprint(d.TargetOffset)
	}
	return fmt.Sprintf("%s: topic %q partition %d source offset %s (target %q offset %s): %s", d.Kind, d.Topic, d.Partition, src, d.TargetTopic, tgt, d.Detail)
}

// Counts are what a comparison found.
type Counts struct {
	// SourceRecords is the number of source records read in the range.
	SourceRecords int64 `json:"source_records"`
	// Matched source records have an identical copy where the offset map
	// says.
	Matched int64 `json:"matched"`
	// Missing, Altered, Extra (duplicated included) are differences.
	Missing int64 `json:"missing"`
	Altered int64 `json:"altered"`
	Extra   int64 `json:"extra"`
	// Duplicated is the part of Extra that copies a compared record.
	Duplicated int64 `json:"duplicated"`
	// NotCopied are source records the flow does not write by design
	// (dropped by provenance: loops and records another flow routes).
	NotCopied int64 `json:"not_copied"`
	// Compacted are records present on one side only of a compacted
	// topic, whose cleaner removed them on the other after the copy.
	Compacted int64 `json:"compacted"`
	// Foreign are target records in the range written by someone else
	// than this flow (told by the provenance header): not compared.
	Foreign int64 `json:"foreign"`
	// Bytes is the size of the keys, values and headers read, both sides.
	Bytes int64 `json:"bytes"`
}

// Differences is the number of records that differ.
func (c Counts) Differences() int64 { return c.Missing + c.Altered + c.Extra }

// Add adds o to c.
func (c *Counts) Add(o Counts) {
	c.SourceRecords += o.SourceRecords
	c.Matched += o.Matched
	c.Missing += o.Missing
	c.Altered += o.Altered
	c.Extra += o.Extra
	c.Duplicated += o.Duplicated
	c.NotCopied += o.NotCopied
	c.Compacted += o.Compacted
	c.Foreign += o.Foreign
	c.Bytes += o.Bytes
}

// Plan is one partition's comparison: the source range, its target range
// and the offset map that relates them.
type Plan struct {
	Topic, TargetTopic string
	Partition          int32
	// Runs is the partition's offset map, sorted.
	Runs []offsets.Run
	// SourceStart, SourceEnd: source offsets [SourceStart, SourceEnd)
	// are compared.
	SourceStart, SourceEnd int64
	// TargetStart, TargetEnd: the target offsets read.
	TargetStart, TargetEnd int64
	// TargetLogStart is the target partition's log start offset: a copy
	// below it was deleted (retention, DeleteRecords).
	TargetLogStart int64
	// Compacted is true when the topic is compacted on either side.
	Compacted bool
	// NotCopied reports whether the flow, by design, writes no copy of a
	// source record (provenance drops); nil: it copies every record.
	NotCopied func(*kgo.Record) bool
	// Foreign reports whether a target record was written by someone
	// else than the flow; nil: none is.
	Foreign func(*kgo.Record) bool
	// Ignore are header keys left out of the comparison.
	Ignore []string
	// MaxDifferences bounds the differences kept (all are counted).
	MaxDifferences int
}

// PartitionResult is the comparison of one partition.
type PartitionResult struct {
	Partition    int32 `json:"partition"`
	SourceStart  int64 `json:"source_start"`
	SourceEnd    int64 `json:"source_end"`
	TargetStart  int64 `json:"target_start"`
	TargetEnd    int64 `json:"target_end"`
	Counts       `json:"counts"`
	Differences  []Difference `json:"differences,omitempty"`
	Note         string       `json:"note,omitempty"`
	diffsDropped int64
}

// RecordStream yields one partition's records in offset order; nil at its
// end.
type RecordStream interface {
	Next(ctx context.Context) (*kgo.Record, error)
}

// dupWindow is how many compared records are remembered (by hash) to tell
// a duplicated target record from an extra one.
const dupWindow = 1 << 16

// comparer walks one partition's source and target in lockstep.
type comparer struct {
	plan *Plan
	res  *PartitionResult
	dst  RecordStream
	peek *kgo.Record
	done bool

	si, ti int // run index by source, by target offset
	// holeNext is the next target offset to pair with a source record
	// in a hole of the offset map.
	holeNext int64

	seed   maphash.Seed
	seen   map[uint64]seenRecord
	ring   []uint64
	ringAt int
}

// seenRecord is a record content among the newest compared: the source
// offset of its newest copy, and how many times the window holds it.
type seenRecord struct {
	src int64
	n   int
}

// ComparePartition compares plan's source range, read from src, with its
// target range, read from dst, and calls progress with the number of
// source offsets passed (nil: not called). Both streams must yield the
// records of their range in order, transaction markers left out.
func ComparePartition(ctx context.Context, plan *Plan, src, dst RecordStream, progress func(int64)) (PartitionResult, error) {
	res := PartitionResult{Partition: plan.Partition, SourceStart: plan.SourceStart, SourceEnd: plan.SourceEnd,
		TargetStart: plan.TargetStart, TargetEnd: plan.TargetEnd}
	c := &comparer{plan: plan, res: &res, dst: dst, holeNext: -1, seed: maphash.MakeSeed(), seen: map[uint64]seenRecord{}}
	passed := plan.SourceStart
	for {
		r, err := src.Next(ctx)
		if err != nil {
			return res, fmt.Errorf("reading source %s/%d: %w", plan.Topic, plan.Partition, err)
		}
		if r == nil || r.Offset >= plan.SourceEnd {
			break
		}
		if r.Offset < plan.SourceStart {
			continue
		}
		if progress != nil && r.Offset+1 > passed {
			progress(r.Offset + 1 - passed)
			passed = r.Offset + 1
		}
		if err := c.source(ctx, r); err != nil {
			return res, err
		}
	}
	if progress != nil && plan.SourceEnd > passed {
		progress(plan.SourceEnd - passed)
	}
	// Every target record left is accounted for by no source record.
	if err := c.drain(ctx, plan.TargetEnd); err != nil {
		return res, err
	}
	return res, nil
}

func size(r *kgo.Record) int64 {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return int64(n)
}

// next returns the next target record without taking it; nil at the end.
func (c *comparer) next(ctx context.Context) (*kgo.Record, error) {
	for c.peek == nil && !c.done {
		r, err := c.dst.Next(ctx)
		if err != nil {
			return nil, fmt.Errorf("reading target %s/%d: %w", c.plan.TargetTopic, c.plan.Partition, err)
		}
		switch {
		case r == nil || r.Offset >= c.plan.TargetEnd:
			c.done = true
		case r.Offset < c.plan.TargetStart:
		case c.plan.Foreign != nil && c.plan.Foreign(r):
			c.res.Foreign++
		default:
			c.res.Bytes += size(r)
			c.peek = r
		}
	}
	return c.peek, nil
}

// source compares source record r with its copy.
func (c *comparer) source(ctx context.Context, r *kgo.Record) error {
	c.res.SourceRecords++
	c.res.Bytes += size(r)
	runs := c.plan.Runs
	for c.si < len(runs) && runs[c.si].SourceEnd() <= r.Offset {
		c.si++
		c.holeNext = -1
	}
	if c.si < len(runs) && r.Offset >= runs[c.si].Source {
		run := runs[c.si]
		return c.expect(ctx, r, run.Target+r.Offset-run.Source)
	}
	if c.plan.NotCopied != nil && c.plan.NotCopied(r) {
		c.res.NotCopied++
		return nil
	}
	// Between two runs: covered (the flow read past it and copied
	// nothing) or a hole of the map (runs unknown).
	covered := c.si < len(runs) && r.Offset >= runs[c.si].From() || c.si > 0 && r.Offset < runs[c.si-1].Covered()
	if covered || len(runs) == 0 {
		c.difference(KindMissing, r.Offset, -1, "not copied: the offset map passes over it, yet the flow copies every record of this kind")
		return nil
	}
	// A hole: pair the records in order with the target records between
	// the runs around it.
	lo, hi := c.plan.TargetStart, c.plan.TargetEnd
	if c.si > 0 {
		lo = runs[c.si-1].TargetEnd()
	}
	if c.si < len(runs) {
		hi = runs[c.si].Target
	}
	if c.holeNext < lo {
		c.holeNext = lo
	}
	if err := c.drain(ctx, c.holeNext); err != nil {
		return err
	}
	t, err := c.next(ctx)
	if err != nil {
		return err
	}
	if t == nil || t.Offset >= hi {
		c.difference(KindMissing, r.Offset, -1, "not on the target (in a stretch the offset map does not cover: records paired in order)")
		return nil
	}
	c.holeNext = t.Offset + 1
	return c.expect(ctx, r, t.Offset)
}

// expect compares source record r with the target record at offset want.
func (c *comparer) expect(ctx context.Context, r *kgo.Record, want int64) error {
	if err := c.drain(ctx, want); err != nil {
		return err
	}
	t, err := c.next(ctx)
	if err != nil {
		return err
	}
	if t == nil || t.Offset != want {
		switch {
		case want < c.plan.TargetLogStart:
			c.difference(KindMissing, r.Offset, want, fmt.Sprintf("deleted from the target: below its log start offset %d (retention or DeleteRecords)", c.plan.TargetLogStart))
		case c.plan.Compacted:
			c.res.Compacted++
		case want >= c.plan.TargetEnd:
			c.difference(KindMissing, r.Offset, want, fmt.Sprintf("not on the target: its copy's offset is past the target's end %d", c.plan.TargetEnd))
		default:
			c.difference(KindMissing, r.Offset, want, "not on the target")
		}
		return nil
	}
	c.peek = nil
	if d := DiffIgnoring(r, t, c.plan.Ignore...); d != "" {
		c.difference(KindAltered, r.Offset, t.Offset, d)
		return nil
	}
	c.res.Matched++
	c.remember(t, r.Offset)
	return nil
}

// drain takes the target records before offset end, none of which a
// source record accounts for.
func (c *comparer) drain(ctx context.Context, end int64) error {
	for {
		t, err := c.next(ctx)
		if err != nil {
			return err
		}
		if t == nil || t.Offset >= end {
			return nil
		}
		c.peek = nil
		c.unaccounted(t)
	}
}

// unaccounted classifies target record t, which no source record read
// accounts for.
func (c *comparer) unaccounted(t *kgo.Record) {
	runs := c.plan.Runs
	for c.ti < len(runs) && runs[c.ti].TargetEnd() <= t.Offset {
		c.ti++
	}
	if c.ti < len(runs) && t.Offset >= runs[c.ti].Target {
		// The copy of a source record no longer on the source.
		src := runs[c.ti].Source + t.Offset - runs[c.ti].Target
		if c.plan.Compacted {
			c.res.Compacted++
			return
		}
		c.res.Extra++
		c.note(Difference{Kind: KindExtra, SourceOffset: src, TargetOffset: t.Offset, Detail: "its source record is no longer on the source"})
		return
	}
	c.res.Extra++
	if s, ok := c.seen[c.hash(t)]; ok {
		src := s.src
		c.res.Duplicated++
		c.note(Difference{Kind: KindDuplicated, SourceOffset: src, TargetOffset: t.Offset, Detail: fmt.Sprintf("a second copy of source offset %d, not in the offset map", src)})
		return
	}
	c.note(Difference{Kind: KindExtra, SourceOffset: -1, TargetOffset: t.Offset, Detail: "a target record of no source record: not in the offset map"})
}

func (c *comparer) difference(kind string, src, tgt int64, detail string) {
	switch kind {
	case KindMissing:
		c.res.Missing++
	case KindAltered:
		c.res.Altered++
	}
	c.note(Difference{Kind: kind, SourceOffset: src, TargetOffset: tgt, Detail: detail})
}

func (c *comparer) note(d Difference) {
	if len(c.res.Differences) >= c.plan.MaxDifferences {
		c.res.diffsDropped++
		return
	}
	d.Topic, d.TargetTopic, d.Partition = c.plan.Topic, c.plan.TargetTopic, c.plan.Partition
	c.res.Differences = append(c.res.Differences, d)
}

// hash digests what is compared of a record: key, value (null told from
// empty), headers but the ignored ones, timestamp.
func (c *comparer) hash(r *kgo.Record) uint64 {
	var h maphash.Hash
	h.SetSeed(c.seed)
	num := func(v int64) {
		var n [8]byte
		for i := range n {
			n[i] = byte(v >> (8 * i))
		}
		_, _ = h.Write(n[:])
	}
	bytesField := func(b []byte) {
		if b == nil {
			num(-1)
			return
		}
		num(int64(len(b)))
		_, _ = h.Write(b)
	}
	bytesField(r.Key)
	bytesField(r.Value)
	for _, hd := range without(r.Headers, c.plan.Ignore) {
		bytesField([]byte(hd.Key))
		bytesField(hd.Value)
	}
	num(r.Timestamp.UnixMilli())
	return h.Sum64()
}

// remember keeps the hash of a matched record, for the dupWindow newest.
func (c *comparer) remember(t *kgo.Record, src int64) {
	k := c.hash(t)
	if len(c.ring) < dupWindow {
		c.ring = append(c.ring, k)
	} else {
		old := c.ring[c.ringAt]
		if s := c.seen[old]; s.n <= 1 {
			delete(c.seen, old)
		} else {
			s.n--
			c.seen[old] = s
		}
		c.ring[c.ringAt] = k
		c.ringAt = (c.ringAt + 1) % dupWindow
	}
	c.seen[k] = seenRecord{src: src, n: c.seen[k].n + 1}
}
