package main

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// recordSize is the size of every record value: a JSON event of exactly
// 1 KiB.
const recordSize = 1024

// tsHeader is the header carrying the time a record was handed to the
// producer, as 8 bytes of big-endian Unix nanoseconds.
const tsHeader = "bench.ts"

// eventGen makes JSON events that compress like real ones: ids, counters,
// timestamps, enumerations and free text from a small vocabulary, each
// value exactly recordSize bytes.
type eventGen struct {
	rng *rand.Rand
	seq uint64

	eventTypes, services, countries, tiers, devices, systems, currencies, statuses, tags []string
	categories, carriers, gateways, userAgents, sentences                                []string
}

func newEventGen(seed uint64) *eventGen {
	return &eventGen{
		rng:        rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		eventTypes: strings.Fields(eventTypeWords),
		services:   strings.Fields(serviceWords),
		countries:  strings.Fields(countryWords),
		tiers:      strings.Fields(tierWords),
		devices:    strings.Fields(deviceWords),
		systems:    strings.Fields(systemWords),
		currencies: strings.Fields(currencyWords),
		statuses:   strings.Fields(statusWords),
		tags:       strings.Fields(tagWords),
		categories: strings.Fields(categoryWords),
		carriers:   strings.Fields(carrierWords),
		gateways:   strings.Fields(gatewayWords),
		userAgents: strings.Split(userAgentLines, "\n"),
		sentences:  strings.Split(sentenceLines, "\n"),
	}
}

// Word lists of the events, as constants: fields of each string.
const (
	eventTypeWords = "order_created order_paid order_shipped cart_updated page_viewed login logout refund_requested review_posted search"
	serviceWords   = "checkout catalog accounts search payments shipping reviews"
	countryWords   = "DE FR US GB NL ES IT PL SE JP BR IN"
	tierWords      = "free silver gold platinum"
	deviceWords    = "mobile desktop tablet tv"
	systemWords    = "android ios windows macos linux"
	currencyWords  = "EUR USD GBP SEK PLN JPY"
	statusWords    = "pending confirmed failed cancelled complete"
	tagWords       = "promo newsletter mobile_app first_order vip gift express bulk b2b retargeted"
	categoryWords  = "shoes shirts jackets electronics kitchen garden toys books beauty sports"
	carrierWords   = "DHL UPS FedEx GLS DPD PostNL"
	gatewayWords   = "stripe adyen paypal klarna braintree"
)

// userAgentLines are the user agents of the events, one a line.
const userAgentLines = `Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Mobile Safari/537.36
Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1
Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36
Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15
Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0
shop-app/5.12.3 (Android 13; Samsung SM-S911B) okhttp/4.12.0`

// sentenceLines are the templates of the events' free text, one a line:
// %d becomes a number, %c a category, %r a carrier, %g a payment gateway,
// %n a country.
const sentenceLines = `Customer viewed %d products in category %c before adding them to the cart.
Payment authorised by the %g gateway after %d ms with risk score %d.
Order handed to carrier %r at warehouse %d, tracking number pending.
Coupon SAVE%d applied, discount of %d percent on eligible items.
Delivery estimate recalculated: %d business days to region %n.
Stock reserved for %d items, reservation expires in %d minutes.
Support ticket %d opened by the customer about a late delivery.
Loyalty account credited with %d points for order in category %c.
Invoice generated with tax rate %d percent and shipping fee waived.
Search for %c returned %d results, first click at position %d.`

// pick returns a random element of xs.
func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

