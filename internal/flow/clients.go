package flow

import (
	"context"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/membudget"
	"github.com/kmirror/kmirror/internal/ownership"
	"github.com/kmirror/kmirror/internal/topicsync"
)

// runClients are the connections of one run of a flow: the source
// consumer, the target producer of the data plane, and a target client of
// its own for bookkeeping (progress, checkpoints), so that its small writes
// never queue behind the data plane's buffered records. Both target
// clients write only while the lease allows.
type runClients struct {
	src, tgt, meta *kgo.Client
	stopAbort      chan struct{}
	// transactional says tgt is an exactly-once flow's transactional
	// producer, whose transactions end in the data plane.
	transactional bool
}

// dial builds the clients of a run under lease.
func (f *Flow) dial(lease *ownership.Lease) (*runClients, error) {
	src, err := kafka.NewClient(f.source, f.logger, f.consumerOpts()...)
	if err != nil {
		return nil, err
	}
	var tgt *kgo.Client
	if f.cfg.ExactlyOnce {
		// The brokers fence the transactional producer (see
		// replicate.Transactions): a writer that lost its partitions
		// cannot commit, whatever its lease says.
		tgt, err = kafka.NewClient(f.target, f.logger, append(f.producerOpts(),
			kgo.TransactionalID(f.transactionalID()),
			kgo.TransactionTimeout(f.transactionTimeout()))...)
	} else {
		tgt, err = kafka.NewGatedClient(f.target, f.logger, lease, f.producerOpts()...)
	}
	if err != nil {
		src.Close()
		return nil, err
	}
	meta, err := kafka.NewGatedClient(f.target, f.logger, lease,
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(0), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		src.Close()
		tgt.Close()
		return nil, err
	}
	c := &runClients{src: src, tgt: tgt, meta: meta, stopAbort: make(chan struct{}), transactional: f.cfg.ExactlyOnce}
	go c.abortWhenLost(lease)
	return c, nil
}

// transactionTimeout is the timeout of an exactly-once flow's target
// transactions: twice the ownership timeout, at least 10 s. A transaction
// of an instance that died is aborted by the brokers past it; its
// successor waits for that before it resumes.
func (f *Flow) transactionTimeout() time.Duration {
	return max(2*f.cfg.OwnershipTimeout, 10*time.Second)
}

// abortWhenLost fails the target clients' buffered records once the lease
// is lost: the gate refuses every write then, and the clients would retry
// them for ever, so the run could not stop.
func (c *runClients) abortWhenLost(lease *ownership.Lease) {
	select {
	case <-lease.Lost():
	case <-c.stopAbort:
		return
	}
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		if !c.transactional {
			c.tgt.UnsafeAbortBufferedRecords()
		}
		c.meta.UnsafeAbortBufferedRecords()
		select {
		case <-c.stopAbort:
			return
		case <-t.C:
		}
	}
}

func (c *runClients) close() {
	close(c.stopAbort)
	c.meta.Close()
	c.tgt.Close()
	c.src.Close()
}

// SetMemory sets the sizes of the flow's clients and the bound on its
// comparisons at restart from its part of the memory budget (see
// membudget.Split), in place of its configured sizes. It is called before
// the flow runs.
func (f *Flow) SetMemory(m membudget.Flow) {
	f.mem = m
	f.compares = nil
	if m.Comparisons > 0 {
		f.compares = make(chan struct{}, m.Comparisons)
	}
}

// Memory returns the flow's client sizes.
func (f *Flow) Memory() membudget.Flow { return f.mem }

func (f *Flow) consumerOpts() []kgo.Opt {
	m := f.mem
	opts := []kgo.Opt{
		kgo.FetchMaxBytes(m.FetchMaxBytes),
		kgo.FetchMaxPartitionBytes(m.FetchMaxPartitionBytes),
		kgo.FetchMaxWait(100 * time.Millisecond), // partitions added while a fetch waits on idle ones join the next fetch
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// Transaction markers are not copied, but the position must move
		// past them, or lag would never reach 0 after a transaction.
		kgo.KeepControlRecords(),
	}
	if f.cfg.Consumer.IsolationLevel == "read_committed" || f.cfg.ExactlyOnce {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	if m.MaxConcurrentFetches > 0 {
		opts = append(opts, kgo.MaxConcurrentFetches(m.MaxConcurrentFetches))
	}
	if m.MaxDecompressBatchBytes > 0 {
		// A batch that decompresses past it stops its partition (see
		// replicate's batchTooLarge) instead of taking the memory.
		opts = append(opts, kgo.MaxDecompressBatchBytes(m.MaxDecompressBatchBytes))
	}
	return opts
}

func (f *Flow) producerOpts() []kgo.Opt {
	p := f.cfg.Producer
	opts := []kgo.Opt{
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerLinger(p.Linger),
		kgo.ProducerBatchMaxBytesFn(f.batchMaxBytes),
		kgo.MaxBufferedBytes(int(f.mem.MaxBufferedBytes)),
		kgo.MaxBufferedRecords(f.mem.MaxBufferedRecords),
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

// batchMaxBytes is the largest batch the producer builds for target topic
// (before compression): batch_max_bytes, or the topic's max.message.bytes
// when topic sync set or found a larger one, so that a record the topic
// accepts, such as one at the source's limit with a provenance header
// added, is not refused by the client. The producer asks once per
// partition, when it first writes to it.
func (f *Flow) batchMaxBytes(topic string) int32 {
	limit := f.cfg.Producer.BatchMaxBytes
	if v, ok := f.maxMessage.Load(topic); ok {
		limit = max(limit, min(v.(int32), maxBatchBytes))
	}
	return limit
}

// learnMaxMessage reads the max.message.bytes of the target topics whose
// value is not known yet (a scale-out member that does not run topic
// sync), for batchMaxBytes, when the flow writes the provenance header.
// A failure leaves them unknown: batch_max_bytes applies.
func (r *run) learnMaxMessage(ctx context.Context, targets []string) {
	if !r.cfg.UsesProvenance() {
		return
	}
	var missing []string
	for _, t := range targets {
		if _, ok := r.maxMessage.Load(t); !ok {
			missing = append(missing, t)
		}
	}
	if len(missing) == 0 {
		return
	}
	configs, _, _ := topicsync.DescribeTopicConfigs(ctx, r.tgt, missing)
	for t, c := range configs {
		if n, err := strconv.ParseInt(c[topicsync.MaxMessageBytesKey], 10, 32); err == nil && n > 0 {
			r.maxMessage.Store(t, int32(n))
		}
	}
}

// maxBatchBytes is the largest batch size franz-go accepts.
const maxBatchBytes = 1 << 30

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
