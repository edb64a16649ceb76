package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ---------------------------------------------------------------------
// Scenario 6: offset translation exactness.

const (
	offsetsGroup      = "offsets-billing"
	offsetsPartitions = 2
	offsetsBatches    = 30 // compacted batches and transactions
	offsetsSyncBudget = 60 * time.Second
	offsetsSettle     = 2 * time.Second // two sync intervals without a change
)

// offsetsTopics are the scenario's source topics, in report order.
var offsetsTopics = []string{"offsets-plain", "offsets-compacted", "offsets-txn"}

// offsetsResult is the outcome of the offset translation scenario.
type offsetsResult struct {
	produced   int64 // records written to the source, aborted ones included
	visible    int64 // records a read_committed consumer sees on the source
	endOffsets int64 // sum of the source's end offsets
	consumed   int64 // records the group consumed on the source
	committed  map[string]map[int32]int64
	// remainingN is, per partition, how many visible records the group had
	// not yet consumed on the source.
	remainingN map[string]map[int32]int
	prepNote   string
	runs       []*offsetsRun
}

// offsetsRun is one replicator's translation of the group's offsets.
type offsetsRun struct {
	tool     string
	err      string
	synced   bool                       // the target group had settled offsets on every partition
	copied   time.Duration              // process start → every record on the target
	syncedAt time.Duration              // process start → offsets on every partition, settled
	target   map[string]map[int32]int64 // the target group's committed offsets, by source topic
	parts    map[string]map[int32]*partitionExactness
}

// partitionExactness is what the target group read on one partition.
type partitionExactness struct {
	read       int // records the target consumer read
	duplicates int // of those, records the group had consumed on the source
	missing    int // records the group had not consumed and did not get
	other      int // records read that are neither (read twice, or never visible on the source)
}

func (r *offsetsRun) totals() (dup, miss, other int) {
	for _, ps := range r.parts {
		for _, p := range ps {
			dup += p.duplicates
			miss += p.missing
			other += p.other
		}
	}
	return
}

// offsetsSnapshot is the source as the group left it.
type offsetsSnapshot struct {
	consumed  map[string]map[int32]map[string]bool // values the group consumed
	remaining map[string]map[int32]map[string]bool // values it had not
}

func (h *harness) runOffsets(ctx context.Context) error {
	res := &offsetsResult{}
	h.report.offsets = res
	snap, err := h.prepareOffsets(ctx, res)
	if err != nil {
		return err
	}
	h.checkpoint()
	for _, tool := range []string{toolKmirror, toolMM2} {
		if !h.selected(tool) {
			continue
		}
		r, err := h.offsetsOnce(ctx, tool, snap, res)
		if r != nil {
			res.runs = append(res.runs, r)
		}
		if err != nil {
			return err
		}
		h.checkpoint()
	}
	return nil
}

