package flow

import (
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/replicate"
)

// ownRuns returns the flow's offset map of a partition, for the group
// sync's peers: the data plane's map of the partitions this instance
// replicates, else (scale-out, stored != nil) the map the partition's
// owner stored.
func ownRuns(repl *replicate.Replicator, stored *storedTranslator) func(string, int32) []offsets.Run {
	return func(topic string, partition int32) []offsets.Run {
		if runs, ok := repl.Runs(topic, partition); ok {
			return runs
		}
		if stored == nil {
			return nil
		}
		return stored.refresh().Runs[progress.Partition{Topic: topic, Partition: partition}]
	}
}
