package flow

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/progress"
)

// Translate maps a source offset with the running flow's offset map; false
// if the flow is not running or does not replicate the partition.
func (f *Flow) Translate(topic string, partition int32, src int64) (offsets.Result, bool) {
	repl := f.repl.Load()
	if repl == nil {
		return offsets.Result{}, false
	}
	return repl.Translate(topic, partition, src)
}

// PartitionLag is how far one source partition is behind.
type PartitionLag struct {
	Topic      string `json:"topic"`
	Partition  int32  `json:"partition"`
	SourceEnd  int64  `json:"source_end"`
	SourceNext int64  `json:"source_next"`
	Lag        int64  `json:"lag"`
}

// Lag compares the running flow's positions with the source's end offsets
// now, for every partition of the topics the flow replicates. Transaction
// markers count as copied once the records before them are.
func (f *Flow) Lag(ctx context.Context) ([]PartitionLag, error) {
	lv, repl, topics := f.live.Load(), f.repl.Load(), f.topics.Load()
	if lv == nil || repl == nil || topics == nil || !f.started.Load() {
		return nil, errors.New("the flow is not running yet")
	}
	names := make([]string, len(*topics))
	for i, t := range *topics {
		names[i] = t.Source
	}
	ends, err := kadm.NewClient(lv.src).ListEndOffsets(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("listing source end offsets: %w", err)
	}
	if err := ends.Error(); err != nil {
		return nil, fmt.Errorf("listing source end offsets: %w", err)
	}
	positions := repl.Positions()
	var out []PartitionLag
	ends.Each(func(o kadm.ListedOffset) {
		pl := PartitionLag{Topic: o.Topic, Partition: o.Partition, SourceEnd: o.Offset, SourceNext: -1, Lag: o.Offset}
		if pos, ok := positions[progress.Partition{Topic: o.Topic, Partition: o.Partition}]; ok {
			pl.SourceNext = pos.SourceNext
			pl.Lag = max(o.Offset-pos.SourceNext, 0)
		}
		out = append(out, pl)
	})
	slices.SortFunc(out, func(a, b PartitionLag) int {
		if c := strings.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		return int(a.Partition - b.Partition)
	})
	return out, nil
}
