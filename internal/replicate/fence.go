package replicate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/progress"
)

// Fencing the writers of an earlier owner (at-least-once mode).
//
// An idempotent producer's writes to a partition carry its producer ID,
// an epoch and a sequence; a broker refuses a write whose epoch is below
// the newest it appended for that producer ID on that partition. A
// partition's new owner, when its last owner did not stop cleanly, writes
// its first copy of the partition under each of the earlier owner's
// producer IDs (progress.Position.Writers) with a higher epoch and
// sequence 0, one record each: from then on the broker refuses every
// write of theirs still on its way to that partition (held by a stalled
// network, retried by a paused process), instead of appending it after
// the new owner's copies. The epoch is raised on that partition only; the
// earlier owner's process stopped using the producer ID (it crashed, or
// its run ended with its lease).
//
// The first of those writes is conditional when the partition's leader
// listed the earlier producer, with its epoch and last sequence, as the
// new owner listed the target's end it resumes against (Fence.Known): it
// goes under the producer's own epoch with the next sequence, so the
// broker takes it only if no write of the earlier producer landed since.
// If one did, the write is refused (out of order), and the partition is
// handed back to the flow to be compared with the target again
// (ResumeAgain) before anything of this owner is written. The epoch is
// raised with the next copy.
//
// What remains: an earlier producer the leader did not list (its first
// write to the partition is the one held), or a conditional write that
// the broker took as a duplicate of a held batch of exactly the same
// sequence range whose successor lands before the raised epoch: its
// records then precede the new owner's next copies; the fence write's
// offset shows it, and the records between are counted as duplicates and
// logged.

// fenceEpochMargin is how far above an earlier owner's stored epoch the
// fence goes: its client raises the epoch itself, by one, after some
// write errors, and may have done so since its last stored position.
const fenceEpochMargin = 100

// fenceTimeout bounds the requests of one fence write.
const fenceTimeout = 30 * time.Second

// Fence is a producer of an earlier owner to fence on a partition's
// target.
type Fence struct {
	Producer progress.Producer
	// Known says the partition's leader listed the producer, at Epoch
	// with LastSequence, when the target end the start position was
	// compared against was listed (no write of it landed in between): the
	// first fence write is conditional on that.
	Known        bool
	Epoch        int16
	LastSequence int32
}

// fenceStep is one fence write: conditional (the producer's own epoch and
// next sequence) or raising the epoch.
type fenceStep struct {
	f           Fence
	conditional bool
}

// fenceSteps are the fence writes of fences, in order: every conditional
// one first, then one raising the epoch of each producer.
func fenceSteps(fences []Fence) []fenceStep {
	var steps []fenceStep
	for _, f := range fences {
		if f.Known {
			steps = append(steps, fenceStep{f: f, conditional: true})
		}
	}
	for _, f := range fences {
		steps = append(steps, fenceStep{f: f})
	}
	return steps
}

// nextFence returns the fence write the next record of p makes, or false
// if none is left.
func (p *partition) nextFence() (fenceStep, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fencing >= len(p.fences) {
		return fenceStep{}, false
	}
	st := p.fences[p.fencing]
	p.fencing++
	return st, true
}

// fenceDone ends the fence write st: written, it leaves the partition's
// fences, and once the producer's epoch is raised, its stored writers.
func (p *partition) fenceDone(st fenceStep, written bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fencing--
	if !written {
		return
	}
	if i := slices.Index(p.fences, st); i >= 0 {
		p.fences = slices.Delete(p.fences, i, i+1)
	}
	p.unfenced.Store(len(p.fences) > 0)
	if !st.conditional {
		p.acked.Writers = slices.DeleteFunc(p.acked.Writers, func(w progress.Producer) bool { return w.ID == st.f.Producer.ID })
	}
}

// noteWriter adds the producer that wrote an acknowledged copy to the
// partition's writers (its epoch is raised in place), keeping the newest
// maxWriters. Called with p.mu held.
func (p *partition) noteWriter(id int64, epoch int16) {
	if n := len(p.acked.Writers); n > 0 && p.acked.Writers[n-1].ID == id && p.acked.Writers[n-1].Epoch >= epoch {
		return
	}
	for i, w := range p.acked.Writers {
		if w.ID == id {
			p.acked.Writers[i].Epoch = max(w.Epoch, epoch)
			return
		}
	}
	p.acked.Writers = append(p.acked.Writers, progress.Producer{ID: id, Epoch: epoch})
	if n := len(p.acked.Writers); n > maxWriters {
		p.acked.Writers = slices.Delete(p.acked.Writers, 0, n-maxWriters)
	}
}

// maxWriters bounds the producers stored with a position.
const maxWriters = 8

