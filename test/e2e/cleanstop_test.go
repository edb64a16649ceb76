package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/dr"
)

// TestCleanStopWithSeveralInstances runs one flow on two instances (the
// default scale-out), stops both with SIGTERM at the same moment, and
// fails over (planned) without --force: each instance stored its own
// partitions' positions as stopped cleanly, so the failover knows the
// flow stopped cleanly and reports every partition replicated. After a
// failback, the flow runs on two instances again; one is SIGKILLed as the
// other gets SIGTERM: the failover then refuses, naming the reason, and
// proceeds with --force.
func TestCleanStopWithSeveralInstances(t *testing.T) {
	t.Parallel() // no timing assertion: runs beside the other parallel tests
	p := startPair(t)
	const topic, partitions = "events", 4
	createTopic(t, p.srcCl, topic, partitions, nil)
	// scale_out is not set: its default runs the flow on every instance.
	cfg := p.flowConfig("127.0.0.1:0", `
topics: ["events"]
topic_naming: identity
topic_refresh_interval: 500ms
progress_interval: 200ms
ownership_timeout: 6s
`)
	startTwo := func() []*proc {
		procs := make([]*proc, 2)
		var wg sync.WaitGroup
		for i := range procs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				addr := freeAddr(t)
				procs[i] = startKmirror(t, writeConfig(t, strings.Replace(cfg, "127.0.0.1:0", addr, 1)), addr)
			}()
		}
		wg.Wait()
		return procs
	}
	produced := 0
	produceSome := func(n int) {
		recs := make([]*kgo.Record, n)
		for i := range recs {
			recs[i] = &kgo.Record{Topic: topic, Partition: int32(i % partitions), Value: fmt.Appendf(nil, "%d", produced+i)}
		}
		produce(t, p.srcCl, recs)
		produced += n
	}
	// splitAndCaughtUp waits until both instances own partitions and the
	// target holds every record produced.
	splitAndCaughtUp := func(procs []*proc) {
		waitFor(t, 90*time.Second, "both instances to own partitions and the target to catch up", func() (bool, string) {
			owners, answered := ownership(procs)
			per := map[int]int{}
			for _, o := range owners {
				if len(o) == 1 {
					per[o[0]]++
				}
			}
			dst := sum(endOffsets(t, p.dstCl, topic))
			return answered == 2 && len(per) == 2 && len(owners) == partitions && dst == int64(produced),
				fmt.Sprintf("owners %s, target %d of %d", describe(owners), dst, produced)
		})
	}
	failover := func(args ...string) (dr.Report, runResult) {
		res := runKmirrorOnce(t, 3*time.Minute, append([]string{"failover", "--config", writeConfig(t, cfg), "--flow", "e2e", "--timeout", "60s", "--json"}, args...)...)
		var rep dr.Report
		if res.code == 0 {
			if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
				t.Fatalf("failover report: %v\n%s", err, res.stdout)
			}
		}
		return rep, res
	}
	allReplicated := func(rep dr.Report) {
		t.Helper()
		if len(rep.Partitions) != partitions || rep.NotReplicated != 0 {
			t.Fatalf("failover report: %d partitions, %d not replicated; want %d, 0: %+v", len(rep.Partitions), rep.NotReplicated, partitions, rep.Partitions)
		}
		for _, ps := range rep.Partitions {
			if ps.NotReplicated != 0 || ps.Replicated != ps.SourceEnd {
				t.Errorf("partition %d: replicated up to %d of %d", ps.Partition, ps.Replicated, ps.SourceEnd)
			}
		}
	}

	// Both stopped cleanly at the same moment.
	procs := startTwo()
	produceSome(400)
	splitAndCaughtUp(procs)
	start := time.Now()
	var wg sync.WaitGroup
	for _, pr := range procs {
		wg.Add(1)
		go func() { defer wg.Done(); pr.stop() }()
	}
	wg.Wait()
	stopped := time.Since(start)
	rep, res := failover()
	if res.code != 0 {
		t.Fatalf("planned failover after both instances got SIGTERM: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	allReplicated(rep)
	t.Logf("two instances stopped by SIGTERM together in %s; planned failover without --force took %s, %d partitions replicated, %d records",
		stopped.Round(time.Millisecond), res.elapsed.Round(time.Millisecond), len(rep.Partitions), produced)

	// Back to the source: the failback checks the same way.
	fb := runKmirrorOnce(t, 3*time.Minute, "failback", "--config", writeConfig(t, cfg), "--flow", "e2e", "--timeout", "60s")
	if fb.code != 0 {
		t.Fatalf("failback: exit %d\n%s%s", fb.code, fb.stdout, fb.stderr)
	}
	t.Logf("failback took %s", fb.elapsed.Round(time.Millisecond))

	// One SIGKILLed as the other stops cleanly.
	procs = startTwo()
	produceSome(400)
	splitAndCaughtUp(procs)
	wg.Add(2)
	go func() { defer wg.Done(); procs[0].kill() }()
	go func() { defer wg.Done(); procs[1].stop() }()
	wg.Wait()
	_, res = failover()
	if res.code == 0 || !strings.Contains(res.stderr, dr.ErrNotClean.Error()) || !strings.Contains(res.stderr, "--force") {
		t.Fatalf("planned failover after a SIGKILL: exit %d, want a refusal naming the reason and --force\n%s%s", res.code, res.stdout, res.stderr)
	}
	t.Logf("planned failover right after one of two instances was SIGKILLed refused in %s:\n%s", res.elapsed.Round(time.Millisecond), res.stderr)
	// The killed instance stays in the ownership group until its session
	// expires (ownership_timeout); then the positions its partitions were
	// left at name them.
	killed := time.Now()
	waitFor(t, time.Minute, "the failover to refuse naming the partitions not stopped cleanly", func() (bool, string) {
		_, res = failover()
		return res.code != 0 && strings.Contains(res.stderr, "partitions were not stopped cleanly by their last owner ("+topic+"/"),
			fmt.Sprintf("exit %d: %s", res.code, res.stderr)
	})
	t.Logf("%s after the SIGKILL the refusal names the partitions:\n%s", time.Since(killed).Round(time.Millisecond), res.stderr)
	rep, res = failover("--force")
	if res.code != 0 {
		t.Fatalf("planned failover --force: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	allReplicated(rep)
	t.Logf("planned failover --force after the SIGKILL took %s, %d partitions replicated, %d records", res.elapsed.Round(time.Millisecond), len(rep.Partitions), produced)
}
