package flow

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/metrics"
)

// hangingTxn is a transaction open on a partition of the progress topic
// that no transaction coordinator has open: nothing will ever end it, and
// a read_committed read of the partition waits for it for ever.
type hangingTxn struct {
	Partition   int32
	ProducerID  int64
	Epoch       int16
	StartOffset int64
	// TxnID and State are what the coordinators list for the producer
	// ID ("" if none lists it).
	TxnID, State string
}

// coordinatorHolds reports whether a coordinator in state still ends the
// transaction it has open (or is ending): the partition's open transaction
// is then not hanging.
func coordinatorHolds(state string) bool {
	switch state {
	case "Ongoing", "PrepareCommit", "PrepareAbort", "PrepareEpochFence":
		return true
	}
	return false
}

// hangingTxns returns the transactions of producers open on partitions
// that the coordinators do not hold (see hangingTxn), given what the
// partition leaders (DescribeProducers) and the coordinators
// (ListTransactions by producer ID) say.
func hangingTxns(producers []kadm.DescribedProducer, txns kadm.ListedTransactions) []hangingTxn {
	byPID := map[int64][]kadm.ListedTransaction{}
	for _, t := range txns {
		byPID[t.ProducerID] = append(byPID[t.ProducerID], t)
	}
	var out []hangingTxn
	for _, p := range producers {
		if p.CurrentTxnStartOffset < 0 {
			continue
		}
		h := hangingTxn{Partition: p.Partition, ProducerID: p.ProducerID, Epoch: p.ProducerEpoch, StartOffset: p.CurrentTxnStartOffset}
		held := false
		for _, t := range byPID[p.ProducerID] {
			h.TxnID, h.State = t.TxnID, t.State
			held = held || coordinatorHolds(t.State)
		}
		if !held {
			out = append(out, h)
		}
	}
	slices.SortFunc(out, func(a, b hangingTxn) int {
		return cmp.Or(cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.StartOffset, b.StartOffset))
	})
	return out
}

// findHangingTxns lists the hanging transactions (see hangingTxn) on topic.
// The open transactions of the partitions are listed before and after the
// coordinators are asked, and only one open all along counts: one that a
// coordinator ended (or began) in between is not taken for hanging.
func findHangingTxns(ctx context.Context, tgt *kgo.Client, topic string) ([]hangingTxn, error) {
	adm := kadm.NewClient(tgt)
	details, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return nil, err
	}
	td, ok := details[topic]
	if !ok {
		return nil, fmt.Errorf("topic %q not listed", topic)
	}
	if td.Err != nil {
		return nil, fmt.Errorf("listing topic %q: %w", topic, td.Err)
	}
	set := kadm.TopicsSet{}
	set.Add(topic, td.Partitions.Numbers()...)
	openTxns := func() ([]kadm.DescribedProducer, error) {
		described, err := adm.DescribeProducers(ctx, set)
		if err != nil {
			return nil, fmt.Errorf("describing the producers of %q: %w", topic, err)
		}
		var open []kadm.DescribedProducer
		described.EachProducer(func(p kadm.DescribedProducer) {
			if p.CurrentTxnStartOffset >= 0 {
				open = append(open, p)
			}
		})
		return open, nil
	}
	before, err := openTxns()
	if err != nil || len(before) == 0 {
		return nil, err
	}
	pids := map[int64]bool{}
	for _, p := range before {
		pids[p.ProducerID] = true
	}
	txns, err := adm.ListTransactions(ctx, slices.Sorted(maps.Keys(pids)), nil)
	if err != nil {
		return nil, fmt.Errorf("listing the transactions of the producers open on %q: %w", topic, err)
	}
	after, err := openTxns()
	if err != nil {
		return nil, err
	}
	var still []kadm.DescribedProducer
	for _, p := range before {
		if slices.ContainsFunc(after, func(q kadm.DescribedProducer) bool {
			return q.Partition == p.Partition && q.ProducerID == p.ProducerID && q.CurrentTxnStartOffset == p.CurrentTxnStartOffset
		}) {
			still = append(still, p)
		}
	}
	return hangingTxns(still, txns), nil
}

// noteHangingTxns looks, once the load of the progress topic has waited
// stableWaitNote, for transactions open on it that nothing will end, and
// says so: the load would otherwise wait for ever without a word of why.
func (f *Flow) noteHangingTxns(ctx context.Context, tgt *kgo.Client, topic string, waited time.Duration) {
	lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	hanging, err := findHangingTxns(lctx, tgt, topic)
	if err != nil {
		f.logger.Debug("cannot look for hanging transactions on the progress topic", "progress_topic", topic, "err", err)
		return
	}
	for _, h := range hanging {
		f.metrics.Errors.WithLabelValues(f.cfg.Name, metrics.ErrTransaction).Inc()
		f.logger.Error("a transaction open on the progress topic is held by no transaction coordinator, so the brokers will never end it and the flow cannot start: its coordinator completed it without writing its marker to this partition (a Kafka 4.x coordinator writes no marker to a partition that has no leader at that moment); records of the same transaction on other partitions may be committed. Aborting it (kafka-transactions.sh abort) lets the flow start again from the positions before it, copying again whatever of it is committed on the target",
			"progress_topic", topic, "partition", h.Partition, "producer_id", h.ProducerID, "producer_epoch", h.Epoch,
			"start_offset", h.StartOffset, "transactional_id", h.TxnID, "coordinator_state", h.State, "waited", waited.Round(time.Second).String())
	}
}