// prepareOffsets writes the three source topics, waits for compaction,
// and has the group consume half of every partition and commit.
func (h *harness) prepareOffsets(ctx context.Context, res *offsetsResult) (*offsetsSnapshot, error) {
	n := int64(h.opts.offsetsRecords)
	plainN := n * 4 / 10
	compactN := n * 3 / 10
	txnN := n - plainN - compactN
	keys := max(compactN/10, 2)
	plain, compacted, txn := offsetsTopics[0], offsetsTopics[1], offsetsTopics[2]
	h.logf("offsets: writing %d records (%d plain, %d compacted over %d keys, %d transactional of which a third aborted)", n, plainN, compactN, keys, txnN)

	if err := h.src.createTopics(ctx, offsetsPartitions, plain, txn); err != nil {
		return nil, err
	}
	if _, err := h.src.adm.CreateTopic(ctx, offsetsPartitions, 1, map[string]*string{
		"cleanup.policy": new("compact"), "segment.ms": new("100"), "min.cleanable.dirty.ratio": new("0.01"), "delete.retention.ms": new("100"),
	}, compacted); err != nil {
		return nil, fmt.Errorf("creating %s: %w", compacted, err)
	}
	if err := h.src.createTopics(ctx, offsetsPartitions, compacted); err != nil {
		return nil, err
	}
	prod, err := kgo.NewClient(producerOpts(h.src.b.bootstrap())...)
	if err != nil {
		return nil, fmt.Errorf("creating the producer: %w", err)
	}
	defer prod.Close()
	produce := func(recs []*kgo.Record) error {
		if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			return fmt.Errorf("producing: %w", err)
		}
		return nil
	}
	var recs []*kgo.Record
	for i := range plainN {
		recs = append(recs, &kgo.Record{Topic: plain, Partition: int32(i % offsetsPartitions), Key: fmt.Appendf(nil, "k%d", i), Value: fmt.Appendf(nil, "plain-%d", i)})
	}
	if err := produce(recs); err != nil {
		return nil, err
	}
	// compacted: in batches, so that segments roll (segment.ms 100) and the
	// cleaner removes overwritten records.
	per := compactN / offsetsBatches
	for b := range int64(offsetsBatches) {
		recs = recs[:0]
		for i := range per {
			k := b*per + i
			recs = append(recs, &kgo.Record{Topic: compacted, Partition: int32(k % offsetsPartitions), Key: fmt.Appendf(nil, "key-%d", k%keys), Value: fmt.Appendf(nil, "compacted-%d", k)})
		}
		if err := produce(recs); err != nil {
			return nil, err
		}
		time.Sleep(120 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	// One more record per partition rolls the last full segment.
	recs = recs[:0]
	for p := range int32(offsetsPartitions) {
		recs = append(recs, &kgo.Record{Topic: compacted, Partition: p, Key: []byte("roll"), Value: fmt.Appendf(nil, "compacted-roll-%d", p)})
	}
	if err := produce(recs); err != nil {
		return nil, err
	}
	res.produced = plainN + per*offsetsBatches + offsetsPartitions

	// txn: transactions of equal size, every third aborted.
	txCl, err := kgo.NewClient(append(producerOpts(h.src.b.bootstrap()), kgo.TransactionalID("bench-offsets-txn"))...)
	if err != nil {
		return nil, fmt.Errorf("creating the transactional producer: %w", err)
	}
	defer txCl.Close()
	per = txnN / offsetsBatches
	for b := range int64(offsetsBatches) {
		if err := txCl.BeginTransaction(); err != nil {
			return nil, fmt.Errorf("beginning a transaction: %w", err)
		}
		var perr produceErrors
		for i := range per {
			k := b*per + i
			txCl.Produce(ctx, &kgo.Record{Topic: txn, Partition: int32(k % offsetsPartitions), Key: fmt.Appendf(nil, "t%d", k), Value: fmt.Appendf(nil, "txn-%d-batch-%d", k, b)}, perr.promise)
		}
		if err := txCl.Flush(ctx); err != nil {
			return nil, fmt.Errorf("flushing a transaction: %w", err)
		}
		if err := perr.get(); err != nil {
			return nil, fmt.Errorf("producing a transaction: %w", err)
		}
		if err := txCl.EndTransaction(ctx, kgo.TransactionEndTry(b%3 != 2)); err != nil {
			return nil, fmt.Errorf("ending a transaction: %w", err)
		}
	}
	res.produced += per * offsetsBatches

	// Wait for the cleaner: fewer records than half the offsets.
	h.logf("offsets: waiting for the cleaner to compact %s", compacted)
	deadline := time.Now().Add(90 * time.Second)
	for {
		rs, err := readVisible(ctx, h.src.b.bootstrap(), []string{compacted}, time.Second)
		if err != nil {
			return nil, err
		}
		ends, err := h.src.endOffsets(ctx, compacted)
		if err != nil {
			return nil, err
		}
		got, end := countRecords(rs), ends.total()
		if got < end/2 {
			h.logf("offsets: %s compacted: %d records in %d offsets", compacted, got, end)
			break
		}
		if time.Now().After(deadline) {
			res.prepNote = fmt.Sprintf("%s was not compacted within 90 s (%d records in %d offsets); measured anyway", compacted, got, end)
			h.logf("offsets: %s", res.prepNote)
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	// Freeze compaction, so that what the group has not consumed stays
	// on the source while the replicators copy it (the replicators copy
	// these settings to the target too).
	alter := []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "segment.ms", Value: new("604800000")},
		{Op: kadm.SetConfig, Name: "min.cleanable.dirty.ratio", Value: new("0.99")},
	}
	if ar, err := h.src.adm.AlterTopicConfigs(ctx, alter, compacted); err != nil {
		return nil, fmt.Errorf("freezing compaction: %w", err)
	} else {
		for _, x := range ar {
			if x.Err != nil {
				return nil, fmt.Errorf("freezing compaction of %s: %w (%s)", x.Name, x.Err, x.ErrMessage)
			}
		}
	}
	time.Sleep(time.Second)

	// The group consumes half of every partition, read_committed, and
	// commits.
	before, err := readVisible(ctx, h.src.b.bootstrap(), offsetsTopics, 2*time.Second)
	if err != nil {
		return nil, err
	}
	res.visible = countRecords(before)
	ends, err := h.src.endOffsets(ctx, offsetsTopics...)
	if err != nil {
		return nil, err
	}
	res.endOffsets = ends.total()
	if res.consumed, err = consumeHalf(ctx, h.src.b.bootstrap(), offsetsGroup, before); err != nil {
		return nil, err
	}
	fetched, err := h.src.adm.FetchOffsets(ctx, offsetsGroup)
	if err != nil {
		return nil, fmt.Errorf("fetching the group's offsets: %w", err)
	}
	res.committed = map[string]map[int32]int64{}
	fetched.Each(func(o kadm.OffsetResponse) {
		if o.Err == nil {
			if res.committed[o.Topic] == nil {
				res.committed[o.Topic] = map[int32]int64{}
			}
			res.committed[o.Topic][o.Partition] = o.At
		}
	})
	// What the group consumed and what it has left, from the source as it
	// is now.
	after, err := readVisible(ctx, h.src.b.bootstrap(), offsetsTopics, 2*time.Second)
	if err != nil {
		return nil, err
	}
	snap := &offsetsSnapshot{consumed: map[string]map[int32]map[string]bool{}, remaining: map[string]map[int32]map[string]bool{}}
	res.remainingN = map[string]map[int32]int{}
	for _, t := range offsetsTopics {
		snap.consumed[t], snap.remaining[t], res.remainingN[t] = map[int32]map[string]bool{}, map[int32]map[string]bool{}, map[int32]int{}
		for p := range int32(offsetsPartitions) {
			at, ok := res.committed[t][p]
			if !ok {
				return nil, fmt.Errorf("the group committed no offset for %s[%d]", t, p)
			}
			snap.consumed[t][p], snap.remaining[t][p] = map[string]bool{}, map[string]bool{}
			for _, r := range after[t][p] {
				if r.offset < at {
					snap.consumed[t][p][r.value] = true
				} else {
					snap.remaining[t][p][r.value] = true
				}
			}
			res.remainingN[t][p] = len(snap.remaining[t][p])
			if len(snap.remaining[t][p]) == 0 {
				return nil, fmt.Errorf("%s[%d]: the group has nothing left to read on the source", t, p)
			}
		}
	}
	h.logf("offsets: %d records written, %d visible in %d offsets; group %s consumed %d and committed %v", res.produced, res.visible, res.endOffsets, offsetsGroup, res.consumed, res.committed)
	return snap, nil
}

// offsetsOnce runs tool until it copied everything and synced the group's
// offsets, then reads the target as the group and compares.
func (h *harness) offsetsOnce(ctx context.Context, tool string, snap *offsetsSnapshot, res *offsetsResult) (*offsetsRun, error) {
	r := &offsetsRun{tool: tool}
	names := targetNames(tool, offsetsTopics)
	targets := make([]string, 0, len(names))
	for _, t := range offsetsTopics {
		targets = append(targets, names[t])
	}
	// The group on the target starts without offsets for every tool.
	// (Before the first run the target has no group coordinator yet.)
	if listed, err := h.tgt.adm.ListGroups(ctx); err == nil && slices.Contains(listed.Groups(), offsetsGroup) {
		if dr, err := h.tgt.adm.DeleteGroup(ctx, offsetsGroup); err != nil || (dr.Err != nil && !errors.Is(dr.Err, kerr.GroupIDNotFound)) {
			return nil, fmt.Errorf("deleting group %s on the target: %w", offsetsGroup, errors.Join(err, dr.Err))
		}
	}
	h.logf("%s: copying %s and syncing group %s", tool, summarize(offsetsTopics), offsetsGroup)
	l, err := h.launch(tool, toolRun{id: "offsets-" + slug(tool), topics: "offsets-(plain|compacted|txn)", group: offsetsGroup})
	if err != nil {
		return nil, err
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			h.stopTool(l)
		}
	}
	defer stop()

	// Copied: every partition holds as many visible records as the source.
	want := map[string]map[int32]int{}
	for _, t := range offsetsTopics {
		want[t] = map[int32]int{}
		for p := range int32(offsetsPartitions) {
			want[t][p] = len(snap.consumed[t][p]) + len(snap.remaining[t][p])
		}
	}
	copyDeadline := l.started.Add(3 * time.Minute)
	for {
		got, err := readVisible(ctx, h.tgt.b.bootstrap(), targets, time.Second)
		if err != nil {
			return r, err
		}
		done := true
		for _, t := range offsetsTopics {
			for p, n := range want[t] {
				if len(got[names[t]][p]) < n {
					done = false
				}
			}
		}
		if done {
			r.copied = time.Since(l.started)
			break
		}
		if l.exited() {
			r.err = toolFailure(l, l.exitError())
			return r, nil
		}
		if time.Now().After(copyDeadline) {
			r.err = toolFailure(l, errors.New("did not copy every record within 3 minutes"))
			return r, nil
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	h.logf("%s: every record copied %s after process start; waiting for the group's offsets on the target", tool, r.copied.Round(time.Millisecond))

	// Synced: the target group has offsets on all 6 partitions and they
	// have not changed for two sync intervals.
	syncDeadline := time.Now().Add(offsetsSyncBudget)
	var last map[string]map[int32]int64
	lastChange := time.Now()
	for {
		cur, err := h.groupOffsets(ctx, h.tgt, names)
		if err == nil {
			if !equalOffsets(cur, last) {
				last, lastChange = cur, time.Now()
			}
			if countOffsets(last) == len(offsetsTopics)*offsetsPartitions && time.Since(lastChange) >= offsetsSettle {
				r.synced = true
				r.syncedAt = lastChange.Sub(l.started)
				break
			}
		}
		if l.exited() {
			r.err = toolFailure(l, l.exitError())
			break
		}
		if time.Now().After(syncDeadline) {
			r.err = toolFailure(l, fmt.Errorf("did not sync within budget: %d of %d partitions of group %s have offsets on the target %s after every record was copied",
				countOffsets(last), len(offsetsTopics)*offsetsPartitions, offsetsGroup, offsetsSyncBudget))
			break
		}
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	r.target = last
	stop()
	if r.synced {
		h.logf("%s: group offsets on the target settled %s after process start: %v", tool, r.syncedAt.Round(time.Millisecond), last)
	} else {
		h.logf("%s: %s", tool, firstLine(r.err))
	}

	// The same group on the target reads every partition to the end.
	got, err := consumeAsGroup(ctx, h.tgt.b.bootstrap(), offsetsGroup, targets)
	if err != nil {
		return r, err
	}
	r.parts = map[string]map[int32]*partitionExactness{}
	for _, t := range offsetsTopics {
		r.parts[t] = map[int32]*partitionExactness{}
		for p := range int32(offsetsPartitions) {
			e := &partitionExactness{}
			seen := map[string]bool{}
			for _, v := range got[names[t]][p] {
				e.read++
				switch {
				case snap.consumed[t][p][v]:
					e.duplicates++
				case snap.remaining[t][p][v] && !seen[v]:
					seen[v] = true
				default:
					e.other++
				}
			}
			e.missing = len(snap.remaining[t][p]) - len(seen)
			r.parts[t][p] = e
		}
	}
	dup, miss, other := r.totals()
	h.logf("%s: the target group read %d duplicates, missed %d (other records: %d)", tool, dup, miss, other)
	return r, nil
}

// groupOffsets returns offsetsGroup's committed offsets on c for the
// target topics of names, by source topic.
func (h *harness) groupOffsets(ctx context.Context, c *cluster, names map[string]string) (map[string]map[int32]int64, error) {
	fetched, err := c.adm.FetchOffsets(ctx, offsetsGroup)
	if err != nil {
		return nil, err
	}
	out := map[string]map[int32]int64{}
	for src, tgt := range names {
		for p := range int32(offsetsPartitions) {
			if o, ok := fetched.Lookup(tgt, p); ok && o.Err == nil && o.At >= 0 {
				if out[src] == nil {
					out[src] = map[int32]int64{}
				}
				out[src][p] = o.At
			}
		}
	}
	return out, nil
}

func equalOffsets(a, b map[string]map[int32]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for t, ps := range a {
		if !maps.Equal(ps, b[t]) {
			return false
		}
	}
	return true
}

func countOffsets(o map[string]map[int32]int64) int {
	n := 0
	for _, ps := range o {
		n += len(ps)
	}
	return n
}

// visibleRecord is a record a read_committed consumer sees.
type visibleRecord struct {
	offset int64
	value  string
}

// readVisible reads the topics from the start as a read_committed
// consumer until it has been idle for idle.
func readVisible(ctx context.Context, bootstrap string, topics []string, idle time.Duration) (map[string]map[int32][]visibleRecord, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ConsumeTopics(topics...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("creating a consumer: %w", err)
	}
	defer cl.Close()
	out := map[string]map[int32][]visibleRecord{}
	for {
		pctx, cancel := context.WithTimeout(ctx, idle)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if fs.NumRecords() == 0 && pctx.Err() != nil {
			return out, nil
		}
		fs.EachRecord(func(r *kgo.Record) {
			if out[r.Topic] == nil {
				out[r.Topic] = map[int32][]visibleRecord{}
			}
			out[r.Topic][r.Partition] = append(out[r.Topic][r.Partition], visibleRecord{r.Offset, string(r.Value)})
		})
	}
}

func countRecords(rs map[string]map[int32][]visibleRecord) int64 {
	var n int64
	for _, ps := range rs {
		for _, l := range ps {
			n += int64(len(l))
		}
	}
	return n
}

// consumeHalf consumes, as group and read_committed, exactly the first half
// of the visible records of every partition in visible, marks them and
// commits.
func consumeHalf(ctx context.Context, bootstrap, group string, visible map[string]map[int32][]visibleRecord) (int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ConsumerGroup(group), kgo.ConsumeTopics(offsetsTopics...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.AutoCommitMarks(), kgo.AutoCommitInterval(time.Hour),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return 0, fmt.Errorf("creating the group consumer: %w", err)
	}
	defer cl.Close()
	var want, consumed int64
	for _, ps := range visible {
		for _, l := range ps {
			want += int64(len(l) / 2)
		}
	}
	seen := map[string]map[int32]int{}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for consumed < want {
		fs := cl.PollFetches(cctx)
		if cctx.Err() != nil {
			return consumed, fmt.Errorf("the group consumed %d of %d records: %w", consumed, want, cctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			if seen[r.Topic] == nil {
				seen[r.Topic] = map[int32]int{}
			}
			if seen[r.Topic][r.Partition] < len(visible[r.Topic][r.Partition])/2 {
				seen[r.Topic][r.Partition]++
				consumed++
				cl.MarkCommitRecords(r)
			}
		})
	}
	if err := cl.CommitMarkedOffsets(cctx); err != nil {
		return consumed, fmt.Errorf("committing the group's offsets: %w", err)
	}
	return consumed, nil
}

// consumeAsGroup consumes the topics as group, read_committed, from its
// committed offsets (from the start where it has none) until idle for 3 s,
// without committing.
func consumeAsGroup(ctx context.Context, bootstrap, group string, topics []string) (map[string]map[int32][]string, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topics...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return nil, fmt.Errorf("creating the target consumer: %w", err)
	}
	defer cl.Close()
	out := map[string]map[int32][]string{}
	for {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if fs.NumRecords() == 0 && pctx.Err() != nil {
			return out, nil
		}
		fs.EachRecord(func(r *kgo.Record) {
			if out[r.Topic] == nil {
				out[r.Topic] = map[int32][]string{}
			}
			out[r.Topic][r.Partition] = append(out[r.Topic][r.Partition], string(r.Value))
		})
	}
}

// ---------------------------------------------------------------------
// Report.

func (r *report) offsetsRun(tool string) *offsetsRun {
	if r.offsets == nil {
		return nil
	}
	for _, x := range r.offsets.runs {
		if x.tool == tool {
			return x
		}
	}
	return nil
}

// offsetsFigure is a total of tool's run, if it synced.
func (r *report) offsetsFigure(tool string, f func(dup, miss int) int) figure {
	x := r.offsetsRun(tool)
	switch {
	case x == nil:
		return missing("")
	case x.parts == nil:
		return missing("did not finish")
	case !x.synced:
		return missing("did not sync within budget")
	}
	dup, miss, _ := x.totals()
	v := f(dup, miss)
	// A ratio of counts makes sense only when both are above 0.
	return figure{v: float64(v), ok: true, noRatio: v == 0}
}

func (r *report) offsetsRows() []row {
	if r.offsets == nil || len(r.offsets.runs) == 0 {
		return nil
	}
	dup := func(d, _ int) int { return d }
	miss := func(_, m int) int { return m }
	return []row{
		{label: "6. Offset translation: records the group re-reads on the target (duplicates), 6 partitions", better: "lower", format: "%.0f",
			km: r.offsetsFigure(toolKmirror, dup), mm2: r.offsetsFigure(toolMM2, dup), ceil: missing("")},
		{label: "6. Offset translation: records the group misses on the target, 6 partitions", better: "lower", format: "%.0f",
			km: r.offsetsFigure(toolKmirror, miss), mm2: r.offsetsFigure(toolMM2, miss), ceil: missing("")},
	}
}

func (r *report) renderOffsets(w func(string, ...any)) {
	o := r.offsets
	if o == nil {
		return
	}
	w("## 6. Offset translation exactness\n\n")
	w("The source holds three topics of %d partitions: `%s` (plain), `%s` (compacted: `segment.ms=100`, `min.cleanable.dirty.ratio=0.01`, %d batches with many overwrites of each key, then the bench waits until the cleaner has removed at least half of the offsets' records and freezes compaction with `segment.ms` of 7 days and `min.cleanable.dirty.ratio=0.99`) and `%s` (%d transactions of a transactional producer, every third aborted). %d records were written (aborted ones included); a read_committed consumer sees %d of them in %d offsets. Every record has a unique value.\n\n",
		offsetsPartitions, offsetsTopics[0], offsetsTopics[1], offsetsBatches, offsetsTopics[2], offsetsBatches, o.produced, o.visible, o.endOffsets)
	w("A consumer group `%s` (read_committed) consumes exactly the first half of the visible records of every partition on the source and commits: %d records. Then each replicator in turn (target group deleted before each) copies the three topics to its own target topics (`km.*`, `source.*`) with group offset sync every second, reading the source read_committed; the bench waits until every visible record is on the target and the target group `%s` has committed offsets on all %d partitions that have not changed for %s (at most %s after the copy, else *did not sync within budget*). The replicator is stopped, and a consumer of the same group on the target (read_committed) reads every partition to its end. Per partition, *duplicates* are records it read that the group had already consumed on the source; *missing* are records the group had not consumed on the source and did not get on the target. Exact translation is 0 and 0.\n\n",
		offsetsGroup, o.consumed, offsetsGroup, len(offsetsTopics)*offsetsPartitions, offsetsSettle, offsetsSyncBudget)
	km, mm := r.offsetsRun(toolKmirror), r.offsetsRun(toolMM2)
	cell := func(x *offsetsRun, t string, p int32, f func(*partitionExactness) int) string {
		if x == nil || x.parts == nil {
			return "—"
		}
		return fmt.Sprint(f(x.parts[t][p]))
	}
	target := func(x *offsetsRun, t string, p int32) string {
		if x == nil {
			return "—"
		}
		if v, ok := x.target[t][p]; ok {
			return fmt.Sprint(v)
		}
		return "none"
	}
	dup := func(e *partitionExactness) int { return e.duplicates }
	miss := func(e *partitionExactness) int { return e.missing }
	w("| topic | partition | source: group's committed offset | source: records left to read | kmirror: target offset | kmirror duplicates | kmirror missing | MM2: target offset | MM2 duplicates | MM2 missing |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	var left int
	for _, t := range offsetsTopics {
		for p := range int32(offsetsPartitions) {
			left += o.remainingN[t][p]
			w("| %s | %d | %d | %d | %s | %s | %s | %s | %s | %s |\n", t, p, o.committed[t][p], o.remainingN[t][p],
				target(km, t, p), cell(km, t, p, dup), cell(km, t, p, miss), target(mm, t, p), cell(mm, t, p, dup), cell(mm, t, p, miss))
		}
	}
	total := func(x *offsetsRun, f func(dup, miss int) int) string {
		if x == nil || x.parts == nil {
			return "—"
		}
		d, m, _ := x.totals()
		return fmt.Sprintf("**%d**", f(d, m))
	}
	w("| **total** | | | %d | | %s | %s | | %s | %s |\n\n", left,
		total(km, func(d, _ int) int { return d }), total(km, func(_, m int) int { return m }),
		total(mm, func(d, _ int) int { return d }), total(mm, func(_, m int) int { return m }))
	w("| | kmirror | MM2 |\n|---|---:|---:|\n")
	line := func(label string, f func(*offsetsRun) string) {
		w("| %s |", label)
		for _, x := range []*offsetsRun{km, mm} {
			if x == nil {
				w(" — |")
				continue
			}
			w(" %s |", f(x))
		}
		w("\n")
	}
	line("result", func(x *offsetsRun) string {
		switch {
		case x.parts == nil:
			return "**did not finish**"
		case !x.synced:
			return "**did not sync within budget**"
		}
		return "synced"
	})
	line("process start → every record on the target", func(x *offsetsRun) string { return secs(x.copied) })
	line("process start → target group's final offsets on every partition (first seen; polled from when the copy was complete)", func(x *offsetsRun) string { return secs(x.syncedAt) })
	line("records the target group read", func(x *offsetsRun) string {
		n := 0
		for _, ps := range x.parts {
			for _, e := range ps {
				n += e.read
			}
		}
		return fmt.Sprint(n)
	})
	line("records read that are neither (read twice, or never visible on the source)", func(x *offsetsRun) string {
		_, _, other := x.totals()
		return fmt.Sprint(other)
	})
	w("\nkmirror runs with `sync_interval: 1s`, `groups: [\"%s\"]` and its default `isolation_level: read_committed` (the other scenarios' settings otherwise). MM2 runs with the other scenarios' properties plus:\n\n```properties\n%s```\n\n", offsetsGroup, formatProps("scenario 6", mm2GroupProps(offsetsGroup)))
	for _, x := range []*offsetsRun{km, mm} {
		if x != nil && x.err != "" {
			w("%s: %s\n\n", x.tool, codeBlock(x.err))
		}
	}
}
