package membudget

import (
	"strings"
	"testing"

	"github.com/kmirror/kmirror/internal/config"
)

func parse(t *testing.T, data string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("kmirror.yaml", []byte(data), nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

const clusters = `clusters:
  a: {bootstrap_servers: ["a:9092"]}
  b: {bootstrap_servers: ["b:9092"]}
  c: {bootstrap_servers: ["c:9092"]}
flows:
`

func TestSplitOneFlow(t *testing.T) {
	cfg := parse(t, clusters+"  - {source: a, target: b}\nmemory_limit: 512MiB\n")
	p := Split(cfg, Limit{Bytes: cfg.MemoryLimit, Found: cfg.MemoryLimit, Source: SourceConfig})
	if p.Buffers != (512-64)<<20/2 {
		t.Errorf("Buffers = %d", p.Buffers)
	}
	f := p.Flows[0]
	share := int64(224 << 20)
	want := Flow{
		Name:                    "a-to-b",
		Share:                   share,
		FetchMaxBytes:           8 << 20, // a tenth of what the rest leaves (14.4 MiB) is more
		FetchMaxPartitionBytes:  2 << 20, // a quarter of it
		MaxConcurrentFetches:    2,
		MaxBufferedBytes:        32 << 20, // 2/5 of the share is 89.6 MiB: the default is less
		MaxBufferedRecords:      91750,    // 1/10 of the share / 256 bytes
		MaxDecompressBatchBytes: 14 << 20, // 1/16 of the share
		CompareFetchBytes:       64 << 10, // 1/16 of the share / 16 comparisons / 20 is less
		Comparisons:             11,       // 14 MiB / (4 fetches × 5 × 64 KiB)
	}
	if f != want {
		t.Errorf("flow =\n%+v, want\n%+v", f, want)
	}
	if f.Estimate() > share {
		t.Errorf("Estimate %d above the share %d", f.Estimate(), share)
	}
	if len(p.Warnings) != 0 {
		t.Errorf("warnings: %v", p.Warnings)
	}
}

func TestSplitSmall(t *testing.T) {
	cfg := parse(t, clusters+"  - {source: a, target: b}\nmemory_limit: 256MiB\n")
	p := Split(cfg, Limit{Bytes: cfg.MemoryLimit, Found: cfg.MemoryLimit, Source: SourceConfig})
	f := p.Flows[0]
	share := int64(96 << 20)
	if f.Share != share {
		t.Fatalf("Share = %d, want %d", f.Share, share)
	}
	// Fetches: 96 MiB less the produce buffer's 40, the decompression's 12
	// and the comparisons' 6.
	if f.FetchMaxBytes != 38<<20/10 || f.FetchMaxPartitionBytes != 1<<20 || f.MaxBufferedBytes != 32<<20 ||
		f.MaxDecompressBatchBytes != 6<<20 || f.CompareFetchBytes != 64<<10 || f.Comparisons != 4 {
		t.Errorf("flow = %+v", f)
	}
	if f.Estimate() > share || len(p.Warnings) != 0 {
		t.Errorf("Estimate %d (share %d), warnings %v", f.Estimate(), share, p.Warnings)
	}
}

func TestSplitAmongFlows(t *testing.T) {
	cfg := parse(t, clusters+`  - {source: a, target: b}
  - {source: b, target: a}
  - {source: a, target: c}
  - {source: c, target: a}
memory_limit: 512MiB
`)
	p := Split(cfg, Limit{Bytes: cfg.MemoryLimit, Found: cfg.MemoryLimit, Source: SourceConfig})
	if len(p.Flows) != 4 {
		t.Fatalf("%d flows", len(p.Flows))
	}
	var sum int64
	for i, f := range p.Flows {
		if f.Name != cfg.Flows[i].Name || f.Share != 56<<20 {
			t.Errorf("flow %d = %+v", i, f)
		}
		if f.Estimate() > f.Share {
			t.Errorf("flow %d: Estimate %d above its share %d", i, f.Estimate(), f.Share)
		}
		sum += f.Share
	}
	if sum > p.Buffers || len(p.Warnings) != 0 {
		t.Errorf("shares %d of %d, warnings %v", sum, p.Buffers, p.Warnings)
	}
}

func TestSplitExplicitWins(t *testing.T) {
	cfg := parse(t, clusters+`  - source: a
    target: b
    producer:
      max_buffered_bytes: 268435456
    consumer:
      fetch_max_bytes: 52428800
      fetch_max_partition_bytes: 10485760
  - source: b
    target: a
    consumer:
      fetch_max_bytes: 1048576
memory_limit: 512MiB
`)
	p := Split(cfg, Limit{Bytes: cfg.MemoryLimit, Found: cfg.MemoryLimit, Source: SourceConfig})
	f := p.Flows[0]
	if f.FetchMaxBytes != 50<<20 || f.FetchMaxPartitionBytes != 10<<20 || f.MaxBufferedBytes != 256<<20 {
		t.Errorf("explicit sizes not kept: %+v", f)
	}
	if g := p.Flows[1]; g.FetchMaxBytes != 1<<20 || g.MaxBufferedBytes != 32<<20 {
		t.Errorf("second flow = %+v", g)
	}
	var got []string
	for _, w := range p.Warnings {
		got = append(got, w.Error())
	}
	want := []string{
		"kmirror.yaml:11: flows[0].consumer.fetch_max_bytes: 52428800 (50 MiB) is more than the memory limit leaves this flow (5.1 MiB): the flow's buffers may then take about 840.3 MiB where its share of the memory limit, 512 MiB (memory_limit), is 112 MiB; lower it, leave it out, or raise memory_limit",
		"kmirror.yaml:9: flows[0].producer.max_buffered_bytes: 268435456 (256 MiB) is more than the memory limit leaves this flow (32 MiB): the flow's buffers may then take about 840.3 MiB where its share of the memory limit, 512 MiB (memory_limit), is 112 MiB; lower it, leave it out, or raise memory_limit",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestSplitTooSmall(t *testing.T) {
	cfg := parse(t, clusters+`  - {source: a, target: b, name: f1}
  - {source: a, target: c, name: f2}
  - {source: b, target: a, name: f3}
  - {source: b, target: c, name: f4}
  - {source: c, target: a, name: f5}
  - {source: c, target: b, name: f6}
memory_limit: 128MiB
`)
	p := Split(cfg, Limit{Bytes: cfg.MemoryLimit, Found: cfg.MemoryLimit, Source: SourceConfig})
	if len(p.Warnings) != 1 {
		t.Fatalf("warnings: %v", p.Warnings)
	}
	want := `kmirror.yaml:12: memory_limit: 128 MiB (memory_limit) is too small for 6 flows: with the smallest settings, flow "f1"'s buffers may take about`
	if got := p.Warnings[0].Error(); !strings.HasPrefix(got, want) {
		t.Errorf("warning %q, want it to start with %q", got, want)
	}
}

func TestUnbounded(t *testing.T) {
	cfg := parse(t, clusters+"  - {source: a, target: b}\n")
	f := Unbounded(cfg.Flows[0])
	want := Flow{Name: "a-to-b", FetchMaxBytes: config.DefaultFetchMaxBytes, FetchMaxPartitionBytes: config.DefaultFetchMaxPartitionBytes,
		MaxBufferedBytes: config.DefaultMaxBufferedBytes, MaxBufferedRecords: 1_000_000}
	if f != want {
		t.Errorf("Unbounded = %+v, want %+v", f, want)
	}
}
