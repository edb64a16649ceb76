// Package batchfetch fetches source partitions as whole record batches, the
// bytes the brokers serve, without decoding or decompressing them (which
// franz-go's consumer always does): what a replicator forwards as it is.
//
// One goroutine per source broker fetches the partitions that broker
// leads and hands the response to Poll; it fetches again once that
// response was polled, so at most one response per broker is buffered.
// Each partition's next offset moves past the whole batches returned;
// Seek moves it elsewhere. A partition whose fetch fails with an error the
// caller must decide on (its offset is out of range, it is not
// authorized) is returned with the error and paused until Seek or Resume.
package batchfetch

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

// Options configure a Fetcher.
type Options struct {
	// Client is the source cluster's client: its broker connections are
	// used.
	Client *kgo.Client
	// ReadCommitted fetches up to the last stable offset, with the
	// aborted transactions named.
	ReadCommitted bool
	// MaxWait is how long a broker may wait for data; zero means 500 ms.
	MaxWait time.Duration
	// MaxBytes and MaxPartitionBytes bound a response and each
	// partition's part of it; zero means 50 MiB and 10 MiB. A batch
	// larger than the bound is still returned whole (Kafka's rule).
	MaxBytes, MaxPartitionBytes int32
	// Logger receives fetch failures, throttled.
	Logger *slog.Logger
}

// Fetched is what one fetch returned for a partition.
type Fetched struct {
	Topic     string
	Partition int32
	// Offset is the offset the fetch asked from. The first batch may
	// begin before it (a batch is fetched whole).
	Offset int64
	// Batches are whole batches in offset order.
	Batches []batch.Batch
	// Aborted are the aborted transactions among them (read_committed).
	Aborted []batch.AbortedTxn
	// HighWatermark, LastStableOffset and LogStartOffset are the
	// partition's as the leader answered.
	HighWatermark, LastStableOffset, LogStartOffset int64
	// Err is an error the caller decides on; the partition is paused.
	Err error
}

type key struct {
	topic     string
	partition int32
}

// part is a partition being fetched.
type part struct {
	key    key
	next   int64
	paused bool
	gen    uint64 // bumped by Seek: a response to an older request is dropped
}

// Fetcher fetches partitions as record batches. Its methods are safe for
// concurrent use.
type Fetcher struct {
	opts Options

	mu       sync.Mutex
	parts    map[key]*part
	leaders  map[string]topicMeta
	metaAt   time.Time
	brokers  map[int32]context.CancelFunc // running broker loops
	changed  chan struct{}                // parts or leaders changed
	results  chan []Fetched
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	errorLog retry.Throttle
}

type topicMeta struct {
	id      [16]byte
	leaders map[int32]int32
}

