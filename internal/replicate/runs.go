package replicate

import (
	"slices"

	"github.com/kmirror/kmirror/internal/offsets"
)

// Runs returns a copy of the offset map of a replicated partition: where
// the flow's own copies lie on the target. It returns false if the
// partition is not replicated here.
func (r *Replicator) Runs(topic string, partition int32) ([]offsets.Run, bool) {
	p := r.lookup(topic, partition)
	if p == nil {
		return nil, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.omap.Runs()), true
}
