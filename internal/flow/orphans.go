package flow

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/ownership"
	"github.com/kmirror/kmirror/internal/policy"
)

// transactionalID is the transactional ID of this instance's target
// producer for the flow (exactly_once).
func (f *Flow) transactionalID() string {
	return policy.TransactionalID(f.cfg.Name, ownership.Self(f.created).Instance)
}

// liveTransactionalIDs are the transactional IDs of this instance and of
// every member of the flow's ownership group in its last assignment
// (scale-out), which may have transactions open legitimately.
func (f *Flow) liveTransactionalIDs(member *ownership.Member) map[string]bool {
	live := map[string]bool{f.transactionalID(): true}
	if member != nil {
		for _, m := range member.State().Members {
			live[policy.TransactionalID(f.cfg.Name, m.Instance)] = true
		}
	}
	return live
}

// abortOrphanTransactions aborts the transactions open on the target of
// this flow's instances that are not live: an instance that died (or is
// paused) with a transaction open would hold up, until the brokers abort
// it at its timeout, the read of the progress topic a successor waits
// on. Initialising a producer with the dead instance's transactional ID
// bumps its epoch, and the transaction coordinator aborts the open
// transaction at once. An instance wrongly taken for dead (one that joined
// after the assignment seen) only has its open transaction aborted and
// starts again from its last commit. Best effort: without the permission
// to list or initialise transactions, the brokers' timeout applies.
func (f *Flow) abortOrphanTransactions(ctx context.Context, tgt *kgo.Client, live map[string]bool) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req := kmsg.NewPtrListTransactionsRequest()
	req.StateFilters = []string{"Ongoing"}
	shards := tgt.RequestSharded(ctx, req)
	prefix := policy.TransactionalIDPrefix(f.cfg.Name)
	var orphans []string
	for _, sh := range shards {
		if sh.Err != nil {
			f.logger.Debug("cannot list the target's open transactions", "err", sh.Err)
			continue
		}
		resp := sh.Resp.(*kmsg.ListTransactionsResponse)
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			f.logger.Debug("cannot list the target's open transactions", "err", err)
			continue
		}
		for _, tx := range resp.TransactionStates {
			if strings.HasPrefix(tx.TransactionalID, prefix) && !live[tx.TransactionalID] {
				orphans = append(orphans, tx.TransactionalID)
			}
		}
	}
	for _, id := range orphans {
		err := fenceTransactionalID(ctx, tgt, id, f.transactionTimeout())
		if err != nil {
			f.logger.Info("cannot abort the open transaction of an instance that left the flow; the brokers abort it at its timeout",
				"transactional_id", id, "timeout", f.transactionTimeout().String(), "err", err)
			continue
		}
		f.logger.Info("aborted the open transaction of an instance that left the flow", "transactional_id", id)
	}
}

// fenceTransactionalID initialises a producer with transactional ID id,
// which bumps its epoch and aborts its open transaction; it waits while
// the coordinator is still ending it.
func fenceTransactionalID(ctx context.Context, tgt *kgo.Client, id string, timeout time.Duration) error {
	for {
		req := kmsg.NewPtrInitProducerIDRequest()
		req.TransactionalID = &id
		req.TransactionTimeoutMillis = int32(timeout.Milliseconds())
		req.ProducerID, req.ProducerEpoch = -1, -1
		resp, err := req.RequestWith(ctx, tgt)
		if err == nil {
			err = kerr.ErrorForCode(resp.ErrorCode)
		}
		if !errors.Is(err, kerr.ConcurrentTransactions) && !errors.Is(err, kerr.CoordinatorLoadInProgress) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