// New returns a Fetcher; Close stops it.
func New(opts Options) *Fetcher {
	if opts.MaxWait <= 0 {
		opts.MaxWait = 500 * time.Millisecond
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 50 << 20
	}
	if opts.MaxPartitionBytes <= 0 {
		opts.MaxPartitionBytes = 10 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Fetcher{
		opts:     opts,
		parts:    map[key]*part{},
		leaders:  map[string]topicMeta{},
		brokers:  map[int32]context.CancelFunc{},
		changed:  make(chan struct{}, 1),
		results:  make(chan []Fetched),
		ctx:      ctx,
		cancel:   cancel,
		errorLog: retry.Throttle{Every: 10 * time.Second},
	}
	f.wg.Add(1)
	go f.manage()
	return f
}

// Close stops every fetch.
func (f *Fetcher) Close() {
	f.cancel()
	f.wg.Wait()
}

// Add fetches the partitions from the given offsets; partitions already
// fetched are left as they are.
func (f *Fetcher) Add(offsets map[string]map[int32]int64) {
	f.mu.Lock()
	for topic, ps := range offsets {
		for p, at := range ps {
			k := key{topic, p}
			if f.parts[k] == nil {
				f.parts[k] = &part{key: k, next: at}
			}
		}
	}
	f.mu.Unlock()
	f.notify()
}

// Remove stops fetching the partitions; a response in flight for them is
// dropped.
func (f *Fetcher) Remove(topic string, partitions ...int32) {
	f.mu.Lock()
	for _, p := range partitions {
		delete(f.parts, key{topic, p})
	}
	f.mu.Unlock()
	f.notify()
}

// Seek fetches a partition from offset next, and resumes it; a response
// in flight for it is dropped.
func (f *Fetcher) Seek(topic string, partition int32, next int64) {
	f.mu.Lock()
	if p := f.parts[key{topic, partition}]; p != nil {
		p.next, p.paused = next, false
		p.gen++
	}
	f.mu.Unlock()
	f.notify()
}

// Pause stops fetching a partition until Resume or Seek; a response in
// flight for it is dropped.
func (f *Fetcher) Pause(topic string, partition int32) {
	f.mu.Lock()
	if p := f.parts[key{topic, partition}]; p != nil {
		p.paused = true
		p.gen++
	}
	f.mu.Unlock()
}

// Resume fetches a paused partition again from where it was.
func (f *Fetcher) Resume(topic string, partition int32) {
	f.mu.Lock()
	if p := f.parts[key{topic, partition}]; p != nil {
		p.paused = false
	}
	f.mu.Unlock()
	f.notify()
}

// Poll returns the next response's partitions with batches or an error,
// waiting until there is one or ctx ends.
func (f *Fetcher) Poll(ctx context.Context) []Fetched {
	select {
	case <-ctx.Done():
		return nil
	case fs := <-f.results:
		return fs
	}
}

func (f *Fetcher) notify() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// metaRefresh bounds how long the partitions' leaders are trusted; a
// fetch error that names a leader change refreshes them at once.
const metaRefresh = 30 * time.Second

// manage keeps a fetch loop running for every broker that leads a
// partition to fetch, refreshing the leaders when partitions are added,
// when a loop asks, and every metaRefresh.
func (f *Fetcher) manage() {
	defer f.wg.Done()
	tick := time.NewTicker(metaRefresh)
	defer tick.Stop()
	for {
		f.refresh()
		select {
		case <-f.ctx.Done():
			return
		case <-f.changed:
		case <-tick.C:
			f.mu.Lock()
			f.metaAt = time.Time{}
			f.mu.Unlock()
		}
	}
}

// refresh reads the leaders of the topics fetched if any is unknown or
// they are stale, and starts a loop for each leader without one.
func (f *Fetcher) refresh() {
	f.mu.Lock()
	topics := map[string]bool{}
	stale := time.Since(f.metaAt) > metaRefresh
	for k := range f.parts {
		topics[k.topic] = true
		if tm, ok := f.leaders[k.topic]; !ok || tm.leaders[k.partition] < 0 {
			stale = true
		}
	}
	f.mu.Unlock()
	if stale && len(topics) > 0 {
		meta, err := f.readLeaders(topics)
		if err != nil {
			if f.errorLog.Allow() {
				f.opts.Logger.Warn("reading the source partitions' leaders failed; retrying", "err", err)
			}
			time.AfterFunc(time.Second, f.notify)
		}
		f.mu.Lock()
		for t, tm := range meta {
			f.leaders[t] = tm
		}
		if err == nil {
			f.metaAt = time.Now()
		}
		f.mu.Unlock()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, tm := range f.leaders {
		for _, leader := range tm.leaders {
			if _, ok := f.brokers[leader]; !ok && leader >= 0 {
				ctx, cancel := context.WithCancel(f.ctx)
				f.brokers[leader] = cancel
				f.wg.Add(1)
				go f.brokerLoop(ctx, leader)
			}
		}
	}
}

// readLeaders reads the IDs and partition leaders of topics.
func (f *Fetcher) readLeaders(topics map[string]bool) (map[string]topicMeta, error) {
	ctx, cancel := context.WithTimeout(f.ctx, 15*time.Second)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest()
	for t := range topics {
		mt := kmsg.NewMetadataRequestTopic()
		mt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, mt)
	}
	resp, err := req.RequestWith(ctx, f.opts.Client)
	if err != nil {
		return nil, fmt.Errorf("reading the source's metadata: %w", err)
	}
	out := map[string]topicMeta{}
	var errs []error
	for _, t := range resp.Topics {
		if t.Topic == nil {
			continue
		}
		if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
			errs = append(errs, fmt.Errorf("topic %s: %w", *t.Topic, err))
			continue
		}
		tm := topicMeta{id: t.TopicID, leaders: map[int32]int32{}}
		for _, p := range t.Partitions {
			tm.leaders[p.Partition] = p.Leader
			if p.ErrorCode != 0 {
				tm.leaders[p.Partition] = -1
			}
		}
		out[*t.Topic] = tm
	}
	return out, errors.Join(errs...)
}

// brokerLoop fetches the partitions broker leads until ctx ends or it
// leads none.
func (f *Fetcher) brokerLoop(ctx context.Context, broker int32) {
	defer f.wg.Done()
	var attempt int
	for ctx.Err() == nil {
		req, gens, ids := f.buildRequest(broker)
		if req == nil {
			f.mu.Lock()
			leads := false
			for _, tm := range f.leaders {
				for _, l := range tm.leaders {
					leads = leads || l == broker
				}
			}
			if !leads {
				// Under the lock refresh starts loops under: a broker
				// that leads again gets a new one.
				delete(f.brokers, broker)
				f.mu.Unlock()
				return
			}
			f.mu.Unlock()
			// Every partition it leads is paused: look again shortly.
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		resp, err := req.RequestWith(ctx, f.opts.Client.Broker(int(broker)))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			attempt++
			if f.errorLog.Allow() {
				f.opts.Logger.Warn("fetching from a source broker failed; retrying", "broker", broker, "err", err)
			}
			f.forgetLeaders()
			if !retry.Sleep(ctx, retry.Backoff{Base: 100 * time.Millisecond, Max: 5 * time.Second}.Delay(attempt)) {
				return
			}
			continue
		}
		attempt = 0
		out := f.take(resp, gens, ids)
		if len(out) == 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case f.results <- out:
		}
	}
}

