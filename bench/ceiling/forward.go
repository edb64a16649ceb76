package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/batch"
	"github.com/kmirror/kmirror/internal/batchfetch"
	"github.com/kmirror/kmirror/internal/batchwrite"
)

// forward is the pipe with record batches passed through: every source
// batch is written as it is to the same partition of "<prefix><topic>"
// (batchfetch and batchwrite, no decoding, no compression), transaction
// markers and aborted batches dropped, until ctx ends. It is the ceiling
// of batch pass-through, as run is that of a replicator that decodes and
// re-encodes every record.
func forward(ctx context.Context, source, target string, topics []string, prefix string, fetchMax, fetchPart int32) error {
	src, err := kgo.NewClient(kgo.SeedBrokers(source))
	if err != nil {
		return fmt.Errorf("creating the source client: %w", err)
	}
	defer src.Close()
	dst, err := kgo.NewClient(kgo.SeedBrokers(target))
	if err != nil {
		return fmt.Errorf("creating the target client: %w", err)
	}
	defer dst.Close()

	mctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	starts, err := kadm.NewClient(src).ListStartOffsets(mctx, topics...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return fmt.Errorf("listing the source partitions: %w", err)
	}
	add := map[string]map[int32]int64{}
	starts.Each(func(o kadm.ListedOffset) {
		if add[o.Topic] == nil {
			add[o.Topic] = map[int32]int64{}
		}
		add[o.Topic][o.Partition] = o.Offset
	})

	f := batchfetch.New(batchfetch.Options{Client: src, MaxBytes: fetchMax, MaxPartitionBytes: fetchPart})
	defer f.Close()
	w := batchwrite.New(batchwrite.Options{Client: dst})
	defer w.Close()
	f.Add(add)

	var mu sync.Mutex
	var failed error
	done := func(_ int64, err error) {
		if err != nil && !errors.Is(err, batchwrite.ErrClosed) {
			mu.Lock()
			failed = errors.Join(failed, err)
			mu.Unlock()
		}
	}
	for ctx.Err() == nil {
		for _, fd := range f.Poll(ctx) {
			if fd.Err != nil {
				return fmt.Errorf("fetching: %w", fd.Err)
			}
			var aborted *batch.Aborted
			if len(fd.Aborted) > 0 {
				aborted = batch.NewAborted(fd.Aborted)
			}
			for _, b := range fd.Batches {
				if b.BaseOffset() < fd.Offset && fd.Offset > 0 {
					continue // fetched again whole: its records were written
				}
				if v, _ := batch.Plan(b, batch.Target{AnyCodec: true}, aborted); v == batch.Drop {
					continue
				}
				w.Write(ctx, prefix+fd.Topic, fd.Partition, b, nil, done)
			}
		}
		mu.Lock()
		err := failed
		mu.Unlock()
		if err != nil {
			return fmt.Errorf("writing: %w", err)
		}
	}
	return nil
}

// splitTopics splits a comma-separated list.
func splitTopics(s string) []string { return strings.Split(s, ",") }
