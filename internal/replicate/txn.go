package replicate

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/progress"
)

// ErrTransactionAborted is returned by Run when a transaction of an
// exactly-once replicator was aborted: every record it wrote since its
// last commit is invisible to read_committed consumers, and the positions
// in memory are past what is stored. The caller starts a new run from the
// stored positions.
var ErrTransactionAborted = errors.New("transaction aborted")

// Transactions make a Replicator exactly-once (Options.Transactions).
//
// The target client must be transactional (kgo.TransactionalID) and the
// progress store must write with it: every record copied since the last
// commit, the positions and offset-map runs that cover them, and an
// offset commit to the ownership group are written in one transaction,
// committed every Interval or once MaxBytes were handed to the producer.
//
// The offset commit carries the member ID and generation this instance
// holds its partitions in. The group coordinator refuses it once the
// group moved to a generation without this member (it was paused, cut
// off or too slow to heartbeat, and its partitions were given to
// another), and the transaction is then aborted: the brokers, not this
// process, keep a writer that lost its partitions from ever committing a
// record of theirs. A successor reads the progress topic waiting for
// the transactions open on it (progress.Store.Stable), so it starts
// exactly after the last committed record.
type Transactions struct {
	// ID is the target client's transactional ID.
	ID string
	// Group is the ownership group on the target.
	Group string
	// Member returns the member ID and generation under which this
	// instance last held its partitions, and whether it holds them still
	// by its own reckoning (its lease). The group coordinator decides
	// whether they are current; holding only says whether a refusal may
	// be a rebalance this member takes part in, worth trying again.
	Member   func() (memberID string, generation int32, holding bool)
	Interval time.Duration
	MaxBytes int64
}

// txnState is the state of an exactly-once replicator's transactions.
type txnState struct {
	opts *Transactions
	// mu is held shared while records are handed to the producer, and
	// exclusively while the open transaction ends: records handed to the
	// producer belong to the transaction open at that moment.
	mu sync.RWMutex
	// bytes and records count what was handed to the producer in the
	// open transaction; full asks for a commit before the interval.
	bytes, records atomic.Int64
	full           chan struct{}
	// doubt says a write of the open transaction failed in a way that
	// may have left it on the target, or landed after an earlier record
	// of its partition failed: the transaction must not commit.
	doubt atomic.Pointer[error]
	// failed is set once a transaction was aborted; the replicator then
	// only stops.
	failed atomic.Pointer[error]
	began  time.Time
	// firstAck is when the first record of the open transaction was
	// answered (Unix nanoseconds, 0 before). stall is how long the last
	// commit held records back after its flush, plus how long the first
	// writes of the transaction it ended waited for their answer: the
	// time a commit costs the copy (see catchUpSpacing).
	firstAck atomic.Int64
	stall    time.Duration
	// topicID is the progress topic's ID, once looked up (commit path).
	topicID [16]byte
	// written are the positions stored in the open transaction (under
	// progressMu); they are the partitions' committed positions once it
	// commits.
	written []stored
}

// lock takes mu exclusively, unless ctx ends first; it reports whether it
// did. A lock taken after ctx ended is let go at once.
func (t *txnState) lock(ctx context.Context) bool {
	locked := make(chan struct{})
	go func() {
		t.mu.Lock()
		close(locked)
	}()
	select {
	case <-locked:
		return true
	case <-ctx.Done():
		go func() {
			<-locked
			t.mu.Unlock()
		}()
		return false
	}
}

// stored is a position written to the progress store.
type stored struct {
	p   *partition
	pos progress.Position
}

// handOff runs fn, which hands records to the producer, in the open
// transaction (at once without transactions).
func (r *Replicator) handOff(size int64, fn func()) {
	t := r.txn
	if t == nil {
		fn()
		return
	}
	t.mu.RLock()
	fn()
	t.mu.RUnlock()
	t.records.Add(1)
	if t.bytes.Add(size) >= t.opts.MaxBytes {
		select {
		case t.full <- struct{}{}:
		default:
		}
	}
}

