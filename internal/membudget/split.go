package membudget

import (
	"fmt"

	"github.com/kmirror/kmirror/internal/config"
)

// The model Split works with (docs/configuration.md#memory_limit).
const (
	// Reserve is the part of any limit kept for what is not a flow's
	// buffers: the Go runtime, the clients' metadata, the positions and
	// offset maps of every partition, the HTTP server.
	Reserve = 64 << 20
	// FetchExpansion is the memory one fetch response takes, as a
	// multiple of its size: the response itself, and its record batches
	// decompressed (lz4 or zstd of JSON events: about 4 times as large).
	FetchExpansion = 5
	// FetchesInFlight is how many fetch responses of a flow may be held
	// at once (kgo.MaxConcurrentFetches): one being copied while the
	// next one arrives.
	FetchesInFlight = 2
	// DecompressCopies is the memory a record batch being decompressed
	// takes, as a multiple of the limit on its decompressed size: the
	// buffer it is decompressed into grows by doubling.
	DecompressCopies = 2
	// RecordOverhead is what the clients and the data plane keep per
	// record handed to the producer besides its key, value and headers.
	RecordOverhead = 256
	// compareReads is what one partition's comparison at restart holds:
	// two fetches on each side (see resume.Match).
	compareReads = 4
	// MaxComparisons is the most partitions compared with the target at
	// once at restart.
	MaxComparisons = 16
)

// Bounds of the derived settings, whatever the budget.
const (
	minFetchBytes      = 1 << 20
	minPartitionBytes  = 1 << 20
	minBufferedBytes   = 4 << 20
	minBufferedRecords = 10_000
	maxBufferedRecords = 1_000_000
	minDecompress      = 4 << 20
	// MaxDecompress is the most a record batch may decompress to: 1 GiB,
	// the largest batch the producer writes (franz-go's bound). The
	// target takes records one by one into batches of its own, so it
	// sets no lower bound on a source batch.
	MaxDecompress     = 1 << 30
	minCompareFetch   = 64 << 10
	maxCompareFetch   = 1 << 20
	gcHeadroomDivisor = 2
)

// Flow is what one flow gets of the budget and the client settings that
// keep it there.
type Flow struct {
	Name  string
	Share int64 // bytes of the budget the flow's buffers get; 0 when not split from a budget

	FetchMaxBytes          int32 // kgo.FetchMaxBytes
	FetchMaxPartitionBytes int32 // kgo.FetchMaxPartitionBytes
	MaxConcurrentFetches   int   // kgo.MaxConcurrentFetches; 0: the client's default (one per broker)
	MaxBufferedBytes       int64 // kgo.MaxBufferedBytes
	MaxBufferedRecords     int   // kgo.MaxBufferedRecords
	// MaxDecompressBatchBytes is kgo.MaxDecompressBatchBytes; 0: the
	// client's default (1 GiB).
	MaxDecompressBatchBytes int
	// CompareFetchBytes bounds one fetch of a comparison of target
	// records at restart, and Comparisons the partitions compared at
	// once; 0: the defaults of package resume and of the flow.
	CompareFetchBytes int32
	Comparisons       int
}

// Estimate is the memory f's buffers may take: its fetches decompressed,
// its produce buffer with the records' overhead, a batch decompressed to
// the limit, and its comparisons.
func (f Flow) Estimate() int64 {
	concurrent := int64(max(f.MaxConcurrentFetches, FetchesInFlight))
	fetch := concurrent * int64(f.FetchMaxBytes) * FetchExpansion
	produce := produceMemory(f.MaxBufferedBytes)
	compare := int64(f.Comparisons) * compareReads * int64(f.CompareFetchBytes) * FetchExpansion
	return fetch + produce + int64(f.MaxDecompressBatchBytes)*DecompressCopies + compare
}

// produceMemory is what a produce buffer of buffered bytes takes with
// the records' overhead.
func produceMemory(buffered int64) int64 { return buffered + buffered/4 }

