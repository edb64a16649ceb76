package flow

import (
	"context"
	"time"

	"github.com/kmirror/kmirror/internal/batch"
	"github.com/kmirror/kmirror/internal/batchfetch"
	"github.com/kmirror/kmirror/internal/batchwrite"
	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/replicate"
	"github.com/kmirror/kmirror/internal/retry"
)

// forwarding returns the batch pass-through of a run (pass_through), and
// what stops it, or nil if the flow writes record by record. The batch
// writer's producer ID is asked for first, retried until ctx ends: it is
// stored as a writer of each partition before the partition's first
// write.
func (f *Flow) forwarding(ctx context.Context, cls *runClients) (*replicate.Forward, func()) {
	if !f.cfg.PassThrough {
		return nil, func() {}
	}
	var prod batch.Producer
	for attempt := 1; ; attempt++ {
		var err error
		prod, err = batchwrite.InitProducer(ctx, cls.tgt, f.target.RequestTimeout)
		if err == nil {
			break
		}
		wait := retry.Backoff{Base: time.Second, Max: 30 * time.Second}.Delay(attempt)
		f.logger.Error("cannot get a producer ID for passing record batches through; retrying", "retry_in", wait.String(), "err", err)
		if !retry.Sleep(ctx, wait) {
			return nil, func() {}
		}
	}
	fetcher := batchfetch.New(batchfetch.Options{
		Client:            cls.src,
		ReadCommitted:     f.cfg.Consumer.IsolationLevel == config.ReadCommitted,
		MaxBytes:          f.mem.FetchMaxBytes, // the flow's part of memory_limit, as the consumer's
		MaxPartitionBytes: f.mem.FetchMaxPartitionBytes,
		Logger:            f.logger,
	})
	writer := batchwrite.New(batchwrite.Options{Client: cls.tgt, Producer: &prod, MaxBufferedBytes: f.mem.MaxBufferedBytes, Logger: f.logger})
	codec, _ := batch.ParseCodec(f.cfg.Producer.Compression)
	f.logger.Info("passing record batches through: batches the target takes as they are are written without decoding or compressing them again",
		"producer_id", prod.ID, "compression", codec.String())
	return &replicate.Forward{
			Fetcher:  fetcher,
			Writer:   writer,
			Producer: progress.Producer{ID: prod.ID, Epoch: prod.Epoch},
			Target:   batch.Target{Codec: codec},
		}, func() {
			writer.Close()
			fetcher.Close()
		}
}
