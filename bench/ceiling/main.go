// Command ceiling is the benchmark's throughput ceiling for a replicator:
// a bare franz-go consume-and-produce pipe with no features. It reads every
// partition of the given topics from the start and writes each record to
// the same partition of "<prefix><topic>" on the target (which must
// exist), with the same producer settings as kmirror, until SIGINT or
// SIGTERM; with -forward it passes the source's record batches through
// as they are instead. No progress is stored, no topic is created, nothing is
// retried, nothing is measured: whatever kmirror spends beyond this is the
// cost of its features.
//
//	ceiling -source 127.0.0.1:9092 -target 127.0.0.1:9192 -topics backlog -prefix pipe.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ceiling:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		source    = flag.String("source", "", "source bootstrap server")
		target    = flag.String("target", "", "target bootstrap server")
		topics    = flag.String("topics", "", "comma-separated source topics")
		prefix    = flag.String("prefix", "pipe.", "target topic prefix")
		linger    = flag.Duration("linger", 5*time.Millisecond, "producer linger")
		batch     = flag.Int("batch-bytes", 1<<20, "producer batch size")
		buffered  = flag.Int("buffered-bytes", 256<<20, "most bytes buffered in the producer")
		fetchMax  = flag.Int("fetch-max-bytes", 50<<20, "most bytes per fetch")
		fetchPart = flag.Int("fetch-max-partition-bytes", 10<<20, "most bytes per partition per fetch")
		fwd       = flag.Bool("forward", false, "pass record batches through as they are instead of decoding and producing records")
	)
	flag.Parse()
	if *source == "" || *target == "" || *topics == "" {
		return errors.New("-source, -target and -topics are required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *fwd {
		return forward(ctx, *source, *target, splitTopics(*topics), *prefix, int32(*fetchMax), int32(*fetchPart))
	}

	consumer, err := kgo.NewClient(
		kgo.SeedBrokers(*source),
		kgo.ConsumeTopics(strings.Split(*topics, ",")...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxBytes(int32(*fetchMax)),
		kgo.FetchMaxPartitionBytes(int32(*fetchPart)),
		kgo.FetchMaxWait(500*time.Millisecond),
	)
	if err != nil {
		return fmt.Errorf("creating the consumer: %w", err)
	}
	defer consumer.Close()
	producer, err := kgo.NewClient(
		kgo.SeedBrokers(*target),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchCompression(kgo.Lz4Compression()),
		kgo.ProducerBatchMaxBytes(int32(*batch)),
		kgo.ProducerLinger(*linger),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.MaxBufferedBytes(*buffered),
		kgo.MaxBufferedRecords(1_000_000),
	)
	if err != nil {
		return fmt.Errorf("creating the producer: %w", err)
	}
	defer producer.Close()

	failed := make(chan error, 1)
	promise := func(_ *kgo.Record, err error) {
		if err != nil && !errors.Is(err, context.Canceled) {
			select {
			case failed <- err:
			default:
			}
		}
	}
	for ctx.Err() == nil {
		fetches := consumer.PollRecords(ctx, 50_000)
		if ctx.Err() != nil {
			break
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.Canceled) {
				fmt.Fprintf(os.Stderr, "ceiling: fetching %s[%d]: %v\n", topic, p, err) // retried by the client
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			producer.Produce(ctx, &kgo.Record{
				Topic:     *prefix + r.Topic,
				Partition: r.Partition,
				Key:       r.Key,
				Value:     r.Value,
				Headers:   r.Headers,
				Timestamp: r.Timestamp,
			}, promise)
		})
		select {
		case err := <-failed:
			return fmt.Errorf("producing: %w", err)
		default:
		}
	}
	flushCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := producer.Flush(flushCtx); err != nil {
		return fmt.Errorf("flushing: %w", err)
	}
	return nil
}
