package flow

import (
	"testing"
	"time"

	"github.com/kmirror/kmirror/internal/progress"
	"github.com/kmirror/kmirror/internal/replicate"
)

func TestRecoveryPoints(t *testing.T) {
	now := time.UnixMilli(1_000_000)
	pp := func(topic string, part int32, records, fetched, bytes int64, age time.Duration) replicate.PartitionPending {
		p := replicate.PartitionPending{Partition: progress.Partition{Topic: topic, Partition: part},
			Records: records, Fetched: fetched, FetchedBytes: bytes}
		if fetched > 0 {
			p.Oldest = now.Add(-age)
		}
		return p
	}
	avg := func(topic string) (float64, bool) {
		if topic == "known" {
			return 100, true
		}
		return 0, false
	}
	tests := []struct {
		name    string
		parts   []replicate.PartitionPending
		total   RecoveryPoint
		byTopic map[string]RecoveryPoint
	}{
		{"nothing replicated", nil, RecoveryPoint{}, map[string]RecoveryPoint{}},
		{"caught up", []replicate.PartitionPending{pp("known", 0, 0, 0, 0, 0)},
			RecoveryPoint{}, map[string]RecoveryPoint{"known": {}}},
		{"fetched exactly, the rest at the topic's average", []replicate.PartitionPending{
			pp("known", 0, 10, 4, 1000, 3*time.Second), // 1000 + 6*100
			pp("known", 1, 5, 0, 0, 0),                 // 5*100, nothing fetched: no age
		}, RecoveryPoint{Records: 15, Bytes: 2100, Seconds: 3},
			map[string]RecoveryPoint{"known": {Records: 15, Bytes: 2100, Seconds: 3}}},
		{"no average yet: the fetched records' one", []replicate.PartitionPending{
			pp("new", 0, 8, 2, 50, 1500*time.Millisecond), // 50 + 6*25
		}, RecoveryPoint{Records: 8, Bytes: 200, Seconds: 1.5},
			map[string]RecoveryPoint{"new": {Records: 8, Bytes: 200, Seconds: 1.5}}},
		{"nothing known of the sizes", []replicate.PartitionPending{pp("new", 0, 8, 0, 0, 0)},
			RecoveryPoint{Records: 8}, map[string]RecoveryPoint{"new": {Records: 8}}},
		{"oldest over topics", []replicate.PartitionPending{
			pp("known", 0, 1, 1, 10, 2*time.Second),
			pp("new", 0, 1, 1, 30, 9*time.Second),
			pp("new", 1, 1, 1, 10, 4*time.Second),
		}, RecoveryPoint{Records: 3, Bytes: 50, Seconds: 9},
			map[string]RecoveryPoint{"known": {Records: 1, Bytes: 10, Seconds: 2}, "new": {Records: 2, Bytes: 40, Seconds: 9}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			total, byTopic := recoveryPoints(tc.parts, avg, now)
			if total != tc.total {
				t.Errorf("total = %+v, want %+v", total, tc.total)
			}
			if len(byTopic) != len(tc.byTopic) {
				t.Errorf("by topic = %+v, want %+v", byTopic, tc.byTopic)
			}
			for topic, want := range tc.byTopic {
				if byTopic[topic] != want {
					t.Errorf("%s = %+v, want %+v", topic, byTopic[topic], want)
				}
			}
		})
	}
}
