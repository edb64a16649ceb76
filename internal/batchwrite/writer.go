// Package batchwrite writes whole record batches, as fetched from a source
// cluster, to a target cluster's partitions without decoding them: each
// batch is stamped with an idempotent producer's ID, epoch and sequence
// (batch.Batch.Stamp) and sent in a ProduceRequest to its partition's
// leader with acks=all. franz-go's producer takes records, not batches,
// so this is a small producer of its own over the target client's broker
// connections.
//
// Each target partition has its own producer ID (InitProducerID without a
// transactional ID, asked for when the partition is first written and
// again after a sequence error), unless Options.Producer gives one for
// all; one batch in flight at a time and any number queued; one request carries the next batch of every partition
// ready on a broker. A batch is answered once, in the order it was queued
// for its partition: with the offset the target gave its first record,
// or with the error that failed it. A batch that fails fails every batch
// queued after it for the partition, unsent (errBehindFailed): nothing
// reaches a partition after an earlier batch of it failed.
package batchwrite

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/batch"
	"github.com/kmirror/kmirror/internal/retry"
)

// ErrBehindFailed fails a batch, unsent, because an earlier batch of its
// partition failed.
var ErrBehindFailed = errors.New("an earlier batch of the partition was not written")

// ErrClosed fails the batches still queued when the writer closes.
var ErrClosed = errors.New("batch writer closed")

// ErrSequence wraps the leader's refusal of a batch's producer state
// (out-of-order sequence, unknown producer, fenced epoch) under a producer
// given in Options: whether the batch is on the target is not known, and
// the partition cannot be written as that producer any more.
var ErrSequence = errors.New("the target refused the producer's sequence")

// Options configure a Writer.
type Options struct {
	// Client is the target cluster's client: its metadata and broker
	// connections are used.
	Client *kgo.Client
	// Timeout is how long a leader may hold a write for acks=all; zero
	// means 30 s.
	Timeout time.Duration
	// MaxRequestBytes bounds a request's batches (one batch per
	// partition, as many partitions as fit); zero means 16 MiB. A batch
	// larger than it is sent alone.
	MaxRequestBytes int
	// Producer, if set, is the producer every partition is written as
	// (its sequence per partition starting at 0), instead of one asked
	// for per partition: the caller can store it before anything is
	// written. A sequence error then fails with ErrSequence.
	Producer *batch.Producer
	// MaxBufferedBytes bounds the bytes of the batches queued or in
	// flight: Write waits while one more batch would pass it (a batch
	// larger than it is taken alone). Zero means 256 MiB.
	MaxBufferedBytes int64
	// Logger receives one line per retried failure, throttled.
	Logger *slog.Logger
}

// Writer writes record batches to target partitions. Its methods are safe
// for concurrent use.
type Writer struct {
	opts    Options
	leaders Leaders

	mu     sync.Mutex
	parts  map[key]*part
	wake   chan struct{} // a partition became ready
	closed bool
	// buffered counts the bytes of the batches written and not yet
	// answered; room is signalled when it shrinks or the writer closes.
	buffered int64
	room     *sync.Cond
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	retried  retry.Throttle
}

type key struct {
	topic     string
	partition int32
}

// item is one queued batch.
type item struct {
	b    batch.Batch
	gate Gate
	done func(base int64, err error)
}

// Gate says whether a queued batch may be sent now: send, wait (false,
// false), or fail it unsent with ErrBehindFailed and everything queued
// behind it (fail). A nil Gate always sends. It is asked from the
// writer's goroutine while the batch heads its partition's queue.
type Gate func() (send, fail bool)

// part is a target partition's queue and producer.
type part struct {
	key      key
	queue    []*item // in order; the head is in flight when busy
	busy     bool
	producer batch.Producer
	haveID   bool // producer was given by the cluster
	topicID  [16]byte
	seq      int32 // the head's sequence
	attempts int   // failed sends of the head
	notUntil time.Time
}

