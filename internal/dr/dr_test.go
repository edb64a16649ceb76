package dr

import (
	"reflect"
	"testing"

	"github.com/kmirror/kmirror/internal/groupsync"
	"github.com/kmirror/kmirror/internal/progress"
)

func TestCurrentCheckpointsDropsThoseOfAnEarlierTopic(t *testing.T) {
	positions := map[progress.Partition]progress.Position{
		{Topic: "orders", Partition: 0}: {TopicID: "new"},
		{Topic: "orders", Partition: 1}: {TopicID: "new"},
		{Topic: "legacy", Partition: 0}: {}, // written before topic IDs were stored
	}
	cps := []groupsync.Checkpoint{
		{Group: "g", Topic: "orders", Partition: 0, TopicID: "new", SourceOffset: 5},
		{Group: "g", Topic: "orders", Partition: 1, TopicID: "old", SourceOffset: 900}, // of the deleted topic
		{Group: "g", Topic: "legacy", Partition: 0, TopicID: "x", SourceOffset: 7},
		{Group: "g", Topic: "gone", Partition: 0, TopicID: "y", SourceOffset: 1}, // no position: kept
		{Group: "h", Topic: "orders", Partition: 0, SourceOffset: 3},             // no ID: kept
	}
	got := currentCheckpoints(cps, positions)
	want := []groupsync.Checkpoint{cps[0], cps[2], cps[3], cps[4]}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("currentCheckpoints =\n%+v\nwant\n%+v", got, want)
	}
}