// fenceWrite writes out, the copy of source offset src, as the fence
// write st, once the records of the partition handed to the producer
// before it were answered (after), and answers it with done as the
// producer would.
func (r *Replicator) fenceWrite(ctx context.Context, p *partition, st fenceStep, after int64, out *kgo.Record, done func(*kgo.Record, error)) {
	if !p.mayFollow(after) {
		p.fenceDone(st, false)
		done(out, errOrderGate)
		return
	}
	p.mu.Lock()
	expect := p.acked.TargetNext
	p.mu.Unlock()
	fctx, cancel := context.WithTimeout(ctx, fenceTimeout)
	defer cancel()
	f := st.f.Producer
	leader, topicID, err := r.leaders.Lookup(fctx, r.opts.Target, out.Topic, out.Partition)
	var base int64
	var epoch int16
	if err == nil && st.conditional {
		epoch = st.f.Epoch
		seq := st.f.LastSequence + 1
		if st.f.LastSequence == math.MaxInt32 {
			seq = 0
		}
		base, err = produceAs(fctx, r.opts.Target, leader, topicID, out, f.ID, epoch, seq)
		if err == nil {
			err = r.checkConditional(fctx, p, f.ID, epoch, seq)
		}
	} else if err == nil {
		if epoch, err = fenceEpoch(fctx, r.opts.Target, f, out.Topic, out.Partition); err == nil {
			base, err = produceAs(fctx, r.opts.Target, leader, topicID, out, f.ID, epoch, 0)
		}
	}
	if err != nil {
		r.leaders.Forget(out.Topic)
		p.fenceDone(st, false)
		if st.conditional && landedSince(err) {
			// A write of the earlier owner landed after the target was
			// compared: nothing of this owner is written, the partition
			// is compared again.
			done(out, fmt.Errorf("%w (producer %d of an earlier owner: %w)", errLandedSince, f.ID, err))
			go r.resumeAgain(ctx, p)
			return
		}
		done(out, fmt.Errorf("fencing producer %d of an earlier owner of the partition: %w", f.ID, err))
		return
	}
	p.fenceDone(st, true)
	if st.conditional {
		r.opts.Logger.Info("first copy written under an earlier owner's producer, conditional on none of its writes having landed since the target was compared",
			"topic", p.id.Topic, "partition", p.id.Partition, "target_topic", p.target,
			"producer_id", f.ID, "epoch", epoch, "offset", base)
	} else {
		r.opts.Logger.Info("earlier owner's producer fenced on the target partition: the broker refuses its writes still on their way",
			"topic", p.id.Topic, "partition", p.id.Partition, "target_topic", p.target,
			"producer_id", f.ID, "fence_epoch", epoch, "offset", base)
	}
	if late := base - expect; expect >= 0 && late > 0 {
		if r.opts.Provenance == nil {
			// Only this flow writes the target partition: they are copies
			// of records this instance copies again.
			p.duplicates.Add(float64(late))
			r.opts.Logger.Warn("records of an earlier owner reached the target after this instance took the partition over, before its fence; counted as duplicates",
				"topic", p.id.Topic, "partition", p.id.Partition, "target_topic", p.target,
				"records", late, "from", expect, "to", base)
		} else {
			r.opts.Logger.Warn("records reached the target after this instance took the partition over, before its fence: other writers' or an earlier owner's (then duplicates)",
				"topic", p.id.Topic, "partition", p.id.Partition, "target_topic", p.target,
				"records", late, "from", expect, "to", base)
		}
	}
	out.Offset, out.ProducerID, out.ProducerEpoch = base, -1, -1
	done(out, nil)
}

// checkConditional checks, after a conditional fence write was answered
// with success, that the partition's leader knows producer id at epoch
// with seq as its last sequence. A held batch of the earlier producer with
// the same sequence range (one record, the copy of the same source
// record) is taken by the broker as a duplicate of the other, whichever
// came first, and the batches after it are in sequence: if any landed,
// the last sequence is past seq, and the partition is compared again
// (the conditional write is then on the target or not, as a copy in its
// place either way). A leader that cannot be asked leaves it unchecked.
func (r *Replicator) checkConditional(ctx context.Context, p *partition, id int64, epoch int16, seq int32) error {
	e, last, found, err := describeProducer(ctx, r.opts.Target, p.target, p.id.Partition, id)
	switch {
	case err != nil:
		r.opts.Logger.Warn("cannot check that no write of an earlier owner followed the conditional first copy",
			"topic", p.id.Topic, "partition", p.id.Partition, "target_topic", p.target, "producer_id", id, "err", err)
		return nil
	case !found:
		// Real brokers list idempotent producers; some test brokers only
		// transactional ones.
		r.opts.Logger.Warn("the partition's leader does not list the earlier owner's producer after the conditional first copy; not checked",
			"topic", p.id.Topic, "partition", p.id.Partition, "target_topic", p.target, "producer_id", id)
		return nil
	case e != epoch || last != seq:
		return fmt.Errorf("%w: the partition's leader knows it at epoch %d, last sequence %d, after the write at epoch %d with sequence %d",
			errFollowed, e, last, epoch, seq)
	}
	return nil
}