// New returns a Writer; Close stops it.
func New(opts Options) *Writer {
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.MaxRequestBytes <= 0 {
		opts.MaxRequestBytes = 16 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBufferedBytes <= 0 {
		opts.MaxBufferedBytes = 256 << 20
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Writer{
		opts:    opts,
		parts:   map[key]*part{},
		wake:    make(chan struct{}, 1),
		ctx:     ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
		retried: retry.Throttle{Every: 10 * time.Second},
	}
	w.room = sync.NewCond(&w.mu)
	go w.run()
	return w
}

// Write queues b for the target partition, first waiting while the
// batches not yet answered hold MaxBufferedBytes (the caller's fetches
// wait with it, as a producer's buffer holds back its caller). b is
// stamped in place when sent: the caller gives it up. done is called
// once, from the writer's goroutines, in queue order for the partition;
// if ctx ends while Write waits for room, with ctx's error, at once.
func (w *Writer) Write(ctx context.Context, topic string, partition int32, b batch.Batch, gate Gate, done func(base int64, err error)) {
	size := int64(len(b))
	w.mu.Lock()
	if w.buffered > 0 && w.buffered+size > w.opts.MaxBufferedBytes {
		stop := context.AfterFunc(ctx, func() {
			w.mu.Lock()
			w.room.Broadcast()
			w.mu.Unlock()
		})
		for !w.closed && ctx.Err() == nil && w.buffered > 0 && w.buffered+size > w.opts.MaxBufferedBytes {
			w.room.Wait()
		}
		stop()
		if err := ctx.Err(); err != nil && !w.closed {
			w.mu.Unlock()
			done(-1, err)
			return
		}
	}
	if w.closed {
		w.mu.Unlock()
		done(-1, ErrClosed)
		return
	}
	k := key{topic, partition}
	p := w.parts[k]
	if p == nil {
		p = &part{key: k}
		w.parts[k] = p
	}
	w.buffered += size
	p.queue = append(p.queue, &item{b: b, gate: gate, done: func(base int64, err error) {
		w.mu.Lock()
		w.buffered -= size
		w.room.Broadcast()
		w.mu.Unlock()
		done(base, err)
	}})
	w.mu.Unlock()
	w.signal()
}

// Producer returns the producer the partition is written as, and false
// if it has not been written yet.
func (w *Writer) Producer(topic string, partition int32) (batch.Producer, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if p := w.parts[key{topic, partition}]; p != nil && p.haveID {
		return p.producer, true
	}
	return batch.Producer{}, false
}

// Close fails every queued batch not yet sent with ErrClosed, waits for
// the requests in flight to be answered, and stops the writer.
func (w *Writer) Close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		<-w.done
		return
	}
	w.closed = true
	w.room.Broadcast()
	w.mu.Unlock()
	w.cancel()
	<-w.done
}

func (w *Writer) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// run sends ready batches until the writer closes.
func (w *Writer) run() {
	defer close(w.done)
	var inflight sync.WaitGroup
	defer inflight.Wait()
	tick := time.NewTicker(50 * time.Millisecond) // retries whose backoff ended
	defer tick.Stop()
	for {
		select {
		case <-w.ctx.Done():
			inflight.Wait()
			w.failQueued(ErrClosed)
			return
		case <-w.wake:
		case <-tick.C:
		}
		for _, req := range w.ready() {
			inflight.Add(1)
			go func() {
				defer inflight.Done()
				w.send(req)
			}()
		}
	}
}

// request is the batches of one ProduceRequest, to one leader.
type request struct {
	leader int32
	parts  []*part
}

