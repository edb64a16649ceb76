package verify

import (
	"context"

	"github.com/twmb/franz-go/pkg/kgo"
)

// sliceStream yields records from a slice.
type sliceStream struct{ recs []*kgo.Record }

func (s *sliceStream) Next(context.Context) (*kgo.Record, error) {
	if len(s.recs) == 0 {
		return nil, nil
	}
	r := s.recs[0]
	s.recs = s.recs[1:]
	return r, nil
}