// value returns a new JSON event of exactly recordSize bytes.
func (g *eventGen) value() []byte {
	r := g.rng
	g.seq++
	b := make([]byte, 0, recordSize)
	b = append(b, `{"event_id":"`...)
	b = appendHex(b, r.Uint64(), 16)
	b = append(b, '-')
	b = appendHex(b, r.Uint64(), 16)
	b = append(b, `","seq":`...)
	b = strconv.AppendUint(b, g.seq, 10)
	b = append(b, `,"type":"`...)
	b = append(b, pick(r, g.eventTypes)...)
	b = append(b, `","ts":"`...)
	b = time.Now().UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z")
	b = append(b, `","service":"`...)
	b = append(b, pick(r, g.services)...)
	b = append(b, `-service","schema_version":3,"user":{"id":`...)
	uid := r.IntN(5_000_000)
	b = strconv.AppendInt(b, int64(uid), 10)
	b = append(b, `,"name":"user_`...)
	b = strconv.AppendInt(b, int64(uid), 10)
	b = append(b, `","country":"`...)
	b = append(b, pick(r, g.countries)...)
	b = append(b, `","tier":"`...)
	b = append(b, pick(r, g.tiers)...)
	b = append(b, `","marketing_opt_in":`...)
	b = strconv.AppendBool(b, r.IntN(2) == 0)
	b = append(b, `},"session":{"id":"`...)
	b = appendHex(b, r.Uint64(), 16)
	b = append(b, `","device":"`...)
	b = append(b, pick(r, g.devices)...)
	b = append(b, `","os":"`...)
	b = append(b, pick(r, g.systems)...)
	b = append(b, `","app_version":"5.`...)
	b = strconv.AppendInt(b, int64(r.IntN(20)), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(r.IntN(10)), 10)
	b = append(b, `","ip":"10.`...)
	b = strconv.AppendInt(b, int64(r.IntN(256)), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(r.IntN(256)), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(r.IntN(256)), 10)
	b = append(b, `"},"order":{"id":"ORD-`...)
	b = strconv.AppendInt(b, int64(10_000_000+r.IntN(90_000_000)), 10)
	b = append(b, `","currency":"`...)
	b = append(b, pick(r, g.currencies)...)
	b = append(b, `","status":"`...)
	b = append(b, pick(r, g.statuses)...)
	b = append(b, `","items":[`...)
	n := 1 + r.IntN(3)
	total := 0
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		cents := 99 + r.IntN(20_000)
		qty := 1 + r.IntN(4)
		total += cents * qty
		b = append(b, `{"sku":"SKU-`...)
		b = strconv.AppendInt(b, int64(r.IntN(100_000)), 10)
		b = append(b, `","qty":`...)
		b = strconv.AppendInt(b, int64(qty), 10)
		b = append(b, `,"unit_price":`...)
		b = appendCents(b, cents)
		b = append(b, '}')
	}
	b = append(b, `],"total":`...)
	b = appendCents(b, total)
	b = append(b, `},"tags":["`...)
	b = append(b, pick(r, g.tags)...)
	b = append(b, `","`...)
	b = append(b, pick(r, g.tags)...)
	b = append(b, `"],"context":{"user_agent":"`...)
	b = append(b, pick(r, g.userAgents)...)
	b = append(b, `","page":"/products/`...)
	b = append(b, pick(r, g.categories)...)
	b = append(b, `/SKU-`...)
	b = strconv.AppendInt(b, int64(r.IntN(100_000)), 10)
	b = append(b, `","referrer":"https://www.example-search.com/"},"note":"`...)
	const closing = `"}`
	for {
		s := g.sentence()
		if len(b)+len(s)+1+len(closing) > recordSize {
			break
		}
		b = append(b, s...)
		b = append(b, ' ')
	}
	for len(b)+len(closing) < recordSize {
		b = append(b, ' ')
	}
	return append(b, closing...)
}

// sentence fills in a random template of sentenceLines.
func (g *eventGen) sentence() []byte {
	r := g.rng
	t := pick(r, g.sentences)
	out := make([]byte, 0, 2*len(t))
	for {
		i := strings.IndexByte(t, '%')
		if i < 0 || i+1 >= len(t) {
			return append(out, t...)
		}
		out = append(out, t[:i]...)
		switch t[i+1] {
		case 'd':
			out = strconv.AppendInt(out, int64(r.IntN(500)), 10)
		case 'c':
			out = append(out, pick(r, g.categories)...)
		case 'r':
			out = append(out, pick(r, g.carriers)...)
		case 'g':
			out = append(out, pick(r, g.gateways)...)
		case 'n':
			out = append(out, pick(r, g.countries)...)
		}
		t = t[i+2:]
	}
}

// key returns a record key: the user a record is about.
func (g *eventGen) key() []byte {
	return strconv.AppendInt([]byte("user-"), int64(g.rng.IntN(5_000_000)), 10)
}

func appendHex(b []byte, v uint64, digits int) []byte {
	const hex = "0123456789abcdef"
	for i := digits - 1; i >= 0; i-- {
		b = append(b, hex[(v>>(4*uint(i)))&0xf])
	}
	return b
}