// ready marks busy and returns, grouped by leader, the partitions whose
// head can be sent now. Partitions whose leader or producer ID is not
// known yet are looked up first.
func (w *Writer) ready() []*request {
	now := time.Now()
	w.mu.Lock()
	var cands, gated []*part
	for _, p := range w.parts {
		if !p.busy && len(p.queue) > 0 && !now.Before(p.notUntil) {
			if g := p.queue[0].gate; g != nil {
				send, fail := g()
				if fail {
					p.busy = true
					gated = append(gated, p)
					continue
				}
				if !send {
					continue // asked again on the next tick or wake
				}
			}
			p.busy = true
			cands = append(cands, p)
		}
	}
	w.mu.Unlock()
	for _, p := range gated {
		w.failed(p, ErrBehindFailed)
	}
	byLeader := map[int32]*request{}
	var out []*request
	sizes := map[*request]int{}
	for _, p := range cands {
		leader, err := w.prepare(p)
		if err != nil {
			if kerr.IsRetriable(err) || errors.Is(err, context.DeadlineExceeded) {
				w.retryLater(p, err)
			} else {
				w.failed(p, fmt.Errorf("%s[%d]: %w", p.key.topic, p.key.partition, err))
			}
			continue
		}
		r := byLeader[leader]
		size := len(p.queue[0].b)
		if r == nil || sizes[r]+size > w.opts.MaxRequestBytes {
			r = &request{leader: leader}
			byLeader[leader] = r
			out = append(out, r)
		}
		r.parts = append(r.parts, p)
		sizes[r] += size
	}
	return out
}

// prepare gives the busy partition p a producer ID if it has none, and
// returns its leader.
func (w *Writer) prepare(p *part) (int32, error) {
	ctx, cancel := context.WithTimeout(w.ctx, w.opts.Timeout)
	defer cancel()
	if !p.haveID && w.opts.Producer != nil {
		p.producer, p.haveID, p.seq = *w.opts.Producer, true, 0
	}
	if !p.haveID {
		id, epoch, err := initProducerID(ctx, w.opts.Client, w.opts.Timeout)
		if err != nil {
			return -1, fmt.Errorf("getting a producer ID: %w", err)
		}
		p.producer, p.haveID, p.seq = batch.Producer{ID: id, Epoch: epoch}, true, 0
	}
	leader, id, err := w.leaders.Lookup(ctx, w.opts.Client, p.key.topic, p.key.partition)
	p.topicID = id
	return leader, err
}

// send writes the head batch of each of r's partitions in one request and
// handles the answers.
func (w *Writer) send(r *request) {
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, int32(w.opts.Timeout/time.Millisecond)
	byTopic := map[string][]kmsg.ProduceRequestTopicPartition{}
	ids := map[string][16]byte{}
	var order []string
	for _, p := range r.parts {
		head := p.queue[0] // only this goroutine changes a busy partition's head
		head.b.Stamp(p.producer, p.seq, false)
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition = p.key.partition
		rp.Records = head.b
		if byTopic[p.key.topic] == nil {
			order = append(order, p.key.topic)
		}
		byTopic[p.key.topic] = append(byTopic[p.key.topic], rp)
		ids[p.key.topic] = p.topicID
	}
	for _, topic := range order {
		rt := kmsg.NewProduceRequestTopic()
		// Requests from version 13 on name topics by ID, and so do
		// their answers.
		rt.Topic, rt.TopicID, rt.Partitions = topic, ids[topic], byTopic[topic]
		req.Topics = append(req.Topics, rt)
	}
	ctx, cancel := context.WithTimeout(w.ctx, w.opts.Timeout+10*time.Second)
	defer cancel()
	resp, err := req.RequestWith(ctx, w.opts.Client.Broker(int(r.leader)))
	answers := map[key]kmsg.ProduceResponseTopicPartition{}
	if err == nil {
		names := map[[16]byte]string{}
		for topic, id := range ids {
			names[id] = topic
		}
		for _, t := range resp.Topics {
			topic := t.Topic
			if topic == "" {
				topic = names[t.TopicID]
			}
			for _, tp := range t.Partitions {
				answers[key{topic, tp.Partition}] = tp
			}
		}
	}
	for _, p := range r.parts {
		if err != nil {
			w.retryLater(p, err)
			continue
		}
		a, ok := answers[p.key]
		if !ok {
			w.retryLater(p, errUnanswered)
			continue
		}
		w.answered(p, a)
	}
	w.signal()
}

var errUnanswered = errors.New("the target did not answer the write for the partition")

