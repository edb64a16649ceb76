package topicsync

import (
	"encoding/binary"
	"regexp"
	"strconv"
)

// MaxMessageBytesKey is the topic config that bounds the size of a record
// batch a broker accepts.
const MaxMessageBytesKey = "max.message.bytes"

// ProvenanceHeaderMaxBytes bounds the bytes the provenance header adds to
// a record (its key, its value and their length varints, see HeaderSize):
// room for the cluster IDs of a long path of clusters and the name of the
// writing flow. A flow that writes a larger header loses the guarantee
// that a record at the source's max.message.bytes fits on the target.
const ProvenanceHeaderMaxBytes = 1024

// recordGrowth bounds what a record's other fields grow by when a header
// is added: its length varint and its header count varint, a few bytes
// each.
const recordGrowth = 16

// lz4Block is the smallest LZ4 frame block size; framing costs a 4-byte
// size per block, and at most 15 bytes of frame header, end mark and
// checksum. A batch that LZ4 cannot shrink is stored in blocks as it is.
const (
	lz4Block = 64 << 10
	lz4Frame = 15
)

// HeaderSize is the bytes a record header with key and value takes in a
// record of a v2 record batch: the varint length of the key, the key, the
// varint length of the value and the value. The refused-record error of a
// flow with provenance names it for its provenance header.
func HeaderSize(key string, value []byte) int {
	return varintLen(int64(len(key))) + len(key) + varintLen(int64(len(value))) + len(value)
}

func varintLen(v int64) int {
	var buf [binary.MaxVarintLen64]byte
	return binary.PutVarint(buf[:], v)
}

// MaxMessageHeadroom is what a flow with provenance adds to the effective
// max.message.bytes of a source topic (source) for its target topic: the
// largest provenance header, the growth of the record's other fields, and
// LZ4 framing of a batch that size (the producer's default compression).
// A record that filled a batch at the source's limit then still fits on
// the target with its header.
func MaxMessageHeadroom(source int64) int64 {
	blocks := (max(source, 1) + lz4Block - 1) / lz4Block
	return ProvenanceHeaderMaxBytes + recordGrowth + lz4Frame + 4*blocks
}

// maxMessageLimit is the largest max.message.bytes kmirror sets: Kafka
// reads it as an int32.
const maxMessageLimit = 1<<31 - 1

// WithHeadroom returns desired, the explicit configs a target topic is to
// have, with max.message.bytes giving a flow with provenance room for its
// header: sourceMax, the source topic's effective max.message.bytes (its
// own or its broker's message.max.bytes), plus MaxMessageHeadroom. A
// target value already that large or larger (raised by hand) is in step
// and kept, so config sync neither lowers it nor flaps. desired is
// returned as it is when max.message.bytes is excluded or overridden
// (keep says so) or sourceMax is unknown; otherwise a copy is changed.
// target holds the target topic's explicit configs (nil before it
// exists).
//
// mutual says a flow with provenance also writes the other way, from the
// target's cluster into the source's (active-active, meshes): an existing
// target topic is then in step once it is as large as the source, so the
// two flows settle on one value (the first one's, with its room) instead
// of each adding room to the other's on every pass.
func WithHeadroom(desired map[string]string, sourceMax string, target map[string]string, keep, mutual bool) map[string]string {
	if keep {
		return desired
	}
	src, err := strconv.ParseInt(sourceMax, 10, 64)
	if err != nil || src <= 0 {
		return desired
	}
	want := min(src+MaxMessageHeadroom(src), maxMessageLimit)
	if mutual && target != nil {
		// The source topic is the target of a flow the other way, which
		// gave it this room: following it with room of our own would
		// raise both clusters' limits on every pass.
		want = src
	}
	out := make(map[string]string, len(desired)+1)
	for k, v := range desired {
		out[k] = v
	}
	if have, err := strconv.ParseInt(target[MaxMessageBytesKey], 10, 64); err == nil && have >= want {
		out[MaxMessageBytesKey] = target[MaxMessageBytesKey]
		return out
	}
	out[MaxMessageBytesKey] = strconv.FormatInt(want, 10)
	return out
}

// keepMaxMessage reports whether the config policy leaves max.message.bytes
// to the user: excluded, or forced by an override.
func (c configPolicy) keepMaxMessage() bool {
	if _, ok := c.overrides[MaxMessageBytesKey]; ok {
		return true
	}
	return c.excluded(MaxMessageBytesKey)
}

// KeepsMaxMessageBytes reports whether a flow with topic_config_exclude
// exclude and topic_config_overrides overrides leaves max.message.bytes
// to them rather than giving it room for the provenance header.
func KeepsMaxMessageBytes(exclude []*regexp.Regexp, overrides map[string]string) bool {
	return configPolicy{exclude: exclude, overrides: overrides}.keepMaxMessage()
}

// noteMaxMessage records in res the max.message.bytes target topic has
// once desired is applied, if explicitly set there (desired wins over the
// target's explicit configs, current).
func (s *Syncer) noteMaxMessage(res *Result, target string, desired, current map[string]string) {
	v, ok := desired[MaxMessageBytesKey]
	if !ok {
		v, ok = current[MaxMessageBytesKey]
	}
	if !ok {
		return
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil || n <= 0 {
		return
	}
	if res.MaxMessageBytes == nil {
		res.MaxMessageBytes = map[string]int32{}
	}
	res.MaxMessageBytes[target] = int32(n)
}
