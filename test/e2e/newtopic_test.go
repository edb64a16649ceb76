package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/verify"
)

// newTopic is a source topic the test creates while the flow runs.
type newTopic struct {
	name       string
	partitions int32
	configs    map[string]string
}

// TestNewTopicsWhileRunning creates source topics while a flow with the
// default settings (scale-out, topic_refresh_interval) runs and writes to
// them from their first moment on: one at a time, then three at once.
// Every target topic must have its source's partition count and configs
// (it was created before the first record was written: a topic the
// producer had created would have the target's defaults), and every
// record must be on the target, in order, record by record. The delay
// from each creation to its first record on the target, and the flow's
// steps in between, are logged; timing is not asserted here (the bench
// measures it on a quiet machine).
func TestNewTopicsWhileRunning(t *testing.T) {
	p := startPair(t)
	createTopic(t, p.srcCl, "live.0", 2, nil)
	produce(t, p.srcCl, partitionRecords("live.0", []int32{0, 1}, 100, "before"))

	httpAddr := freeAddr(t)
	k := startKmirror(t, writeConfig(t, p.flowConfig(httpAddr, `
topics: ["live\\..*"]
topic_naming: prefix
`)), httpAddr)
	waitFor(t, 90*time.Second, "src.live.0 to catch up", func() (bool, string) {
		de := endOffsets(t, p.dstCl, "src.live.0")
		return sum(de) == 100, fmt.Sprintf("target end offsets %v", de)
	})

	topics := []string{"live.0"}
	specs := map[string]newTopic{"live.0": {name: "live.0", partitions: 2, configs: map[string]string{}}}
	var prods []*steadyProducer
	rounds := [][]newTopic{
		{{name: "live.1", partitions: 1, configs: map[string]string{"retention.ms": "86400000"}}},
		{{name: "live.2", partitions: 6, configs: map[string]string{"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.2"}}},
		{{name: "live.3", partitions: 3, configs: map[string]string{"max.message.bytes": "2097152"}}},
		{
			{name: "live.4a", partitions: 4, configs: map[string]string{}},
			{name: "live.4b", partitions: 2, configs: map[string]string{"retention.ms": "3600000"}},
			{name: "live.4c", partitions: 1, configs: map[string]string{}},
		},
	}
	for i, round := range rounds {
		// A different point of the flow's refresh cycle each round.
		time.Sleep(time.Duration(1300+900*i) * time.Millisecond)
		var wg sync.WaitGroup
		created := make([]time.Time, len(round))
		for j, nt := range round {
			wg.Add(1)
			go func() {
				defer wg.Done()
				createTopic(t, p.srcCl, nt.name, nt.partitions, nt.configs)
				created[j] = time.Now()
			}()
		}
		wg.Wait()
		for _, nt := range round {
			topics = append(topics, nt.name)
			specs[nt.name] = nt
			prods = append(prods, startSteadyProducer(t, p.srcCl, nt.name, nt.partitions))
		}
		targets := make([]string, len(round))
		for j, nt := range round {
			targets[j] = "src." + nt.name
		}
		arrived := waitFirstCopies(t, p.dstCl, targets, created[0].Add(90*time.Second))
		for j, nt := range round {
			at := arrived[targets[j]]
			t.Logf("new topic %s (%d partitions): first record on the target %s after its creation; %s",
				nt.name, nt.partitions, at.Sub(created[j]).Round(time.Millisecond), flowSteps(k.output(), nt.name, created[j]))
		}
	}
	for _, sp := range prods {
		sp.stop(t)
	}

	for _, name := range topics {
		target := "src." + name
		waitFor(t, 2*time.Minute, target+" to catch up", func() (bool, string) {
			se, de := endOffsets(t, p.srcCl, name), endOffsets(t, p.dstCl, target)
			return maps.Equal(se, de), fmt.Sprintf("source %v target %v", se, de)
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pairs := make([]verify.Pair, len(topics))
	for i, name := range topics {
		pairs[i] = verify.Pair{Source: name, Target: "src." + name}
	}
	rep, err := verify.Compare(ctx, p.srcCl, p.dstCl, pairs)
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range rep.Topics {
		if !tr.OK() || tr.SourceRecords == 0 {
			t.Errorf("%s: source %d records, target %d, matched %d: %v", tr.Source, tr.SourceRecords, tr.TargetRecords, tr.Matched, tr.Mismatches)
		}
	}
	src, dst := kadm.NewClient(p.srcCl), kadm.NewClient(p.dstCl)
	for _, name := range topics {
		target := "src." + name
		sd, err := src.ListTopics(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		td, err := dst.ListTopics(ctx, target)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := len(td[target].Partitions), len(sd[name].Partitions); got != want {
			t.Errorf("%s has %d partitions, its source %d", target, got, want)
		}
		if got, want := explicitConfigs(t, p.dstCl, target), specs[name].configs; !maps.Equal(got, want) {
			t.Errorf("%s configs %v, want the source's %v", target, got, want)
		}
	}
	n, _ := rep.Records()
	t.Logf("%d topics created while the flow ran: every record (%d) on the target, in order, into topics of the source's shape", len(topics)-1, n)
}

// steadyProducer writes a batch of records to every partition of a topic
// every 20 ms, from the topic's first moment on, until stopped.
type steadyProducer struct {
	cancel context.CancelFunc
	done   chan error
}

func startSteadyProducer(t *testing.T, cl *kgo.Client, topic string, partitions int32) *steadyProducer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sp := &steadyProducer{cancel: cancel, done: make(chan error, 1)}
	parts := make([]int32, partitions)
	for i := range parts {
		parts[i] = int32(i)
	}
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			recs := partitionRecords(topic, parts, len(parts), fmt.Sprintf("%s-%d", topic, n))
			pctx, pcancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := cl.ProduceSync(pctx, recs...).FirstErr()
			pcancel()
			if err != nil {
				sp.done <- fmt.Errorf("producing to %s: %w", topic, err)
				return
			}
			select {
			case <-ctx.Done():
				sp.done <- nil
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(cancel)
	return sp
}

// stop ends the producer after its write in progress.
func (sp *steadyProducer) stop(t *testing.T) {
	t.Helper()
	sp.cancel()
	if err := <-sp.done; err != nil && !errors.Is(err, context.Canceled) {
		t.Error(err)
	}
}

// waitFirstCopies polls the topics on cl until each holds a record, and
// returns when it first saw one in each.
func waitFirstCopies(t *testing.T, cl *kgo.Client, topics []string, deadline time.Time) map[string]time.Time {
	t.Helper()
	adm := kadm.NewClient(cl)
	seen := map[string]time.Time{}
	for len(seen) < len(topics) {
		var pending []string
		for _, topic := range topics {
			if _, ok := seen[topic]; !ok {
				pending = append(pending, topic)
			}
		}
		// Listing the offsets of a topic the client does not know waits
		// for metadata retries: only the topics that exist are listed.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var exist []string
		if tds, err := adm.ListTopics(ctx, pending...); err == nil {
			for _, td := range tds {
				if td.Err == nil {
					exist = append(exist, td.Topic)
				}
			}
		}
		var ends kadm.ListedOffsets
		var err error
		if len(exist) > 0 {
			ends, err = adm.ListEndOffsets(ctx, exist...)
		}
		cancel()
		now := time.Now()
		if err == nil {
			ends.Each(func(o kadm.ListedOffset) {
				if _, ok := seen[o.Topic]; !ok && o.Err == nil && o.Offset > 0 {
					seen[o.Topic] = now
				}
			})
		}
		if len(seen) == len(topics) {
			break
		}
		if now.After(deadline) {
			t.Fatalf("no record of %v on the target by %s", pending, deadline.Format(time.TimeOnly))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return seen
}

// logTime matches the time of a text log line.
var logTime = regexp.MustCompile(`^time=(\S+) `)

// flowSteps names the flow's log lines about topic (its target topic
// created, then the next assignment and the start of replication), each
// with its delay from created, for the test's log.
func flowSteps(logs, topic string, created time.Time) string {
	var steps []string
	next := `msg="created target topic"`
	for _, line := range strings.Split(logs, "\n") {
		m := logTime.FindStringSubmatch(line)
		if m == nil || !strings.Contains(line, next) {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			continue
		}
		var what string
		switch next {
		case `msg="created target topic"`:
			if !strings.Contains(line, "source_topic="+topic+" ") {
				continue
			}
			what, next = "target topic created", `msg="partitions assigned"`
		case `msg="partitions assigned"`:
			what, next = "partitions assigned", `msg="replicating assigned partitions"`
		default:
			what, next = "replicating", "\x00"
		}
		steps = append(steps, fmt.Sprintf("%s %+dms", what, at.Sub(created).Milliseconds()))
	}
	if len(steps) == 0 {
		return "no flow step logged"
	}
	return strings.Join(steps, ", ")
}
