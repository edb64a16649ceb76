package flow

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/replicate"
	"github.com/kmirror/kmirror/internal/topicsync"
)

// Fencing earlier owners' producers (at-least-once mode): the flow lists
// the target partitions' active producers around the target end offsets
// the start positions are compared against, and gives each assignment the
// stored writers to fence, with what the partition's leader knew of them
// at that moment (see internal/replicate, fence.go).

// fenceListTries bounds how often the target's ends are listed again
// because an earlier owner's producer wrote while they were listed.
const fenceListTries = 5

// producerIDTimeout bounds the wait for the target producer's ID.
const producerIDTimeout = 15 * time.Second

// describedProducers are the active producers of target partitions, by
// target topic and partition, listed together with the target's ends;
// nil if they could not be listed so (the fences are not conditional).
type describedProducers map[progress.Partition]kadm.DescribedProducers

// targetEnds lists the end offsets of the target topics. When partitions
// among topics have earlier owners' producers to fence, it lists the
// active producers of those partitions before and after, and again until
// both agree: no write of theirs landed while the ends were listed.
func (r *run) targetEnds(ctx context.Context, topics []topicsync.Topic, targetNames []string) (kadm.ListedOffsets, describedProducers) {
	set := r.fenceCandidates(topics)
	if len(set) == 0 || r.cfg.ExactlyOnce {
		return r.listOffsets(ctx, r.tgtAdmin.ListEndOffsets, targetNames), nil
	}
	var ends kadm.ListedOffsets
	for range fenceListTries {
		before, err := r.describeProducers(ctx, set)
		ends = r.listOffsets(ctx, r.tgtAdmin.ListEndOffsets, targetNames)
		if err != nil {
			r.logger.Warn("cannot list the target partitions' producers (DescribeProducers needs READ on the target topics); earlier owners' producers are fenced without the conditional first copy",
				"err", err)
			return ends, nil
		}
		after, err := r.describeProducers(ctx, set)
		if err != nil {
			return ends, nil
		}
		if sameProducers(before, after) {
			return ends, after
		}
	}
	return ends, nil
}

// fenceCandidates are the target partitions of topics this run is about
// to start whose stored positions name writers and are not Stopped.
func (r *run) fenceCandidates(topics []topicsync.Topic) kadm.TopicsSet {
	set := kadm.TopicsSet{}
	for _, t := range topics {
		for p := int32(0); p < t.Partitions; p++ {
			id := progress.Partition{Topic: t.Source, Partition: p}
			if r.repl.Has(t.Source, p) || !r.mine(id) {
				continue
			}
			if pos, ok := r.loaded.Positions[id]; ok && !pos.Stopped && len(pos.Writers) > 0 {
				set.Add(t.Target, p)
			}
		}
	}
	return set
}

// describeProducers lists the active producers of the partitions in set.
func (r *run) describeProducers(ctx context.Context, set kadm.TopicsSet) (describedProducers, error) {
	lctx, cancel := context.WithTimeout(ctx, offsetsTimeout)
	defer cancel()
	described, err := r.tgtAdmin.DescribeProducers(lctx, set)
	if err != nil {
		return nil, err
	}
	out := describedProducers{}
	for _, ps := range described {
		for _, dp := range ps.Partitions {
			if dp.Err != nil {
				return nil, dp.Err
			}
			out[progress.Partition{Topic: dp.Topic, Partition: dp.Partition}] = dp.ActiveProducers
		}
	}
	return out, nil
}

// sameProducers reports whether a and b list the same producers at the
// same epochs and last sequences.
func sameProducers(a, b describedProducers) bool {
	if len(a) != len(b) {
		return false
	}
	for tp, pa := range a {
		pb, ok := b[tp]
		if !ok || len(pa) != len(pb) {
			return false
		}
		for id, x := range pa {
			y, ok := pb[id]
			if !ok || x.ProducerEpoch != y.ProducerEpoch || x.LastSequence != y.LastSequence {
				return false
			}
		}
	}
	return true
}

// noteWriters gives assignments the target producers to fence (the stored
// writers of a position its last owner did not stop cleanly at, with what
// the partition's leader knew of each as the target's ends were listed)
// and this run's own producer, stored before anything is written
// (at-least-once mode; see progress.Position.Writers).
func (r *run) noteWriters(ctx context.Context, as []replicate.Assignment, producers describedProducers) {
	if len(as) == 0 {
		return
	}
	var own *progress.Producer
	pctx, cancel := context.WithTimeout(ctx, producerIDTimeout)
	id, epoch, err := r.tgt.ProducerID(pctx)
	cancel()
	switch {
	case err != nil:
		r.logger.Warn("target producer ID not known yet; the next owner of the partitions starting now fences this instance's writes only once they are acknowledged",
			"err", err)
	case id >= 0:
		own = &progress.Producer{ID: id, Epoch: epoch}
	}
	for i := range as {
		a := &as[i]
		a.Own = own
		pos, ok := r.loaded.Positions[a.Source]
		if !ok {
			continue
		}
		a.Start.Writers = pos.Writers
		if pos.Stopped {
			continue
		}
		// The conditional first copy goes under the writer that wrote
		// last: its next write is the copy of the record the new owner
		// starts at. (An older writer's next write may be the copy of
		// an earlier record, which the broker would take as a
		// duplicate of the conditional copy.)
		active := producers[progress.Partition{Topic: a.TargetTopic, Partition: a.Source.Partition}]
		last := int64(-1)
		for _, w := range pos.Writers {
			if d, ok := active[w.ID]; ok && (last < 0 || d.LastTimestamp > active[last].LastTimestamp) {
				last = w.ID
			}
		}
		for _, w := range pos.Writers {
			f := replicate.Fence{Producer: w}
			if d, ok := active[w.ID]; ok && w.ID == last && producers != nil {
				f.Known, f.Epoch, f.LastSequence = true, d.ProducerEpoch, d.LastSequence
			}
			a.Fence = append(a.Fence, f)
		}
	}
}
