package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/verify"
)

// TestImportMM2Replicates converts Kafka's own sample MirrorMaker 2
// configuration (config/connect-mirror-maker.properties: clusters A and B,
// A->B and B->A enabled with topics .*, DefaultReplicationPolicy) with the
// built binary's import-mm2, pointed at two real clusters, runs kmirror with
// the output as it is, and checks that the topics arrive under the names
// MirrorMaker 2 gives them: "orders" on A becomes "A.orders" on B, record
// by record; "orders.internal", excluded by MirrorMaker 2's default
// topics.exclude, is not copied; and the B->A flow does not copy A.orders
// back to A (MirrorMaker 2 would not either: it is A's own topic).
func TestImportMM2Replicates(t *testing.T) {
	t.Parallel()
	start := time.Now()
	p := startPair(t)

	props, err := os.ReadFile(filepath.Join("..", "..", "internal", "mm2import", "testdata", "kafka-sample.properties"))
	if err != nil {
		t.Fatal(err)
	}
	// Point the MM2 aliases at the real clusters; nothing else changes.
	servers := map[string]string{"A": p.src.Bootstrap(), "B": p.dst.Bootstrap()}
	rewritten := 0
	bootstrapLine := regexp.MustCompile(`(?m)^(\w+)\.bootstrap\.servers\s*=.*$`)
	props = bootstrapLine.ReplaceAllFunc(props, func(line []byte) []byte {
		alias := string(bootstrapLine.FindSubmatch(line)[1])
		s, ok := servers[alias]
		if !ok {
			t.Fatalf("fixture names cluster %q, not A or B: %s", alias, line)
		}
		rewritten++
		return fmt.Appendf(nil, "%s.bootstrap.servers = %s", alias, s)
	})
	if rewritten != 2 {
		t.Fatalf("rewrote %d bootstrap.servers lines, want 2 (A and B)", rewritten)
	}
	propsPath := filepath.Join(t.TempDir(), "mm2.properties")
	if err := os.WriteFile(propsPath, props, 0o600); err != nil {
		t.Fatal(err)
	}

	conv := runKmirrorOnce(t, 30*time.Second, "import-mm2", propsPath)
	if conv.code != 0 || conv.timedOut {
		t.Fatalf("import-mm2 exited %d (timed out %v)\nstdout:\n%s\nstderr:\n%s", conv.code, conv.timedOut, conv.stdout, conv.stderr)
	}
	if strings.Contains(conv.stderr, "Set these environment variables") {
		t.Fatalf("the sample has no secrets, yet import-mm2 asks for variables:\n%s", conv.stderr)
	}
	for _, want := range []string{"source: A", "target: B", "source: B", "target: A", `'.*[\-\.]internal'`} {
		if !strings.Contains(conv.stdout, want) {
			t.Fatalf("import-mm2 output lacks %q:\n%s", want, conv.stdout)
		}
	}
	if strings.Contains(conv.stdout, "\nhttp:") {
		t.Fatalf("import-mm2 now writes an http section; adjust this test:\n%s", conv.stdout)
	}
	// import-mm2 writes no admin API (MM2's REST listener is not mapped);
	// the test adds one to read the flows' state when it fails.
	httpAddr := freeAddr(t)
	cfg := writeConfig(t, conv.stdout+fmt.Sprintf("http:\n  listen: %q\n", httpAddr))

	// Source topics before kmirror starts: its first pass finds them, so
	// the default 5 s topic refresh costs nothing.
	const matched, excluded, copyName = "orders", "orders.internal", "A.orders"
	rng := rand.New(rand.NewPCG(11, 2))
	specs := []topicSpec{{name: matched, partitions: 3}, {name: excluded, partitions: 1}}
	for _, s := range specs {
		createTopic(t, p.srcCl, s.name, s.partitions, nil)
	}
	const n = 300
	produce(t, p.srcCl, sampleRecords(rng, specs[0], n))
	produce(t, p.srcCl, sampleRecords(rng, specs[1], 50))

	k := startKmirror(t, cfg, httpAddr)
	took := waitFor(t, 30*time.Second, "every record of A's orders in B's A.orders", func() (bool, string) {
		got := sum(endOffsets(t, p.dstCl, copyName))
		return got >= n, fmt.Sprintf("%s has %d of %d", copyName, got, n)
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srcRecs, err := verify.ReadAll(ctx, p.srcCl, matched)
	if err != nil {
		t.Fatal(err)
	}
	dstRecs, err := verify.ReadAll(ctx, p.dstCl, copyName)
	if err != nil {
		t.Fatal(err)
	}
	if len(dstRecs) != int(specs[0].partitions) {
		t.Errorf("%s has %d partitions, %s has %d", copyName, len(dstRecs), matched, specs[0].partitions)
	}
	compared := 0
	for part, src := range srcRecs {
		dst := dstRecs[part]
		if len(dst) != len(src) {
			t.Errorf("partition %d: %s has %d records, %s %d", part, copyName, len(dst), matched, len(src))
			continue
		}
		for i := range src {
			if d := diffCopy(src[i], dst[i]); d != "" {
				t.Fatalf("partition %d record %d: %s", part, i, d)
			}
			compared++
		}
	}
	if compared != n {
		t.Errorf("compared %d records, produced %d", compared, n)
	}

	// A marker topic on B, created after A.orders: once B->A has copied it
	// to A as B.marker, B->A has listed B's topics with A.orders among
	// them (one pass lists them all at once).
	const marker = "marker"
	createTopic(t, p.dstCl, marker, 1, nil)
	produce(t, p.dstCl, []*kgo.Record{{Topic: marker, Value: []byte("after A.orders")}})
	markerTook := waitFor(t, 20*time.Second, "B's marker in A's B.marker (a B->A pass after A.orders)", func() (bool, string) {
		got := sum(endOffsets(t, p.srcCl, "B."+marker))
		return got >= 1, fmt.Sprintf("B.%s has %d of 1", marker, got)
	})

	// Neither flow may have copied the excluded topic, and B->A must not
	// echo A.orders back to A.
	adm := func(cl *kadm.Client) kadm.TopicDetails {
		td, err := cl.ListTopics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return td
	}
	onB, onA := adm(kadm.NewClient(p.dstCl)), adm(kadm.NewClient(p.srcCl))
	for _, name := range []string{"A." + excluded, excluded} {
		if onB.Has(name) {
			t.Errorf("B holds %q: the topic excluded by MirrorMaker 2's default topics.exclude was replicated", name)
		}
	}
	if onA.Has("B." + copyName) {
		t.Errorf("A holds %q: the B->A flow copied A's own topic back", "B."+copyName)
	}
	k.stop()
	t.Logf("import-mm2 took %s; %d records of %s matched %s record by record %s after kmirror started; %s not replicated; B->A copied its marker %s later and no B.%s; whole test %s",
		conv.elapsed.Round(time.Millisecond), compared, matched, copyName, took.Round(time.Millisecond), excluded, markerTook.Round(time.Millisecond), copyName, time.Since(start).Round(time.Millisecond))
}
