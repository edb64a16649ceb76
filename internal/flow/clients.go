package flow

import (
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func (f *Flow) consumerOpts() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.FetchMaxBytes(f.cfg.Consumer.FetchMaxBytes),
		kgo.FetchMaxPartitionBytes(f.cfg.Consumer.FetchMaxPartitionBytes),
		kgo.FetchMaxWait(500 * time.Millisecond),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// Transaction markers are not copied, but the position must move
		// past them, or lag would never reach 0 after a transaction.
		kgo.KeepControlRecords(),
	}
	if f.cfg.Consumer.IsolationLevel == "read_committed" {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	return opts
}

func (f *Flow) producerOpts() []kgo.Opt {
	p := f.cfg.Producer
	opts := []kgo.Opt{
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(p.Linger),
		kgo.ProducerBatchMaxBytes(p.BatchMaxBytes),
		kgo.MaxBufferedBytes(int(p.MaxBufferedBytes)),
		kgo.MaxBufferedRecords(1_000_000),
		kgo.ProducerBatchCompression(compression(p.Compression)),
		// A target partition that lost acknowledged records (unclean
		// leader election) fails the idempotent sequence check; the
		// client then writes on under a new producer ID and calls this.
		kgo.ProducerOnDataLossDetected(func(topic string, partition int32) {
			if r := f.repl.Load(); r != nil {
				r.TargetDataLoss(topic, partition)
			}
		}),
	}
	if p.Acks == "leader" {
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	} else {
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	}
	return opts
}

func compression(name string) kgo.CompressionCodec {
	switch name {
	case "gzip":
		return kgo.GzipCompression()
	case "snappy":
		return kgo.SnappyCompression()
	case "zstd":
		return kgo.ZstdCompression()
	case "none":
		return kgo.NoCompression()
	default:
		return kgo.Lz4Compression()
	}
}