// String lists the settings for a log line.
func (f Flow) String() string {
	return fmt.Sprintf("share %s: fetch_max_bytes %s, fetch_max_partition_bytes %s, fetches in flight %d, max_buffered_bytes %s, max_buffered_records %d, batch decompression limit %s, restart comparisons %d of %s fetches",
		size(f.Share), size(int64(f.FetchMaxBytes)), size(int64(f.FetchMaxPartitionBytes)), f.MaxConcurrentFetches,
		size(f.MaxBufferedBytes), f.MaxBufferedRecords, size(int64(f.MaxDecompressBatchBytes)),
		f.Comparisons, size(int64(f.CompareFetchBytes)))
}

// Unbounded is what flow fc uses without a budget: its configured (or
// default) sizes and the clients' own defaults.
func Unbounded(fc *config.Flow) Flow {
	return Flow{
		Name:                   fc.Name,
		FetchMaxBytes:          fc.Consumer.FetchMaxBytes,
		FetchMaxPartitionBytes: fc.Consumer.FetchMaxPartitionBytes,
		MaxBufferedBytes:       fc.Producer.MaxBufferedBytes,
		MaxBufferedRecords:     maxBufferedRecords,
	}
}

// Plan is a limit split among the flows of a configuration.
type Plan struct {
	Limit Limit
	// Buffers is the part of the limit the flows' buffers share: half of
	// what is left past Reserve, the other half being the garbage
	// collector's room.
	Buffers int64
	Flows   []Flow // in the order of the configuration's flows
	// Warnings name the settings of the file that take more than their
	// flow's share, or a limit too small for the smallest settings. They
	// read like config errors (file:line: key: message).
	Warnings []*config.Error
}

// Split divides limit l among the flows of cfg, equally: each gets
// Buffers / len(flows), of which
//
//   - half is its produce buffer: max_buffered_bytes is 4/5 of it (the
//     rest is the records' overhead), at most the default (32 MiB);
//   - the rest, what the produce buffer leaves of its half included (at
//     least five sixteenths), is its fetches: FetchesInFlight responses
//     of fetch_max_bytes, each taking FetchExpansion times its size
//     decompressed (so fetch_max_bytes is a tenth of the part, at most
//     the default), fetch_max_partition_bytes a quarter of
//     fetch_max_bytes;
//   - one eighth is a record batch being decompressed: one batch may
//     decompress to half of it (1/16 of the share, 4 MiB to 1 GiB), the
//     buffer it is decompressed into growing to twice that; past it the
//     partition stops (see replicate);
//   - one sixteenth is the comparison of target records at a restart:
//     up to MaxComparisons partitions at once, each holding four fetches
//     of 64 KiB to 1 MiB.
//
// Sizes written in the file (config.Flow.Explicit) are kept; a flow whose
// written sizes take more than its share gets a warning naming them.
func Split(cfg *config.Config, l Limit) Plan {
	p := Plan{Limit: l}
	if len(cfg.Flows) == 0 {
		return p
	}
	p.Buffers = max(l.Bytes-Reserve, 0) / gcHeadroomDivisor
	share := p.Buffers / int64(len(cfg.Flows))
	tooSmall := false
	for i, fc := range cfg.Flows {
		f := split(fc, share)
		p.Flows = append(p.Flows, f)
		if f.Estimate() <= share {
			continue
		}
		planned := split(&config.Flow{Name: fc.Name, Producer: fc.Producer, Consumer: fc.Consumer}, share)
		w := warnings(cfg, i, f, planned, l)
		if w[0].Key == "memory_limit" {
			if tooSmall {
				continue
			}
			tooSmall = true
		}
		p.Warnings = append(p.Warnings, w...)
	}
	return p
}

