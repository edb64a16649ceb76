package flow

import "context"

// heartbeats writes a heartbeat record to the source's heartbeat topic
// every heartbeat interval, and watches them arrive on the target, until
// ctx ends.
func (r *run) heartbeats(ctx context.Context) {
	<-ctx.Done()
}
