package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// cluster is a client of one bench broker.
type cluster struct {
	name string
	b    *broker
	cl   *kgo.Client
	adm  *kadm.Client
}

func newCluster(name string, b *broker) (*cluster, error) {
	// kadm answers from metadata cached up to MetadataMinAge (5 s by
	// default), which would hide a topic created meanwhile: the bench
	// wants to see new topics at once.
	cl, err := kgo.NewClient(kgo.SeedBrokers(b.bootstrap()), kgo.RequestTimeoutOverhead(20*time.Second),
		kgo.MetadataMinAge(50*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("client of %s: %w", name, err)
	}
	return &cluster{name: name, b: b, cl: cl, adm: kadm.NewClient(cl)}, nil
}

func (c *cluster) close() { c.cl.Close() }

// createTopics creates the topics with n partitions each and waits until
// every partition has a leader.
func (c *cluster) createTopics(ctx context.Context, n int32, topics ...string) error {
	for chunk := range slices.Chunk(topics, 50) {
		res, err := c.adm.CreateTopics(ctx, n, 1, nil, chunk...)
		if err != nil {
			return fmt.Errorf("creating topics on %s: %w", c.name, err)
		}
		for _, r := range res.Sorted() {
			if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
				return fmt.Errorf("creating topic %s on %s: %w", r.Topic, c.name, r.Err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		md, err := c.adm.Metadata(ctx, topics...)
		if err == nil {
			ready := true
			for _, t := range topics {
				td, ok := md.Topics[t]
				if !ok || td.Err != nil || len(td.Partitions) != int(n) {
					ready = false
					break
				}
				for _, p := range td.Partitions {
					if p.Err != nil || p.Leader < 0 {
						ready = false
					}
				}
			}
			if ready {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topics %s on %s: no leaders yet: %w", summarize(topics), c.name, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// deleteTopics deletes the topics that exist among the given ones.
func (c *cluster) deleteTopics(ctx context.Context, topics ...string) error {
	for chunk := range slices.Chunk(topics, 50) {
		res, err := c.adm.DeleteTopics(ctx, chunk...)
		if err != nil {
			return fmt.Errorf("deleting topics on %s: %w", c.name, err)
		}
		for _, r := range res.Sorted() {
			if r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
				return fmt.Errorf("deleting topic %s on %s: %w", r.Topic, c.name, r.Err)
			}
		}
	}
	return nil
}

// deleteTopicsAndWait deletes the topics and waits until the broker no
// longer lists them, so that they can be created again.
func (c *cluster) deleteTopicsAndWait(ctx context.Context, topics ...string) error {
	if err := c.deleteTopics(ctx, topics...); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		listed, err := c.adm.ListTopics(ctx)
		if err == nil && !slices.ContainsFunc(topics, listed.Has) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topics %s still on %s: %w", summarize(topics), c.name, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// offsets are end offsets by topic and partition.
type offsets map[string]map[int32]int64

func (o offsets) total() int64 {
	var n int64
	for _, ps := range o {
		for _, v := range ps {
			n += v
		}
	}
	return n
}

// endOffsets returns the end offsets of every partition of the topics that
// exist; topics that do not exist (yet) are missing from the result.
func (c *cluster) endOffsets(ctx context.Context, topics ...string) (offsets, error) {
	return c.listOffsets(ctx, false, topics...)
}

// stableOffsets returns the last stable offsets (what a read_committed
// consumer reads up to) of every partition of the topics that exist.
func (c *cluster) stableOffsets(ctx context.Context, topics ...string) (offsets, error) {
	return c.listOffsets(ctx, true, topics...)
}

// visibleOffsets are the end offsets, or the last stable offsets if
// committed.
func (c *cluster) visibleOffsets(ctx context.Context, committed bool, topics ...string) (offsets, error) {
	return c.listOffsets(ctx, committed, topics...)
}

func (c *cluster) listOffsets(ctx context.Context, committed bool, topics ...string) (offsets, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	list := c.adm.ListEndOffsets
	if committed {
		list = c.adm.ListCommittedOffsets
	}
	listed, err := list(ctx, topics...)
	if err != nil {
		return nil, fmt.Errorf("listing end offsets on %s: %w", c.name, err)
	}
	out := offsets{}
	var firstErr error
	listed.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			if !errors.Is(o.Err, kerr.UnknownTopicOrPartition) && !errors.Is(o.Err, kerr.UnknownTopicID) &&
				!errors.Is(o.Err, kerr.NotLeaderForPartition) && !errors.Is(o.Err, kerr.LeaderNotAvailable) && firstErr == nil {
				firstErr = fmt.Errorf("end offset of %s[%d] on %s: %w", o.Topic, o.Partition, c.name, o.Err)
			}
			return
		}
		if out[o.Topic] == nil {
			out[o.Topic] = map[int32]int64{}
		}
		out[o.Topic][o.Partition] = o.Offset
	})
	return out, firstErr
}

// copyWatch follows the copy of source topics into target topics.
type copyWatch struct {
	src, tgt *cluster
	// names maps each source topic to its copy on the target.
	names map[string]string
	// want is the source's end offsets the copy must reach.
	want offsets
	// watched is the replicator, whose exit ends the wait.
	watched *proc
	poll    time.Duration
	// committed: the target is written in transactions (an exactly-once
	// tool). Its offsets then count commit markers too, so they only say
	// when the copy may be complete: the last stable offsets are polled,
	// and once every partition's has reached the source's end offset a
	// read_committed consumer counts the records. The copy is complete at
	// the first poll whose stable offsets covered the last record it
	// needed in every partition.
	committed bool
	counter   *committedCounter
	history   []offsetsAt
}

// offsetsAt is one poll of the target's offsets.
type offsetsAt struct {
	at  time.Time
	got offsets
}

// copyResult is how far a copy got.
type copyResult struct {
	firstRecord time.Time // first poll that saw a record on the target; zero if none
	complete    time.Time // first poll at which every partition was complete; zero if not
	copied      int64     // records on the target at the last poll (at most want per partition)
	want        int64     // records to copy
	duplicates  int64     // records on the target beyond the source's, over all partitions
	got         offsets   // target end offsets at the last poll
}

// wait polls the target's end offsets until every partition of every
// target topic has reached the source's end offset, until deadline, or
// until the watched process exits. It returns what it saw in every case.
func (w *copyWatch) wait(ctx context.Context, deadline time.Time) (copyResult, error) {
	res := copyResult{want: w.want.total()}
	targets := slices.Sorted(maps.Values(w.names))
	if w.committed {
		return w.waitCommitted(ctx, deadline)
	}
	for {
		got, err := w.tgt.endOffsets(ctx, targets...)
		// The time the answer arrived: the target held this much by then.
		now := time.Now()
		if err == nil {
			res.got = got
			done := true
			res.copied, res.duplicates = 0, 0
			for src, ps := range w.want {
				for p, want := range ps {
					have := got[w.names[src]][p]
					res.copied += min(have, want)
					res.duplicates += max(have-want, 0)
					if have < want {
						done = false
					}
				}
			}
			if res.firstRecord.IsZero() && got.total() > 0 {
				res.firstRecord = now
			}
			if done {
				res.complete = now
				return res, nil
			}
		}
		if w.watched != nil && w.watched.exited() {
			return res, w.watched.exitError()
		}
		if now.After(deadline) {
			return res, fmt.Errorf("not complete within the time budget: %d of %d records copied", res.copied, res.want)
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(w.poll):
		}
	}
}

// verification compares a finished copy with its source, partition by
// partition.
type verification struct {
	ok          bool
	partitions  int   // source partitions compared
	records     int64 // source records
	extra       int64 // records on the target beyond the source's (duplicates)
	extraParts  int   // partitions with extra records
	missing     int64 // source records not on the target
	missingPart int   // partitions with missing records
	examples    []string
	shapeIssues []string
	logNote     string // what the replicator's log says, when not ok
}

func (v verification) String() string {
	if v.ok {
		return fmt.Sprintf("verified: %d records in %d partitions, equal counts in every partition", v.records, v.partitions)
	}
	var parts []string
	parts = append(parts, v.shapeIssues...)
	if v.extra > 0 {
		parts = append(parts, fmt.Sprintf("%d records more than the source (duplicates) in %d partitions", v.extra, v.extraParts))
	}
	if v.missing > 0 {
		parts = append(parts, fmt.Sprintf("%d records missing in %d partitions", v.missing, v.missingPart))
	}
	if len(v.examples) > 0 {
		parts = append(parts, "e.g. "+strings.Join(v.examples, ", "))
	}
	return "NOT verified: " + strings.Join(parts, "; ")
}

// short is a brief form of v for a table cell.
func (v verification) short() string {
	switch {
	case v.ok:
		return "verified"
	case v.extra > 0 && v.missing == 0 && len(v.shapeIssues) == 0:
		return fmt.Sprintf("not verified: %d duplicates", v.extra)
	}
	return "not verified"
}

// verifyCopy checks that every target topic has the source topic's
// partition count and, in every partition, exactly as many records as the
// source (target topics start empty, so the end offset is the count).
//
// If committed (an exactly-once tool's copy, written in transactions), the
// records of every target partition are counted by a read_committed
// consumer instead: the offsets count commit markers too.
func verifyCopy(ctx context.Context, src, tgt *cluster, names map[string]string, committed bool) (verification, error) {
	var v verification
	sources := slices.Sorted(maps.Keys(names))
	targets := slices.Sorted(maps.Values(names))
	want, err := src.endOffsets(ctx, sources...)
	if err != nil {
		return v, err
	}
	var got offsets
	starts := kadm.ListedOffsets{}
	if committed {
		if got, err = countCommitted(ctx, tgt, targets); err != nil {
			return v, err
		}
	} else {
		if got, err = tgt.endOffsets(ctx, targets...); err != nil {
			return v, err
		}
		if starts, err = tgt.adm.ListStartOffsets(ctx, targets...); err != nil {
			return v, fmt.Errorf("listing start offsets on %s: %w", tgt.name, err)
		}
	}
	for _, s := range sources {
		t := names[s]
		if len(got[t]) != len(want[s]) {
			v.shapeIssues = append(v.shapeIssues, fmt.Sprintf("%s has %d partitions, %s has %d", t, len(got[t]), s, len(want[s])))
		}
		for _, p := range slices.Sorted(maps.Keys(want[s])) {
			n := want[s][p]
			v.partitions++
			v.records += n
			start, _ := starts.Lookup(t, p)
			have := got[t][p] - start.Offset
			switch {
			case have > n:
				v.extra += have - n
				v.extraParts++
			case have < n:
				v.missing += n - have
				v.missingPart++
			default:
				continue
			}
			if len(v.examples) < 3 {
				v.examples = append(v.examples, fmt.Sprintf("%s[%d]: %d records, source has %d", t, p, have, n))
			}
		}
	}
	v.ok = v.extra == 0 && v.missing == 0 && len(v.shapeIssues) == 0
	return v, nil
}

// waitFirstRecord polls the target topics every poll until one of them
// holds a record, and returns when it saw it.
// If committed, it polls the last stable offsets: a record written in a
// transaction is visible once the transaction committed.
func waitFirstRecord(ctx context.Context, tgt *cluster, topics []string, poll time.Duration, deadline time.Time, watched *proc, committed bool) (time.Time, error) {
	for {
		got, err := tgt.visibleOffsets(ctx, committed, topics...)
		now := time.Now()
		if err == nil && got.total() > 0 {
			return now, nil
		}
		if watched != nil && watched.exited() {
			return time.Time{}, watched.exitError()
		}
		if now.After(deadline) {
			return time.Time{}, errors.New("no record on the target within the time budget")
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-time.After(poll):
		}
	}
}

// summarize names a list of topics briefly.
func summarize(topics []string) string {
	if len(topics) <= 3 {
		return strings.Join(topics, ", ")
	}
	return fmt.Sprintf("%s, … (%d topics)", strings.Join(topics[:2], ", "), len(topics))
}

// waitCommitted is wait for a target written in transactions.
func (w *copyWatch) waitCommitted(ctx context.Context, deadline time.Time) (copyResult, error) {
	res := copyResult{want: w.want.total()}
	targets := slices.Sorted(maps.Values(w.names))
	// want by target topic
	want := offsets{}
	for src, ps := range w.want {
		want[w.names[src]] = ps
	}
	if w.counter == nil {
		c, err := newCommittedCounter(w.tgt.b.bootstrap(), targets)
		if err != nil {
			return res, err
		}
		w.counter = c
	}
	w.counter.want = want
	// A later wait (with a new want) goes on from the counts so far.
	w.history = w.history[:0]
	for {
		got, err := w.tgt.stableOffsets(ctx, targets...)
		now := time.Now()
		if err == nil {
			w.history = append(w.history, offsetsAt{now, got})
			if res.firstRecord.IsZero() && got.total() > 0 {
				res.firstRecord = now
			}
			res.got = got
			maybe := true
			for t, ps := range want {
				for p, n := range ps {
					if got[t][p] < n {
						maybe = false
					}
				}
			}
			if maybe {
				// Count what is visible, for at most a second before the
				// next poll.
				if err := w.counter.drain(ctx, 300*time.Millisecond, time.Second); err != nil {
					return res, err
				}
			}
			res.copied, res.duplicates = w.counter.progress()
			if at, ok := w.completeAt(); ok {
				res.complete = at
				return res, nil
			}
		}
		if w.watched != nil && w.watched.exited() {
			return res, w.watched.exitError()
		}
		if now.After(deadline) {
			_ = w.counter.drain(ctx, 500*time.Millisecond, time.Minute)
			res.copied, res.duplicates = w.counter.progress()
			return res, fmt.Errorf("not complete within the time budget: %d of %d records visible to read_committed consumers", res.copied, res.want)
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(w.poll):
		}
	}
}

// completeAt returns the time of the first poll whose stable offsets
// covered, in every partition, the record that completed its count.
func (w *copyWatch) completeAt() (time.Time, bool) {
	reach, ok := w.counter.reached()
	if !ok {
		return time.Time{}, false
	}
	for _, h := range w.history {
		all := true
		for t, ps := range reach {
			for p, o := range ps {
				if h.got[t][p] < o {
					all = false
				}
			}
		}
		if all {
			return h.at, true
		}
	}
	return time.Time{}, false
}

// close releases the watch's consumer, if any.
func (w *copyWatch) close() {
	if w.counter != nil {
		w.counter.close()
	}
}

// committedCounter counts the records a read_committed consumer sees in
// target topics, partition by partition.
type committedCounter struct {
	cl    *kgo.Client
	count offsets
	// last is the offset after the last record counted; reach the offset
	// after the record that brought the count to want.
	last, reach offsets
	want        offsets
}

func newCommittedCounter(bootstrap string, topics []string) (*committedCounter, error) {
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(bootstrap),
		kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(200*time.Millisecond),
		kgo.FetchMaxBytes(fetchMaxBytes),
		kgo.FetchMaxPartitionBytes(fetchMaxPartBytes),
		kgo.MetadataMinAge(200*time.Millisecond),
	)
	if err != nil {
		return nil, fmt.Errorf("creating the read_committed counting consumer: %w", err)
	}
	return &committedCounter{cl: cl, count: offsets{}, last: offsets{}, reach: offsets{}}, nil
}

func (c *committedCounter) close() { c.cl.Close() }

// drain counts records until no record arrives for idle, or for at most
// budget.
func (c *committedCounter) drain(ctx context.Context, idle, budget time.Duration) error {
	end := time.Now().Add(budget)
	for time.Now().Before(end) {
		pctx, cancel := context.WithTimeout(ctx, idle)
		fetches := c.cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		n := 0
		var ferr error
		fetches.EachError(func(t string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) && ferr == nil {
				ferr = fmt.Errorf("counting %s[%d]: %w", t, p, err)
			}
		})
		if ferr != nil {
			return ferr
		}
		fetches.EachRecord(func(r *kgo.Record) {
			n++
			if c.count[r.Topic] == nil {
				c.count[r.Topic] = map[int32]int64{}
				c.last[r.Topic] = map[int32]int64{}
				c.reach[r.Topic] = map[int32]int64{}
			}
			c.count[r.Topic][r.Partition]++
			c.last[r.Topic][r.Partition] = r.Offset + 1
			if w, ok := c.want[r.Topic][r.Partition]; ok && c.count[r.Topic][r.Partition] == w {
				c.reach[r.Topic][r.Partition] = r.Offset + 1
			}
		})
		if n == 0 {
			return nil
		}
	}
	return nil
}

// progress returns the records counted, at most want per partition, and
// those beyond want.
func (c *committedCounter) progress() (copied, extra int64) {
	for t, ps := range c.want {
		for p, w := range ps {
			have := c.count[t][p]
			copied += min(have, w)
			extra += max(have-w, 0)
		}
	}
	return copied, extra
}

// reached returns, once every partition holds want records, the offset
// after the record that completed each partition's count.
func (c *committedCounter) reached() (offsets, bool) {
	out := offsets{}
	for t, ps := range c.want {
		out[t] = map[int32]int64{}
		for p, w := range ps {
			if c.count[t][p] < w {
				return nil, false
			}
			if w == 0 {
				out[t][p] = 0
				continue
			}
			o, ok := c.reach[t][p]
			if !ok {
				// The count passed want before want was set: the
				// partition was complete by its last counted record.
				o = c.last[t][p]
			}
			out[t][p] = o
		}
	}
	return out, true
}

// countCommitted counts the records a read_committed consumer reads in
// every partition of the topics, from the start to the last stable offset
// (the topics are not being written).
func countCommitted(ctx context.Context, c *cluster, topics []string) (offsets, error) {
	lso, err := c.stableOffsets(ctx, topics...)
	if err != nil {
		return nil, err
	}
	counter, err := newCommittedCounter(c.b.bootstrap(), topics)
	if err != nil {
		return nil, err
	}
	defer counter.close()
	// Read until nothing comes for 2 s (the last records of a partition
	// may be followed by markers, so offsets cannot say when it is read
	// through); at most 5 minutes.
	deadline := time.Now().Add(5 * time.Minute)
	for try := 0; ; try++ {
		if err := counter.drain(ctx, 2*time.Second, time.Minute); err != nil {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("counting the records of %s on %s: still reading after 5 minutes", summarize(topics), c.name)
		}
		// A pause of 2 s may come before the first fetch: go on (twice at
		// most) while a partition with offsets has no record counted yet.
		pending := false
		for t, ps := range lso {
			for p, o := range ps {
				if o > 0 && counter.count[t][p] == 0 {
					pending = true
				}
			}
		}
		if !pending || try >= 2 {
			break
		}
	}
	out := offsets{}
	for t, ps := range lso {
		out[t] = map[int32]int64{}
		for p := range ps {
			out[t][p] = counter.count[t][p]
		}
	}
	return out, nil
}