// split is the part share of a flow's budget with the flow's written
// sizes kept.
func split(fc *config.Flow, share int64) Flow {
	produce := share / 2
	decompress := share / 8
	compare := share / 16
	f := Flow{Name: fc.Name, Share: share, MaxConcurrentFetches: FetchesInFlight}

	batch := 2 * int64(fc.Producer.BatchMaxBytes) // room for one batch filling while one is written
	f.MaxBufferedBytes = clamp(produce*4/5, max(minBufferedBytes, batch), max(config.DefaultMaxBufferedBytes, batch))
	if fc.IsExplicit(config.KeyMaxBufferedBytes) {
		f.MaxBufferedBytes = fc.Producer.MaxBufferedBytes
	}
	f.MaxBufferedRecords = int(clamp(produce/5/RecordOverhead, minBufferedRecords, maxBufferedRecords))
	// The fetches get the rest, what the produce buffer does not take of
	// its half included: at least 5/16 of the share.
	fetch := max(share-produceMemory(f.MaxBufferedBytes)-decompress-compare, share*5/16)

	f.FetchMaxBytes = int32(clamp(fetch/(FetchExpansion*FetchesInFlight), minFetchBytes, config.DefaultFetchMaxBytes))
	if fc.IsExplicit(config.KeyFetchMaxBytes) {
		f.FetchMaxBytes = fc.Consumer.FetchMaxBytes
	}
	f.FetchMaxPartitionBytes = int32(clamp(int64(f.FetchMaxBytes)/4, minPartitionBytes, config.DefaultFetchMaxPartitionBytes))
	if fc.IsExplicit(config.KeyFetchMaxPartitionBytes) {
		f.FetchMaxPartitionBytes = fc.Consumer.FetchMaxPartitionBytes
	}
	f.MaxDecompressBatchBytes = int(clamp(decompress/DecompressCopies, minDecompress, MaxDecompress))

	perRead := compare / MaxComparisons / (compareReads * FetchExpansion)
	f.CompareFetchBytes = int32(clamp(perRead, minCompareFetch, maxCompareFetch))
	f.Comparisons = int(clamp(compare/(compareReads*FetchExpansion*int64(f.CompareFetchBytes)), 1, MaxComparisons))
	return f
}

// warnings explains why flow i's settings f take more than its share:
// the written sizes above what the budget would set (planned), or, if
// none is, the limit is too small for the smallest settings.
func warnings(cfg *config.Config, i int, f, planned Flow, l Limit) []*config.Error {
	fc := cfg.Flows[i]
	what := fmt.Sprintf("the flow's buffers may then take about %s where its share of the memory limit, %s, is %s",
		size(f.Estimate()), l, size(f.Share))
	var out []*config.Error
	for _, k := range []struct {
		key          string
		value, quota int64
	}{
		{config.KeyFetchMaxBytes, int64(f.FetchMaxBytes), int64(planned.FetchMaxBytes)},
		{config.KeyMaxBufferedBytes, f.MaxBufferedBytes, planned.MaxBufferedBytes},
	} {
		line, ok := fc.Explicit[k.key]
		if !ok || k.value <= k.quota {
			continue
		}
		out = append(out, &config.Error{File: cfg.File, Line: line, Key: fmt.Sprintf("flows[%d].%s", i, k.key),
			Msg: fmt.Sprintf("%d (%s) is more than the memory limit leaves this flow (%s): %s; lower it, leave it out, or raise memory_limit",
				k.value, size(k.value), size(k.quota), what)})
	}
	if len(out) == 0 {
		e := &config.Error{File: cfg.File, Key: "memory_limit",
			Msg: fmt.Sprintf("%s is too small for %d flows: with the smallest settings, flow %q's buffers may take about %s where its share is %s; raise memory_limit or run fewer flows per process",
				l, len(cfg.Flows), fc.Name, size(f.Estimate()), size(f.Share))}
		if l.Source == SourceConfig {
			e.Line = cfg.MemoryLimitLine
		}
		out = append(out, e)
	}
	return out
}

func clamp(v, lo, hi int64) int64 { return min(max(v, lo), hi) }

func size(n int64) string { return config.FormatSize(n) }
