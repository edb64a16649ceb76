package flow

import (
	"testing"

	"github.com/kmirror/kmirror/internal/config"
)

func TestBatchMaxBytes(t *testing.T) {
	f := &Flow{cfg: &config.Flow{Producer: config.Producer{BatchMaxBytes: 1 << 20}}}
	f.maxMessage.Store("roomy", int32(1049744))
	f.maxMessage.Store("small", int32(500_000))
	f.maxMessage.Store("huge", int32(2_000_000_000))
	for _, tt := range []struct {
		topic string
		want  int32
	}{
		{topic: "unknown", want: 1 << 20},    // batch_max_bytes
		{topic: "roomy", want: 1049744},      // the topic accepts more: a record that large goes through
		{topic: "small", want: 1 << 20},      // never below batch_max_bytes
		{topic: "huge", want: maxBatchBytes}, // franz-go's bound
	} {
		if got := f.batchMaxBytes(tt.topic); got != tt.want {
			t.Errorf("batchMaxBytes(%q) = %d, want %d", tt.topic, got, tt.want)
		}
	}
}
