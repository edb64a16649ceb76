package flow

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/groupsync"
	"github.com/kmirror/kmirror/internal/metrics"
	"github.com/kmirror/kmirror/internal/retry"
)

// live is what a running flow shares with commands acting on it.
type live struct {
	src     *kgo.Client
	groupMu sync.Mutex // serialises group sync passes
	groups  *groupsync.Syncer
	seeded  bool
	store   *groupsync.Store
}

// syncGroups checkpoints and commits consumer group offsets every
// sync_interval.
func (f *Flow) syncGroups(ctx context.Context, lv *live) {
	lastSynced := map[string]time.Time{}
	groupErrs := map[string]string{}
	activeGroups := map[string]bool{}
	echoedGroups := map[string]bool{}
	errLog := retry.Throttle{Every: 30 * time.Second}
	t := time.NewTicker(f.cfg.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rep, err := lv.syncGroups(ctx, f.cfg.ReplicationFactor)
		if err != nil {
			f.groupSyncFailed(ctx, &errLog, err)
			continue
		}
		now := time.Now()
		synced, active := 0, 0
		for _, g := range rep.Groups {
			if g.Err != nil {
				f.metrics.Errors.WithLabelValues(f.cfg.Name, metrics.ErrGroupSync).Inc()
				if groupErrs[g.Group] != g.Err.Error() {
					groupErrs[g.Group] = g.Err.Error()
					f.logger.Error("group offset sync failed; retrying", "group", g.Group, "err", g.Err)
				}
				continue
			}
			delete(groupErrs, g.Group)
			if g.Active {
				active++
			}
			if g.Active != activeGroups[g.Group] {
				if g.Active {
					f.logger.Info("group has active members on the target; its offsets there are left alone while it does", "group", g.Group)
				} else {
					f.logger.Info("group has no active member on the target any more; its offsets are synced again", "group", g.Group)
				}
			}
			activeGroups[g.Group] = g.Active
			if echoed := g.Echoed > 0; echoed != echoedGroups[g.Group] {
				if echoed {
					f.logger.Info("group's offsets on the source were committed by kmirror, not by its consumers; they are not carried back",
						"group", g.Group, "partitions", g.Echoed)
				}
				echoedGroups[g.Group] = echoed
			}
			if len(g.Checkpoints) > 0 {
				synced++
				lastSynced[g.Group] = now
			}
			if g.Committed > 0 {
				f.metrics.GroupCommits.WithLabelValues(f.cfg.Name).Add(float64(g.Committed))
			}
		}
		f.metrics.GroupsSynced.WithLabelValues(f.cfg.Name).Set(float64(synced))
		f.metrics.GroupsActive.WithLabelValues(f.cfg.Name).Set(float64(active))
		for g, at := range lastSynced {
			f.metrics.CheckpointAge.WithLabelValues(f.cfg.Name, g).Set(now.Sub(at).Seconds())
		}
	}
}

// syncGroups runs one group sync pass, creating and reading the checkpoint
// topic first if needed.
func (lv *live) syncGroups(ctx context.Context, replicationFactor int) (groupsync.Report, error) {
	lv.groupMu.Lock()
	defer lv.groupMu.Unlock()
	if !lv.seeded {
		if err := lv.store.Ensure(ctx, replicationFactor); err != nil {
			return groupsync.Report{}, err
		}
		cps, err := lv.store.Load(ctx)
		if err != nil {
			return groupsync.Report{}, err
		}
		lv.groups.Seed(cps)
		lv.seeded = true
	}
	return lv.groups.Sync(ctx)
}

// SyncGroupsNow runs one group sync pass of the running flow, as a planned
// failover does after the last record was copied.
func (f *Flow) SyncGroupsNow(ctx context.Context) (groupsync.Report, error) {
	lv := f.live.Load()
	if lv == nil || !f.started.Load() {
		return groupsync.Report{}, errors.New("the flow is not running")
	}
	return lv.syncGroups(ctx, f.cfg.ReplicationFactor)
}

func (f *Flow) groupSyncFailed(ctx context.Context, errLog *retry.Throttle, err error) {
	if ctx.Err() != nil {
		return
	}
	f.metrics.Errors.WithLabelValues(f.cfg.Name, metrics.ErrGroupSync).Inc()
	if errLog.Allow() {
		f.logger.Error("group offset sync failed; retrying", "err", err)
	}
}