// errFollowed fails a conditional fence write the broker took (or took as
// a duplicate) but that writes of the earlier producer followed.
var errFollowed = errors.New("writes of the earlier producer followed the conditional write")

// errLandedSince fails a conditional fence write the broker refused
// because a write of the earlier producer landed since the target was
// compared.
var errLandedSince = errors.New("a write of an earlier owner reached the target after this instance compared it; comparing again")

// landedSince reports whether a conditional fence write was refused
// because the producer wrote since (or was fenced since).
func landedSince(err error) bool {
	return errors.Is(err, kerr.OutOfOrderSequenceNumber) || errors.Is(err, kerr.InvalidProducerEpoch) ||
		errors.Is(err, kerr.DuplicateSequenceNumber) || errors.Is(err, kerr.UnknownProducerID) || errors.Is(err, errFollowed)
}

// fenceEpoch is the epoch a fence of f writes with on the partition: above
// f's stored epoch by fenceEpochMargin, and above the epoch the
// partition's leader knows for f (an earlier fence of it). A leader that
// cannot be asked (DescribeProducers needs READ on the topic, which the
// least-privilege grants leave out) gets the stored epoch plus the margin
// and a random part: an earlier fence of f that was not stored (its owner
// died before) is then unlikely to have used the same epoch.
func fenceEpoch(ctx context.Context, cl *kgo.Client, f progress.Producer, topic string, partition int32) (int16, error) {
	epoch := int32(f.Epoch) + fenceEpochMargin
	known, _, found, err := describeProducer(ctx, cl, topic, partition, f.ID)
	answered := err == nil
	switch {
	case !answered:
		epoch += 1 + rand.Int32N(fenceEpochSpread)
	case found:
		epoch = max(epoch, int32(known)+1)
	}
	if epoch > math.MaxInt16 {
		if !answered {
			return math.MaxInt16, nil // the highest there is
		}
		// Fenced at the highest epoch already, or its epoch this close
		// to it: nothing can go above it.
		return 0, fmt.Errorf("producer %d is at epoch %d on the partition: no higher epoch to fence it with", f.ID, epoch-1)
	}
	return int16(epoch), nil
}

// fenceEpochSpread is the range of the random part of a fence epoch
// chosen without the leader's answer.
const fenceEpochSpread = 1000

// resumeAgainWait bounds the wait for the answers of a partition's writes
// before it is taken out to be compared again.
const resumeAgainWait = 5 * time.Second

// resumeAgain takes p out of the replicator, once the writes handed to the
// producer are answered (none after the refused fence write is sent: the
// order gate fails them), with its position stored as it is (not
// Stopped, its earlier owners' producers still among its writers): the
// flow compares it with the target again, as after a restart, and adds it
// again (ResumeAgain).
func (r *Replicator) resumeAgain(ctx context.Context, p *partition) {
	wctx, cancel := context.WithTimeout(ctx, resumeAgainWait)
	waitAnswered(wctx, []*partition{p})
	cancel()
	r.progressMu.Lock()
	err := r.writeProgressLocked(ctx, func(q *partition) bool { return q == p }, nil)
	r.mu.Lock()
	gone := r.parts[p.id.Topic][p.id.Partition] != p
	if !gone {
		r.forgetLocked(p)
		p.mu.Lock()
		if r.again == nil {
			r.again = map[progress.Partition]Removed{}
		}
		r.again[p.id] = Removed{Position: p.acked, Runs: slices.Clone(p.omap.Runs())}
		p.mu.Unlock()
	}
	r.mu.Unlock()
	r.progressMu.Unlock()
	if gone {
		return // released or removed meanwhile
	}
	select {
	case r.againReady <- struct{}{}:
	default:
	}
	r.src.remove(map[string][]int32{p.id.Topic: {p.id.Partition}}, false)
	r.updateGauges()
	r.opts.Logger.Warn("a write of an earlier owner reached the target after this instance compared it; the partition is compared with the target again before anything of it is written",
		"topic", p.id.Topic, "partition", p.id.Partition, "target_topic", p.target, "position_stored", err == nil)
}

// AgainReady is ready when partitions were taken out to be compared with
// the target again: ResumeAgain returns them.
func (r *Replicator) AgainReady() <-chan struct{} { return r.againReady }

// ResumeAgain returns the partitions taken out to be compared with the
// target again since the last call, with their positions and offset maps:
// the caller compares each with the target, as after a restart, and adds
// it again.
func (r *Replicator) ResumeAgain() map[progress.Partition]Removed {
	r.mu.Lock()
	defer r.mu.Unlock()
	again := r.again
	r.again = nil
	return again
}