// txnFailed reports whether the replicator's transaction was aborted: it
// only stops then, and the records it still fails are not news.
func (r *Replicator) txnFailed() bool { return r.txn != nil && r.txn.failed.Load() != nil }

// inDoubt notes that a write may be on the target although it did not
// succeed: with transactions, the open transaction is aborted instead of
// committed.
func (r *Replicator) inDoubt(err error) {
	if r.txn != nil {
		r.txn.doubt.CompareAndSwap(nil, &err)
	}
}

// catchUpSpacing is, while a replicator catches up, the largest gap
// between the end of a commit and the start of the next, as a multiple of
// what a commit costs the copy (txnState.stall): records are then handed
// to the producer about nineteen twentieths of the time. Each commit
// stops the flow of records until every record in flight was answered,
// and the first writes of the next transaction wait while the brokers
// write the previous one's markers (tens of milliseconds together), which
// a transaction every 100 ms would make a large share of the time.
const catchUpSpacing = 19

// maxCatchUpSpacing bounds that time, well inside the transaction timeout.
const maxCatchUpSpacing = 2 * time.Second

// txnLoop commits the open transaction every Interval, or sooner when it
// is full, until ctx ends or a commit fails. While the source partitions
// are further ahead than the flow copies in two gaps at the rate of the
// last cycle (catching up after a start or an outage), commits are spaced
// by a gap that doubles up to catchUpSpacing times their cost: then the
// copy, not the latency of each record, is what matters.
func (r *Replicator) txnLoop(ctx context.Context) error {
	t := r.txn
	timer := time.NewTimer(t.opts.Interval)
	defer timer.Stop()
	var idleListed, earliest, lastBegan time.Time
	gap := t.opts.Interval
	for {
		spaced := true
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-t.full:
			if t.bytes.Load() < t.opts.MaxBytes {
				continue // sent for a transaction already committed
			}
		case <-r.storeNow:
			spaced = false
		}
		if wait := time.Until(earliest); spaced && wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
		if r.opts.Provenance != nil && time.Since(idleListed) >= idleEndInterval {
			idleListed = time.Now()
			r.noteIdleEnds(ctx)
		}
		// A commit is not cut short by ctx: a transaction whose end is
		// unknown can only be aborted. It is bounded like the last one.
		records := t.records.Load()
		began := time.Now()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drainTimeout)
		err := r.commit(cctx, nil)
		cancel()
		if err != nil {
			return err
		}
		// Catching up: more is left to copy than the records the last
		// cycle copied per second would copy in twice the gap. The gap
		// doubles from the interval at each such commit, up to the
		// spacing, so that a short stall of a steady flow lengthens one
		// gap a little, and a backlog reaches the full spacing within a
		// few commits.
		earliest = time.Time{}
		spacing := max(min(catchUpSpacing*t.stall, maxCatchUpSpacing), t.opts.Interval)
		if cycle := time.Since(lastBegan); records > 0 && !lastBegan.IsZero() &&
			float64(r.behind()) > float64(records)/cycle.Seconds()*(2*gap).Seconds() {
			gap = min(2*gap, spacing)
			earliest = time.Now().Add(gap)
		} else {
			gap = t.opts.Interval
		}
		lastBegan = began
		// A record handed to the producer just after a commit began is
		// committed by the next one: the next begins one interval, less
		// the time this one took (at most half), after this one began,
		// so that no record waits much longer than one interval for its
		// commit to end. Records are handed for at least half an
		// interval between two commits: commits slower than the interval
		// do not follow each other with nothing in between.
		took := time.Since(began)
		timer.Reset(max(time.Until(began.Add(t.opts.Interval-min(took, t.opts.Interval/2))), t.opts.Interval/2))
	}
}

