// Package batch reads and rewrites Kafka record batches (the v2 on-disk
// and on-wire format, magic 2) as bytes, without decoding or decompressing
// their records: what a replicator needs to forward a fetched batch to
// another cluster as it is.
//
// A fetched partition's record set is a run of whole batches, possibly
// followed by the first bytes of one more (a broker may cut a fetch
// response inside a batch). Split cuts it into batches; a Batch's methods
// read its header; Stamp rewrites the fields a producer owns (base
// offset, partition leader epoch, producer ID, epoch and sequence, the
// transactional bit) and recomputes the CRC, which covers everything from
// the attributes on, so the records' bytes are never touched.
package batch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// The v2 record batch header, by byte offset.
const (
	offBaseOffset     = 0  // int64
	offLength         = 8  // int32: the bytes after this field
	offLeaderEpoch    = 12 // int32
	offMagic          = 16 // int8
	offCRC            = 17 // uint32, Castagnoli, over [offAttributes:]
	offAttributes     = 21 // int16
	offLastOffsetDelt = 23 // int32
	offFirstTimestamp = 27 // int64
	offMaxTimestamp   = 35 // int64
	offProducerID     = 43 // int64
	offProducerEpoch  = 51 // int16
	offBaseSequence   = 53 // int32
	offNumRecords     = 57 // int32

	// HeaderSize is the size of a v2 batch header, records excluded.
	HeaderSize = 61

	// lengthPrefix is the part of a batch its length field does not
	// count: the base offset and the length itself.
	lengthPrefix = offLength + 4
)

// Attribute bits.
const (
	attrCodec         = 0x07
	attrLogAppendTime = 0x08
	attrTransactional = 0x10
	attrControl       = 0x20
)

// Codec is a batch's compression codec, as numbered by Kafka.
type Codec int8

// The codecs Kafka defines.
const (
	CodecNone   Codec = 0
	CodecGzip   Codec = 1
	CodecSnappy Codec = 2
	CodecLz4    Codec = 3
	CodecZstd   Codec = 4
)

// String returns the codec's name as Kafka's compression.type spells it.
func (c Codec) String() string {
	switch c {
	case CodecNone:
		return "none"
	case CodecGzip:
		return "gzip"
	case CodecSnappy:
		return "snappy"
	case CodecLz4:
		return "lz4"
	case CodecZstd:
		return "zstd"
	}
	return fmt.Sprintf("codec(%d)", int8(c))
}

// ParseCodec returns the codec a compression.type value names, and false
// for a value that names none ("producer", "source" or an unknown word).
func ParseCodec(s string) (Codec, bool) {
	for c := CodecNone; c <= CodecZstd; c++ {
		if c.String() == s {
			return c, true
		}
	}
	if s == "uncompressed" {
		return CodecNone, true
	}
	return 0, false
}

// ErrOldFormat is returned for a batch of the message formats before v2
// (magic 0 and 1), which only a broker older than Kafka 0.11 or a topic
// kept in the old format serves.
var ErrOldFormat = errors.New("record batch in a message format before v2 (magic 0 or 1)")

// ErrCorrupt is returned for bytes that cannot be a record batch.
var ErrCorrupt = errors.New("corrupt record batch")

// castagnoli is the CRC-32C table the v2 format uses.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Batch is one whole v2 record batch. Its methods read its header and
// assume the batch came from Split.
type Batch []byte

// Split cuts a fetched partition's record set into whole batches. rest is
// the start of a batch the response did not hold whole (empty if none):
// it is fetched again from its base offset. A batch in an older message
// format ends the split with ErrOldFormat (the batches before it are
// returned), and bytes that cannot be a batch with ErrCorrupt.
func Split(set []byte) (batches []Batch, rest []byte, err error) {
	for len(set) > 0 {
		if len(set) < lengthPrefix {
			return batches, set, nil
		}
		length := int32(binary.BigEndian.Uint32(set[offLength:]))
		if len(set) > offMagic && set[offMagic] != 2 {
			return batches, set, fmt.Errorf("at offset %d: %w", int64(binary.BigEndian.Uint64(set)), ErrOldFormat)
		}
		if length < HeaderSize-lengthPrefix {
			return batches, set, fmt.Errorf("at offset %d: length %d is shorter than a batch header: %w",
				int64(binary.BigEndian.Uint64(set)), length, ErrCorrupt)
		}
		size := lengthPrefix + int(length)
		if size > len(set) {
			return batches, set, nil
		}
		batches = append(batches, Batch(set[:size:size]))
		set = set[size:]
	}
	return batches, nil, nil
}

// BaseOffset is the offset of the batch's first record.
func (b Batch) BaseOffset() int64 { return int64(binary.BigEndian.Uint64(b[offBaseOffset:])) }