// buildRequest returns a fetch of every unpaused partition broker leads,
// with each partition's generation, or nil if there is none.
func (f *Fetcher) buildRequest(broker int32) (*kmsg.FetchRequest, map[key]uint64, map[[16]byte]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	req := kmsg.NewPtrFetchRequest()
	req.ReplicaID = -1
	req.MaxWaitMillis = int32(f.opts.MaxWait / time.Millisecond)
	req.MinBytes = 1
	req.MaxBytes = f.opts.MaxBytes
	if f.opts.ReadCommitted {
		req.IsolationLevel = 1
	}
	req.SessionID, req.SessionEpoch = 0, -1 // no fetch session: every fetch names its partitions
	gens := map[key]uint64{}
	ids := map[[16]byte]string{}
	byTopic := map[string]int{}
	for k, p := range f.parts {
		tm, ok := f.leaders[k.topic]
		if p.paused || !ok || tm.leaders[k.partition] != broker {
			continue
		}
		i, ok := byTopic[k.topic]
		if !ok {
			rt := kmsg.NewFetchRequestTopic()
			rt.Topic, rt.TopicID = k.topic, tm.id
			req.Topics = append(req.Topics, rt)
			i = len(req.Topics) - 1
			byTopic[k.topic] = i
			ids[tm.id] = k.topic
		}
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset = k.partition, p.next
		rp.CurrentLeaderEpoch, rp.LastFetchedEpoch, rp.LogStartOffset = -1, -1, -1
		rp.PartitionMaxBytes = f.opts.MaxPartitionBytes
		req.Topics[i].Partitions = append(req.Topics[i].Partitions, rp)
		gens[k] = p.gen
	}
	if len(gens) == 0 {
		return nil, nil, nil
	}
	return req, gens, ids
}

// take turns a fetch response into what Poll returns, moving each
// partition's next offset past its whole batches. Partitions sought,
// paused or removed since the request are left out.
func (f *Fetcher) take(resp *kmsg.FetchResponse, gens map[key]uint64, ids map[[16]byte]string) []Fetched {
	var out []Fetched
	var refresh bool
	f.mu.Lock()
	defer func() {
		f.mu.Unlock()
		if refresh {
			f.forgetLeaders()
		}
	}()
	for _, t := range resp.Topics {
		topic := t.Topic
		if topic == "" {
			topic = ids[t.TopicID]
		}
		for _, rp := range t.Partitions {
			k := key{topic, rp.Partition}
			p := f.parts[k]
			gen, asked := gens[k]
			if p == nil || !asked || p.gen != gen || p.paused {
				continue
			}
			fd := Fetched{Topic: topic, Partition: rp.Partition, Offset: p.next,
				HighWatermark: rp.HighWatermark, LastStableOffset: rp.LastStableOffset, LogStartOffset: rp.LogStartOffset}
			if err := kerr.ErrorForCode(rp.ErrorCode); err != nil {
				if kerr.IsRetriable(err) {
					refresh = true // a leader change, most likely
					continue
				}
				fd.Err = fmt.Errorf("fetching %s[%d] at %d: %w", topic, rp.Partition, p.next, err)
				p.paused = true
				out = append(out, fd)
				continue
			}
			batches, _, err := batch.Split(rp.RecordBatches)
			if err != nil {
				fd.Err = fmt.Errorf("fetching %s[%d] at %d: %w", topic, rp.Partition, p.next, err)
				p.paused = true
			}
			// Batches wholly before the offset asked for (a compacted
			// log may return them) are none of the caller's.
			for len(batches) > 0 && batches[0].LastOffset() < p.next {
				batches = batches[1:]
			}
			if len(batches) == 0 && fd.Err == nil {
				continue
			}
			fd.Batches = batches
			for _, a := range rp.AbortedTransactions {
				fd.Aborted = append(fd.Aborted, batch.AbortedTxn{ProducerID: a.ProducerID, FirstOffset: a.FirstOffset})
			}
			if n := len(batches); n > 0 {
				p.next = batches[n-1].NextOffset()
			}
			out = append(out, fd)
		}
	}
	return out
}

// forgetLeaders has the next refresh read the leaders again.
func (f *Fetcher) forgetLeaders() {
	f.mu.Lock()
	f.metaAt = time.Time{}
	for t, tm := range f.leaders {
		for p := range tm.leaders {
			tm.leaders[p] = -1
		}
		f.leaders[t] = tm
	}
	f.mu.Unlock()
	f.notify()
}
