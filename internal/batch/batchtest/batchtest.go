// Package batchtest builds Kafka record batches as a broker serves them,
// for tests of code that reads or forwards batches as bytes.
package batchtest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Spec describes a batch.
type Spec struct {
	Base          int64
	Codec         int8 // Kafka's numbering: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd
	Records       int  // at least 1
	Gaps          bool // every other offset missing, as compaction leaves
	Transactional bool
	Control       bool // an abort marker
	LogAppendTime bool
	Producer      int64 // 0: none (-1)
	// Tag distinguishes the records of batches built alike: it is in
	// every key and value.
	Tag string
}

var codecs = map[int8]kgo.CompressionCodec{
	1: kgo.GzipCompression(), 2: kgo.SnappyCompression(), 3: kgo.Lz4Compression(), 4: kgo.ZstdCompression(),
}

// Build returns the bytes of the batch s describes: its records have key
// "<tag>k<i>", a value repeating "<tag>v<i>-", two headers, timestamps a
// millisecond apart.
func Build(t testing.TB, s Spec) []byte {
	t.Helper()
	n := max(s.Records, 1)
	ts := time.UnixMilli(1_700_000_000_000)
	var recs []byte
	delta := int32(0)
	for i := range n {
		r := kmsg.Record{
			OffsetDelta:    delta,
			TimestampDelta: int32(i),
			Key:            fmt.Appendf(nil, "%sk%d", s.Tag, i),
			Value:          bytes.Repeat(fmt.Appendf(nil, "%sv%d-", s.Tag, i), 20),
			Headers:        []kmsg.Header{{Key: "h", Value: fmt.Appendf(nil, "%d", i)}, {Key: "h", Value: nil}},
		}
		if s.Control {
			r.Key, r.Value, r.Headers = []byte{0, 0, 0, 0}, []byte{0, 0, 0, 0, 0, 0}, nil
		}
		body := r.AppendTo(nil)
		r.Length = int32(len(body) - 1)
		recs = r.AppendTo(recs)
		if i < n-1 {
			delta++
			if s.Gaps {
				delta++
			}
		}
	}
	attrs := int16(s.Codec)
	if s.Codec != 0 {
		c, err := kgo.DefaultCompressor(codecs[s.Codec])
		if err != nil {
			t.Fatal(err)
		}
		out, _ := c.Compress(new(bytes.Buffer), recs)
		recs = append([]byte(nil), out...)
	}
	if s.LogAppendTime {
		attrs |= 0x08
	}
	if s.Transactional {
		attrs |= 0x10
	}
	if s.Control {
		attrs |= 0x20
	}
	pid := s.Producer
	if pid == 0 {
		pid = -1
	}
	lastDelta := delta
	if s.Gaps {
		lastDelta++ // the last record was removed too
	}
	b := kmsg.RecordBatch{
		FirstOffset:          s.Base,
		PartitionLeaderEpoch: 7,
		Magic:                2,
		Attributes:           attrs,
		LastOffsetDelta:      lastDelta,
		FirstTimestamp:       ts.UnixMilli(),
		MaxTimestamp:         ts.UnixMilli() + int64(n-1),
		ProducerID:           pid,
		ProducerEpoch:        3,
		FirstSequence:        100,
		NumRecords:           int32(n),
		Records:              recs,
	}
	out := b.AppendTo(nil)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12))
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], crc32.MakeTable(crc32.Castagnoli)))
	return out
}

// Decode returns the records of a record set as a consumer reads them,
// control records included.
func Decode(t testing.TB, set []byte) []*kgo.Record {
	t.Helper()
	fp, _ := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{Topic: "t", KeepControlRecords: true},
		&kmsg.FetchResponseTopicPartition{Partition: 0, HighWatermark: 1 << 40, RecordBatches: set}, kgo.DefaultDecompressor(), nil)
	if fp.Err != nil {
		t.Fatalf("decoding: %v", fp.Err)
	}
	return fp.Records
}