// LastOffset is the offset of the batch's last record (or of the last
// record it held before compaction removed some).
func (b Batch) LastOffset() int64 {
	return b.BaseOffset() + int64(int32(binary.BigEndian.Uint32(b[offLastOffsetDelt:])))
}

// NextOffset is the offset after the batch.
func (b Batch) NextOffset() int64 { return b.LastOffset() + 1 }

// LeaderEpoch is the epoch of the partition leader that wrote the batch
// (-1 if not known).
func (b Batch) LeaderEpoch() int32 { return int32(binary.BigEndian.Uint32(b[offLeaderEpoch:])) }

// NumRecords is the number of records the batch holds.
func (b Batch) NumRecords() int32 { return int32(binary.BigEndian.Uint32(b[offNumRecords:])) }

// Dense reports whether the batch holds a record at every offset from its
// base to its last, as a producer writes it: compaction leaves batches
// with holes, whose records a broker would not accept in one batch.
func (b Batch) Dense() bool {
	return int64(b.NumRecords()) == b.LastOffset()-b.BaseOffset()+1
}

func (b Batch) attributes() uint16 { return binary.BigEndian.Uint16(b[offAttributes:]) }

// Codec is the batch's compression codec.
func (b Batch) Codec() Codec { return Codec(b.attributes() & attrCodec) }

// LogAppendTime reports whether the batch's timestamps were set by the
// broker (message.timestamp.type LogAppendTime): every record's timestamp
// is then the batch's MaxTimestamp.
func (b Batch) LogAppendTime() bool { return b.attributes()&attrLogAppendTime != 0 }

// Transactional reports whether the batch was written in a transaction.
func (b Batch) Transactional() bool { return b.attributes()&attrTransactional != 0 }

// Control reports whether the batch is a control batch (a transaction
// marker).
func (b Batch) Control() bool { return b.attributes()&attrControl != 0 }

// FirstTimestamp is the batch's base timestamp, in Unix milliseconds.
func (b Batch) FirstTimestamp() int64 { return int64(binary.BigEndian.Uint64(b[offFirstTimestamp:])) }

// MaxTimestamp is the batch's greatest timestamp, in Unix milliseconds.
func (b Batch) MaxTimestamp() int64 { return int64(binary.BigEndian.Uint64(b[offMaxTimestamp:])) }

// ProducerID is the ID of the producer that wrote the batch (-1 if none).
func (b Batch) ProducerID() int64 { return int64(binary.BigEndian.Uint64(b[offProducerID:])) }

// ProducerEpoch is the epoch of the producer that wrote the batch.
func (b Batch) ProducerEpoch() int16 { return int16(binary.BigEndian.Uint16(b[offProducerEpoch:])) }

// BaseSequence is the sequence number of the batch's first record.
func (b Batch) BaseSequence() int32 { return int32(binary.BigEndian.Uint32(b[offBaseSequence:])) }

// CheckCRC reports ErrCorrupt if the batch's CRC does not match its bytes.
func (b Batch) CheckCRC() error {
	if got, want := crc32.Checksum(b[offAttributes:], castagnoli), binary.BigEndian.Uint32(b[offCRC:]); got != want {
		return fmt.Errorf("at offset %d: CRC %08x, computed %08x: %w", b.BaseOffset(), want, got, ErrCorrupt)
	}
	return nil
}

// Producer is the producer a batch is written as.
type Producer struct {
	ID    int64
	Epoch int16
}

// Stamp rewrites b in place as producer p writes it with base sequence
// seq: base offset 0 (the broker assigns offsets), no partition leader
// epoch, the producer's ID and epoch, and the transactional bit as the
// producer writes (a copy is in the copier's transaction, or in none,
// whatever the source's was). It recomputes the CRC. The records, their
// offset deltas, timestamps and the compression are kept.
func (b Batch) Stamp(p Producer, seq int32, transactional bool) {
	binary.BigEndian.PutUint64(b[offBaseOffset:], 0)
	binary.BigEndian.PutUint32(b[offLeaderEpoch:], 0xffffffff)
	attrs := b.attributes() &^ attrTransactional
	if transactional {
		attrs |= attrTransactional
	}
	binary.BigEndian.PutUint16(b[offAttributes:], attrs)
	binary.BigEndian.PutUint64(b[offProducerID:], uint64(p.ID))
	binary.BigEndian.PutUint16(b[offProducerEpoch:], uint16(p.Epoch))
	binary.BigEndian.PutUint32(b[offBaseSequence:], uint32(seq))
	binary.BigEndian.PutUint32(b[offCRC:], crc32.Checksum(b[offAttributes:], castagnoli))
}