func appendCents(b []byte, cents int) []byte {
	b = strconv.AppendInt(b, int64(cents/100), 10)
	b = append(b, '.')
	if cents%100 < 10 {
		b = append(b, '0')
	}
	return strconv.AppendInt(b, int64(cents%100), 10)
}

// stamp sets the record's produce-time header to now.
func stamp(r *kgo.Record, now time.Time) {
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(now.UnixNano()))
	r.Headers = []kgo.RecordHeader{{Key: tsHeader, Value: ts[:]}}
}

// producedAt reads the produce time from a record's header.
func producedAt(r *kgo.Record) (time.Time, bool) {
	for _, h := range r.Headers {
		if h.Key == tsHeader && len(h.Value) == 8 {
			return time.Unix(0, int64(binary.BigEndian.Uint64(h.Value))), true
		}
	}
	return time.Time{}, false
}

// producerOpts are the bench producers' settings, kmirror's producer
// defaults: lz4, 1 MiB batches, 5 ms linger, acks=all, idempotent.
func producerOpts(bootstrap string) []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(bootstrap),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchCompression(kgo.Lz4Compression()),
		kgo.ProducerBatchMaxBytes(1 << 20),
		kgo.ProducerLinger(5 * time.Millisecond),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.MaxBufferedBytes(256 << 20),
		kgo.MaxBufferedRecords(1 << 20),
	}
}

// partitionRef names one partition.
type partitionRef struct {
	topic     string
	partition int32
}

// partitionsOf lists every partition of the topics, each with n
// partitions, interleaved topic by topic so that round-robin writes spread
// over topics too.
func partitionsOf(topics []string, n int32) []partitionRef {
	var out []partitionRef
	for p := range n {
		for _, t := range topics {
			out = append(out, partitionRef{t, p})
		}
	}
	return out
}

// produceErrors keeps the first error of asynchronous produces.
type produceErrors struct {
	failed atomic.Bool
	mu     sync.Mutex
	err    error
}

func (e *produceErrors) promise(_ *kgo.Record, err error) {
	if err == nil || e.failed.Load() {
		return
	}
	e.mu.Lock()
	if e.err == nil {
		e.err = err
		e.failed.Store(true)
	}
	e.mu.Unlock()
}

func (e *produceErrors) get() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// produceCount writes n fresh events round-robin over parts and waits until
// all are acknowledged. It returns how long that took.
func produceCount(ctx context.Context, cl *kgo.Client, gen *eventGen, parts []partitionRef, n int64) (time.Duration, error) {
	var errs produceErrors
	begin := time.Now()
	for i := range n {
		if errs.failed.Load() {
			break
		}
		p := parts[i%int64(len(parts))]
		r := &kgo.Record{Topic: p.topic, Partition: p.partition, Key: gen.key(), Value: gen.value()}
		stamp(r, time.Now())
		cl.Produce(ctx, r, errs.promise)
	}
	if err := cl.Flush(ctx); err != nil {
		return 0, fmt.Errorf("flushing: %w", err)
	}
	if err := errs.get(); err != nil {
		return 0, fmt.Errorf("producing: %w", err)
	}
	return time.Since(begin), nil
}

// producePool writes n records cycling over a pool of pre-made events, so
// that the producer, not event generation, is measured. It returns how long
// writing and acknowledging all of them took.
func producePool(ctx context.Context, cl *kgo.Client, pool [][]byte, keys [][]byte, parts []partitionRef, n int64) (time.Duration, error) {
	var errs produceErrors
	begin := time.Now()
	for i := range n {
		if errs.failed.Load() {
			break
		}
		p := parts[i%int64(len(parts))]
		j := i % int64(len(pool))
		r := &kgo.Record{Topic: p.topic, Partition: p.partition, Key: keys[j], Value: pool[j]}
		stamp(r, time.Now())
		cl.Produce(ctx, r, errs.promise)
	}
	if err := cl.Flush(ctx); err != nil {
		return 0, fmt.Errorf("flushing: %w", err)
	}
	if err := errs.get(); err != nil {
		return 0, fmt.Errorf("producing: %w", err)
	}
	return time.Since(begin), nil
}

// rateProducer writes events round-robin over a set of partitions at a
// fixed rate until stopped.
type rateProducer struct {
	cl       *kgo.Client
	parts    []partitionRef
	perSec   float64
	gen      *eventGen
	produced atomic.Int64
	errs     produceErrors
}

