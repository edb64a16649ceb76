package status

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// maxPendingDecompress bounds what one record batch read by OldestPending
// may decompress to: it reads one record per partition.
const maxPendingDecompress = 64 << 20

// OldestPending returns the oldest timestamp among the source records at
// the given offsets (topic → partition → offset), the first records not
// yet copied of lagging partitions: the lag in seconds is the time since
// then. It reads one record of each partition with a consumer built from
// the options of base (a client of the source cluster), at the offset or,
// if retention deleted it, at the partition's start; transaction markers
// and aborted records count, as the copy passes them too.
//
// The figure is approximate: it trusts the records' timestamps (a
// producer may set old ones), and partitions that do not answer before
// ctx ends are left out, as are those whose record batch decompresses
// past maxPendingDecompress (or base's MaxDecompressBatchBytes, if
// lower). ok is false when no partition answered.
func OldestPending(ctx context.Context, base *kgo.Client, from map[string]map[int32]int64) (oldest time.Time, ok bool, err error) {
	parts := map[string]map[int32]kgo.Offset{}
	want := 0
	for topic, ps := range from {
		for p, o := range ps {
			if parts[topic] == nil {
				parts[topic] = map[int32]kgo.Offset{}
			}
			parts[topic][p] = kgo.NewOffset().At(o)
			want++
		}
	}
	if want == 0 {
		return time.Time{}, false, nil
	}
	limit := maxPendingDecompress
	if v, ok := base.OptValue(kgo.MaxDecompressBatchBytes).(int); ok && v > 0 {
		limit = min(limit, v)
	}
	cl, err := kgo.NewClient(append(slices.Clone(base.Opts()),
		kgo.ConsumePartitions(parts),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadUncommitted()),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(200*time.Millisecond),
		kgo.FetchMaxBytes(4<<20),
		kgo.FetchMaxPartitionBytes(64<<10),
		kgo.MaxDecompressBatchBytes(limit),
	)...)
	if err != nil {
		return time.Time{}, false, err
	}
	defer cl.Close()
	type tp struct {
		topic string
		p     int32
	}
	got, skipped := map[tp]bool{}, map[tp]bool{}
	var lastErr error
	for len(got)+len(skipped) < want {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		fetches.EachError(func(topic string, p int32, e error) {
			lastErr = e
			var tooLarge *kgo.ErrDecompressTooLarge
			if errors.As(e, &tooLarge) {
				// Its first record cannot be read within the limit
				// (the flow stops there too): left out, not waited for.
				skipped[tp{topic, p}] = true
			}
		})
		if fetches.Err() != nil && fetches.NumRecords() == 0 {
			select { // do not spin on a partition that fails at once
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
		fetches.EachRecord(func(r *kgo.Record) {
			k := tp{r.Topic, r.Partition}
			if got[k] || skipped[k] {
				return
			}
			got[k] = true
			if oldest.IsZero() || r.Timestamp.Before(oldest) {
				oldest = r.Timestamp
			}
		})
	}
	if len(got) == 0 {
		if lastErr == nil {
			lastErr = ctx.Err()
		}
		return time.Time{}, false, lastErr
	}
	return oldest, true, nil
}
