package replicate

import (
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/batchfetch"
)

// reader is what the replicator asks of its source besides the records
// themselves: franz-go's consumer, which decodes every record, or, for a
// flow that passes record batches through, batchfetch.
type reader interface {
	// add fetches the partitions from the given offsets.
	add(map[string]map[int32]kgo.Offset)
	// remove stops fetching the partitions and drops what is buffered
	// of them; purge also forgets the topics (a topic created again under
	// the same name is read afresh).
	remove(parts map[string][]int32, purge bool)
	pause(topic string, partition int32)
	resume(map[string][]int32)
	// seek fetches a partition from offset next and resumes it.
	seek(topic string, partition int32, next int64)
}

// consumerReader is franz-go's consumer.
type consumerReader struct{ cl *kgo.Client }

func (c consumerReader) add(offsets map[string]map[int32]kgo.Offset) {
	c.cl.AddConsumePartitions(offsets)
}

func (c consumerReader) remove(parts map[string][]int32, purge bool) {
	c.cl.RemoveConsumePartitions(parts)
	if purge {
		names := make([]string, 0, len(parts))
		for t := range parts {
			names = append(names, t)
		}
		c.cl.PurgeTopicsFromConsuming(names...)
	}
}

func (c consumerReader) pause(topic string, partition int32) {
	c.cl.PauseFetchPartitions(map[string][]int32{topic: {partition}})
}

func (c consumerReader) resume(parts map[string][]int32) { c.cl.ResumeFetchPartitions(parts) }

func (c consumerReader) seek(topic string, partition int32, next int64) {
	c.cl.SetOffsets(map[string]map[int32]kgo.EpochOffset{topic: {partition: {Epoch: -1, Offset: next}}})
	c.cl.ResumeFetchPartitions(map[string][]int32{topic: {partition}})
}

// batchReader is batchfetch.
type batchReader struct{ f *batchfetch.Fetcher }

func (b batchReader) add(offsets map[string]map[int32]kgo.Offset) {
	at := map[string]map[int32]int64{}
	for topic, ps := range offsets {
		at[topic] = map[int32]int64{}
		for p, o := range ps {
			at[topic][p] = o.EpochOffset().Offset
		}
	}
	b.f.Add(at)
}

func (b batchReader) remove(parts map[string][]int32, _ bool) {
	for topic, ps := range parts {
		b.f.Remove(topic, ps...)
	}
}

func (b batchReader) pause(topic string, partition int32) { b.f.Pause(topic, partition) }

func (b batchReader) resume(parts map[string][]int32) {
	for topic, ps := range parts {
		for _, p := range ps {
			b.f.Resume(topic, p)
		}
	}
}

func (b batchReader) seek(topic string, partition int32, next int64) {
	b.f.Seek(topic, partition, next)
}