// behind returns how many source records the partitions' committed
// positions are behind the end offsets last seen.
func (r *Replicator) behind() int64 {
	var n int64
	r.each(func(p *partition) {
		hwm := p.hwm.Load()
		p.mu.Lock()
		next := p.committed.SourceNext
		p.mu.Unlock()
		if hwm > next {
			n += hwm - next
		}
	})
	return n
}

// commit ends the open transaction with everything handed to the producer
// so far, the positions of every partition (those stopping selects stored
// Stopped) and the fencing offset commit, and begins the next one. If it
// cannot commit, it aborts the transaction and returns an error wrapping
// ErrTransactionAborted; the replicator is then failed.
func (r *Replicator) commit(ctx context.Context, stopping func(*partition) bool) error {
	r.txn.mu.Lock()
	defer r.txn.mu.Unlock()
	r.progressMu.Lock()
	defer r.progressMu.Unlock()
	return r.commitLocked(ctx, stopping)
}

// commitLocked is commit with txn.mu and progressMu held.
func (r *Replicator) commitLocked(ctx context.Context, stopping func(*partition) bool) error {
	t := r.txn
	if errp := t.failed.Load(); errp != nil {
		return *errp
	}
	err := r.tryCommit(ctx, stopping)
	if err == nil {
		return nil
	}
	r.abort(err)
	return *t.failed.Load()
}

// tryCommit is commitLocked without the abort.
func (r *Replicator) tryCommit(ctx context.Context, stopping func(*partition) bool) error {
	t := r.txn
	// The ownership group joins a transaction that has records while
	// they are flushed, a round trip saved. (Not an empty one: nothing
	// would end it.) The offset commit comes after the positions, see
	// fence.
	var added chan error
	if t.records.Load() > 0 {
		added = make(chan error, 1)
		go func() { added <- r.addOffsets(ctx) }()
		defer func() {
			if added == nil {
				return
			}
			if err := <-added; err != nil { // the transaction is aborted anyway
				r.opts.Logger.Debug("adding the ownership group to a transaction that is aborted", "err", err)
			}
		}()
	}
	t0 := time.Now()
	if err := r.opts.Target.Flush(ctx); err != nil {
		return fmt.Errorf("waiting for the transaction's writes: %w", err)
	}
	tFlush := time.Now()
	if errp := t.doubt.Load(); errp != nil {
		return fmt.Errorf("a write of the transaction failed and may be on the target: %w", *errp)
	}
	stored := r.progressEntries
	if err := r.writeProgressLocked(ctx, nil, stopping); err != nil {
		return fmt.Errorf("storing progress in the transaction: %w", err)
	}
	tProgress := time.Now()
	if t.records.Load() == 0 && r.progressEntries == stored {
		// Nothing was written: there is no transaction to end.
		return nil
	}
	if added != nil {
		err := <-added
		added = nil
		if err != nil {
			return err
		}
	}
	// The positions are in the transaction before the offset commit: a
	// successor's read of the progress topic then waits for any
	// transaction whose offset commit the coordinator accepted.
	if err := r.fence(ctx, t.records.Load() > 0); err != nil {
		return err
	}
	start := time.Now()
	if err := r.opts.Target.EndTransaction(ctx, kgo.TryCommit); err != nil {
		err = fmt.Errorf("committing the transaction: %w", err)
		if errors.Is(err, kerr.InvalidTxnState) {
			// The coordinator is aborting it: another instance
			// initialised this transactional ID (it took the partitions
			// over from an instance it found gone).
			return fenced{err}
		}
		return err
	}
	for _, w := range t.written {
		w.p.mu.Lock()
		w.p.committed = w.pos
		w.p.mu.Unlock()
	}
	t.written = t.written[:0]
	r.opts.Metrics.TransactionsCommitted.WithLabelValues(r.opts.Flow).Inc()
	r.opts.Metrics.TransactionCommitSeconds.WithLabelValues(r.opts.Flow).Observe(time.Since(start).Seconds())
	firstWait := time.Duration(0)
	if first := t.firstAck.Load(); first > 0 {
		firstWait = time.Unix(0, first).Sub(t.began)
	}
	r.opts.Logger.Debug("transaction committed", "records", t.records.Load(), "bytes", t.bytes.Load(),
		"open_for", t0.Sub(t.began), "first_answer_after", firstWait, "flush", tFlush.Sub(t0),
		"progress", tProgress.Sub(tFlush), "fence", start.Sub(tProgress), "end", time.Since(start))
	t.records.Store(0)
	t.bytes.Store(0)
	t.firstAck.Store(0)
	t.began = time.Now()
	if err := r.opts.Target.BeginTransaction(); err != nil {
		return fmt.Errorf("beginning a transaction: %w", err)
	}
	t.stall = time.Since(tFlush) + firstWait
	return nil
}