// run produces at the fixed rate until ctx ends or for d, if d > 0, then
// waits for every record to be acknowledged. Records handed to the
// producer are written even if ctx ends meanwhile.
func (rp *rateProducer) run(ctx context.Context, d time.Duration) error {
	produceCtx := context.WithoutCancel(ctx)
	begin := time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var sent int64
	for {
		now := time.Now()
		elapsed := now.Sub(begin)
		if d > 0 && elapsed >= d {
			break
		}
		due := int64(elapsed.Seconds() * rp.perSec)
		for ; sent < due && !rp.errs.failed.Load(); sent++ {
			p := rp.parts[sent%int64(len(rp.parts))]
			r := &kgo.Record{Topic: p.topic, Partition: p.partition, Key: rp.gen.key(), Value: rp.gen.value()}
			stamp(r, time.Now())
			rp.cl.Produce(produceCtx, r, rp.errs.promise)
			rp.produced.Add(1)
		}
		if err := rp.errs.get(); err != nil {
			return fmt.Errorf("producing: %w", err)
		}
		select {
		case <-ctx.Done():
			d = -1
		case <-tick.C:
		}
		if d < 0 {
			break
		}
	}
	flushCtx, cancel := context.WithTimeout(produceCtx, 60*time.Second)
	defer cancel()
	if err := rp.cl.Flush(flushCtx); err != nil {
		return fmt.Errorf("flushing: %w", err)
	}
	return rp.errs.get()
}

// latencyProbe consumes topics on the target and records, for each record
// produced at or after from, the time from its produce-time header to its
// arrival.
type latencyProbe struct {
	cl   *kgo.Client
	from time.Time
	seen atomic.Int64 // every record consumed, measured or not

	mu    sync.Mutex
	lat   []time.Duration
	worst map[int64]time.Duration // largest latency by second of produce time since from
}

// If committed, the probe reads read_committed: a record written in a
// transaction arrives once its transaction committed.
func newLatencyProbe(bootstrap string, topics []string, from time.Time, committed bool) (*latencyProbe, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(bootstrap),
		kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(500 * time.Millisecond),
		kgo.MetadataMinAge(500 * time.Millisecond),
	}
	if committed {
		opts = append(opts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("creating the latency consumer: %w", err)
	}
	return &latencyProbe{cl: cl, from: from, worst: map[int64]time.Duration{}}, nil
}

// run consumes until ctx ends.
func (lp *latencyProbe) run(ctx context.Context) {
	defer lp.cl.Close()
	for ctx.Err() == nil {
		fetches := lp.cl.PollRecords(ctx, 10_000)
		now := time.Now()
		lp.mu.Lock()
		fetches.EachRecord(func(r *kgo.Record) {
			lp.seen.Add(1)
			if at, ok := producedAt(r); ok && !at.Before(lp.from) {
				d := now.Sub(at)
				lp.lat = append(lp.lat, d)
				sec := int64(at.Sub(lp.from) / time.Second)
				lp.worst[sec] = max(lp.worst[sec], d)
			}
		})
		lp.mu.Unlock()
	}
}

// latencies returns the measured latencies, sorted.
func (lp *latencyProbe) latencies() []time.Duration {
	lp.mu.Lock()
	out := slices.Clone(lp.lat)
	lp.mu.Unlock()
	slices.Sort(out)
	return out
}

// worstSeconds returns the n seconds of the measurement (counted from its
// start, by produce time) with the largest latencies, worst first.
func (lp *latencyProbe) worstSeconds(n int) []secondMax {
	lp.mu.Lock()
	out := make([]secondMax, 0, len(lp.worst))
	for s, d := range lp.worst {
		out = append(out, secondMax{s, d})
	}
	lp.mu.Unlock()
	slices.SortFunc(out, func(a, b secondMax) int { return cmp.Compare(b.max, a.max) })
	return out[:min(n, len(out))]
}

// secondMax is the largest latency of records produced in one second.
type secondMax struct {
	second int64
	max    time.Duration
}

// waitSeen waits until the probe has consumed at least n records.
func (lp *latencyProbe) waitSeen(ctx context.Context, n int64, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for lp.seen.Load() < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("latency consumer saw %d of %d records: %w", lp.seen.Load(), n, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// percentile returns the p-th percentile (0 < p <= 100) of sorted values,
// nearest-rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(float64(len(sorted))*p/100+0.999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}
