package flowverify

import (
	"context"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/logread"
)

// streamBuffer bounds the records a stream reads ahead of the comparison,
// on top of the fetch logread holds.
const streamBuffer = 1024

// logStream reads one partition range with logread in a goroutine and
// hands the records out one by one, transaction markers left out.
type logStream struct {
	ch     chan *kgo.Record
	err    error // set before ch is closed
	cancel context.CancelFunc
	done   chan struct{}
}

// readRange starts reading r from cl: the caller must call close.
func readRange(ctx context.Context, cl *kgo.Client, r logread.Range, o logread.Options) *logStream {
	ctx, cancel := context.WithCancel(ctx)
	s := &logStream{ch: make(chan *kgo.Record, streamBuffer), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer close(s.ch)
		s.err = logread.Read(ctx, cl, r, o, func(rec *kgo.Record) bool {
			if rec.Attrs.IsControl() {
				return true
			}
			select {
			case s.ch <- rec:
				return true
			case <-ctx.Done():
				return false
			}
		})
	}()
	return s
}

// Next returns the next record, nil at the end of the range.
func (s *logStream) Next(ctx context.Context) (*kgo.Record, error) {
	select {
	case r, ok := <-s.ch:
		if !ok {
			return nil, s.err
		}
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *logStream) close() {
	s.cancel()
	for range s.ch { //nolint:revive // drain so the reader ends
	}
	<-s.done
}