// fenceRetry bounds how long an offset commit refused because the group
// is rebalancing is tried again while this member still holds its
// partitions.
const fenceRetry = 5 * time.Second

// addOffsets adds the ownership group to the open transaction
// (AddOffsetsToTxn), so that an offset can be committed in it.
func (r *Replicator) addOffsets(ctx context.Context) error {
	t := r.txn.opts
	id, epoch, err := r.opts.Target.ProducerID(ctx)
	if err != nil {
		return fmt.Errorf("reading the producer ID: %w", err)
	}
	for {
		add := kmsg.NewPtrAddOffsetsToTxnRequest()
		add.TransactionalID, add.ProducerID, add.ProducerEpoch, add.Group = t.ID, id, epoch, t.Group
		resp, err := add.RequestWith(ctx, r.opts.Target)
		if err == nil {
			err = kerr.ErrorForCode(resp.ErrorCode)
		}
		if err == nil {
			return nil
		}
		if !concurrent(ctx, err) {
			return wrapFenced(fmt.Errorf("adding the ownership group %q to the transaction: %w", t.Group, err))
		}
	}
}

// concurrent reports whether err says the transaction coordinator is
// still ending the previous transaction (or another instance's
// initialisation of this transactional ID), after a short wait: the
// request is to be sent again.
func concurrent(ctx context.Context, err error) bool {
	if !errors.Is(err, kerr.ConcurrentTransactions) || ctx.Err() != nil {
		return false
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(10 * time.Millisecond):
		return true
	}
}