// answered handles the leader's answer for the head batch of p.
func (w *Writer) answered(p *part, a kmsg.ProduceResponseTopicPartition) {
	err := kerr.ErrorForCode(a.ErrorCode)
	switch {
	case err == nil:
		w.mu.Lock()
		head := p.queue[0]
		p.queue = p.queue[1:]
		p.seq += head.b.NumRecords()
		p.busy, p.attempts = false, 0
		w.mu.Unlock()
		head.done(a.BaseOffset, nil)
	case errors.Is(err, kerr.OutOfOrderSequenceNumber), errors.Is(err, kerr.UnknownProducerID),
		errors.Is(err, kerr.InvalidProducerEpoch), errors.Is(err, kerr.ProducerFenced),
		errors.Is(err, kerr.DuplicateSequenceNumber):
		// The leader's producer state is not ours (lost records, expired
		// state, a successor fenced it): whether the batch is on the
		// target is not known. The partition goes on under a new
		// producer ID, if the writer picks them.
		if w.opts.Producer != nil {
			w.failed(p, fmt.Errorf("%s[%d]: %w: %w", p.key.topic, p.key.partition, ErrSequence, err))
			return
		}
		w.mu.Lock()
		p.haveID = false
		w.mu.Unlock()
		w.failed(p, fmt.Errorf("%s[%d]: %w", p.key.topic, p.key.partition, err))
	case kerr.IsRetriable(err):
		w.leaders.Forget(p.key.topic)
		w.retryLater(p, err)
	default:
		w.failed(p, fmt.Errorf("%s[%d]: %w", p.key.topic, p.key.partition, err))
	}
}

// retryLater sends the head batch of p again after a backoff, with the
// same sequence: if the failed attempt did reach the log, the leader
// answers the retry with that attempt's offset.
func (w *Writer) retryLater(p *part, err error) {
	w.leaders.Forget(p.key.topic)
	w.mu.Lock()
	p.attempts++
	delay := retry.Backoff{Base: 50 * time.Millisecond, Max: time.Second}.Delay(p.attempts)
	p.notUntil = time.Now().Add(delay)
	p.busy = false
	attempts := p.attempts
	w.mu.Unlock()
	if w.retried.Allow() {
		w.opts.Logger.Warn("writing a record batch to the target failed; retrying",
			"topic", p.key.topic, "partition", p.key.partition, "attempts", attempts, "err", err)
	}
}

// failed answers the head batch of p with err and every batch queued
// behind it with ErrBehindFailed.
func (w *Writer) failed(p *part, err error) {
	w.mu.Lock()
	queue := p.queue
	p.queue = nil
	p.busy, p.attempts = false, 0
	w.mu.Unlock()
	for i, it := range queue {
		if i == 0 {
			it.done(-1, err)
		} else {
			it.done(-1, ErrBehindFailed)
		}
	}
}

// failQueued fails every queued batch with err (the writer closed; no
// request is in flight).
func (w *Writer) failQueued(err error) {
	w.mu.Lock()
	parts := w.parts
	w.parts = map[key]*part{}
	w.mu.Unlock()
	for _, p := range parts {
		for _, it := range p.queue {
			it.done(-1, err)
		}
	}
}

// InitProducer asks the cluster for a new idempotent producer (an ID and
// its epoch), for Options.Producer.
func InitProducer(ctx context.Context, cl *kgo.Client, timeout time.Duration) (batch.Producer, error) {
	id, epoch, err := initProducerID(ctx, cl, timeout)
	if err != nil {
		return batch.Producer{}, fmt.Errorf("getting a producer ID: %w", err)
	}
	return batch.Producer{ID: id, Epoch: epoch}, nil
}

// initProducerID asks the cluster for a new idempotent producer ID.
func initProducerID(ctx context.Context, cl *kgo.Client, timeout time.Duration) (int64, int16, error) {
	req := kmsg.NewPtrInitProducerIDRequest()
	req.TransactionTimeoutMillis = int32(timeout / time.Millisecond)
	req.ProducerID, req.ProducerEpoch = -1, -1
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return -1, -1, err
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return -1, -1, err
	}
	return resp.ProducerID, resp.ProducerEpoch, nil
}