// fence commits an offset in the open transaction under this member's
// generation, after adding the ownership group to the transaction unless
// added says it is: the group coordinator refuses it if the member no
// longer holds its partitions.
func (r *Replicator) fence(ctx context.Context, added bool) error {
	t := r.txn.opts
	deadline := time.Now().Add(fenceRetry)
	for {
		member, gen, holding := t.Member()
		if member == "" {
			return errors.New("this instance has no membership of the ownership group to commit under")
		}
		id, epoch, err := r.opts.Target.ProducerID(ctx)
		if err != nil {
			return fmt.Errorf("reading the producer ID: %w", err)
		}
		if !added {
			if err := r.addOffsets(ctx); err != nil {
				return err
			}
			added = true
		}
		req := kmsg.NewPtrTxnOffsetCommitRequest()
		req.TransactionalID, req.Group, req.ProducerID, req.ProducerEpoch = t.ID, t.Group, id, epoch
		req.Generation, req.MemberID = gen, member
		topicID, err := r.progressTopicID(ctx)
		if err != nil {
			return err
		}
		rt := kmsg.NewTxnOffsetCommitRequestTopic()
		rt.Topic, rt.TopicID = r.opts.Progress.Topic(), topicID
		rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
		rp.Partition, rp.Offset = 0, 0
		meta := "kmirror " + r.opts.Flow + " generation " + strconv.Itoa(int(gen))
		rp.Metadata = &meta
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, r.opts.Target)
		if err == nil {
			for _, tp := range resp.Topics {
				for _, pp := range tp.Partitions {
					if e := kerr.ErrorForCode(pp.ErrorCode); e != nil && err == nil {
						err = e
					}
				}
			}
		}
		if err == nil {
			return nil
		}
		if errors.Is(err, kerr.UnknownTopicID) {
			r.txn.topicID = [16]byte{} // looked up again
		}
		if concurrent(ctx, err) {
			continue
		}
		rebalancing := errors.Is(err, kerr.RebalanceInProgress) || errors.Is(err, kerr.IllegalGeneration) ||
			errors.Is(err, kerr.UnknownMemberID)
		if !rebalancing || !holding || time.Now().After(deadline) || ctx.Err() != nil {
			return wrapFenced(fmt.Errorf("committing the fencing offset of member %s in generation %d of group %q: %w", member, gen, t.Group, err))
		}
		// A rebalance this member takes part in: its generation moves
		// once it synced; a member that was removed loses its lease.
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// progressTopicID returns the topic ID of the progress topic, which the
// fencing offset commit names (TxnOffsetCommit v6 and later).
func (r *Replicator) progressTopicID(ctx context.Context) ([16]byte, error) {
	if r.txn.topicID != ([16]byte{}) {
		return r.txn.topicID, nil
	}
	topic := r.opts.Progress.Topic()
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = &topic
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, r.opts.Target)
	if err != nil {
		return [16]byte{}, fmt.Errorf("reading the topic ID of %q: %w", topic, err)
	}
	for _, t := range resp.Topics {
		if t.Topic != nil && *t.Topic == topic {
			if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
				return [16]byte{}, fmt.Errorf("reading the topic ID of %q: %w", topic, err)
			}
			r.txn.topicID = t.TopicID
			return t.TopicID, nil
		}
	}
	return [16]byte{}, fmt.Errorf("reading the topic ID of %q: not in the metadata answer", topic)
}

// fenced is an error of a write the brokers refused because another
// instance took over.
type fenced struct{ error }

func (f fenced) Unwrap() error { return f.error }

// wrapFenced marks the errors by which the brokers refuse a writer that
// was replaced.
func wrapFenced(err error) error {
	switch {
	case errors.Is(err, kerr.IllegalGeneration), errors.Is(err, kerr.UnknownMemberID),
		errors.Is(err, kerr.FencedInstanceID), errors.Is(err, kerr.ProducerFenced),
		errors.Is(err, kerr.InvalidProducerEpoch), errors.Is(err, kerr.InvalidProducerIDMapping),
		errors.Is(err, kerr.TransactionalIDNotFound):
		return fenced{err}
	}
	return err
}

// abort aborts the open transaction after err and fails the replicator.
func (r *Replicator) abort(err error) {
	t := r.txn
	err = wrapFenced(err)
	// Records still buffered belong to the aborted transaction. A request
	// the network holds is not waited for long: once the coordinator
	// aborted the transaction, the brokers refuse it (KIP-890 partition
	// verification) or abort it with the rest.
	bctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_ = r.opts.Target.AbortBufferedRecords(bctx)
	cancel()
	actx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	aerr := r.opts.Target.EndTransaction(actx, kgo.TryAbort)
	var f fenced
	if errors.As(err, &f) || errors.As(wrapFenced(aerr), &f) {
		r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, metrics.ErrFenced).Inc()
		r.opts.Logger.Error("transaction fenced by the brokers: another instance owns these partitions now; nothing of this transaction is visible",
			"transactional_id", t.opts.ID, "group", t.opts.Group, "err", err)
	} else {
		r.opts.Metrics.Errors.WithLabelValues(r.opts.Flow, metrics.ErrTransaction).Inc()
		r.opts.Logger.Error("transaction aborted; nothing of it is visible, and replication resumes from the last committed position",
			"transactional_id", t.opts.ID, "err", err, "abort_err", aerr)
	}
	r.opts.Metrics.TransactionsAborted.WithLabelValues(r.opts.Flow).Inc()
	failed := fmt.Errorf("%w: %w", ErrTransactionAborted, err)
	t.failed.CompareAndSwap(nil, &failed)
}
