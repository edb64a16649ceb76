package dr

import (
	"context"
	"log/slog"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/flow"
	"github.com/kmirror/kmirror/internal/kfaketest"
	"github.com/kmirror/kmirror/internal/policy"
	"github.com/kmirror/kmirror/internal/progress"
)

func TestUnreplicated(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := kfaketest.Cluster(t)
	cl := kfaketest.Client(t, c, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	adm := kadm.NewClient(cl)
	// orders and orders.eu match; orders.audit is excluded; billing is not
	// included. Partition p of each holds 10+p records.
	for _, topic := range []string{"orders", "orders.eu", "orders.audit", "billing"} {
		if _, err := adm.CreateTopic(ctx, 2, 1, nil, topic); err != nil {
			t.Fatal(err)
		}
		var recs []*kgo.Record
		for p := int32(0); p < 2; p++ {
			for range 10 + p {
				recs = append(recs, &kgo.Record{Topic: topic, Partition: p, Value: []byte("v")})
			}
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	e := &Env{Logger: slog.New(slog.DiscardHandler), Flow: &config.Flow{
		Name: "a-to-b", Source: "a", Target: "b", TopicNaming: policy.NamingIdentity,
		TopicsRegexps:        []*regexp.Regexp{regexp.MustCompile(`^(?:orders.*)$`)},
		TopicsExcludeRegexps: []*regexp.Regexp{regexp.MustCompile(`^(?:orders\.audit)$`)},
	}}
	lag := func(topic string, p int32, end, next, lag int64) flow.PartitionLag {
		return flow.PartitionLag{Topic: topic, Partition: p, SourceEnd: end, SourceNext: next, Lag: lag}
	}
	tests := []struct {
		name      string
		lags      []flow.PartitionLag
		positions map[progress.Partition]progress.Position
		want      []flow.PartitionLag
	}{
		{
			name: "every matching partition replicated",
			lags: []flow.PartitionLag{lag("orders", 0, 10, 10, 0), lag("orders", 1, 11, 11, 0), lag("orders.eu", 0, 10, 10, 0), lag("orders.eu", 1, 11, 11, 0)},
		},
		{
			name: "a topic whose target could not be created",
			lags: []flow.PartitionLag{lag("orders", 0, 10, 10, 0), lag("orders", 1, 11, 11, 0)},
			want: []flow.PartitionLag{lag("orders.eu", 0, 10, -1, 10), lag("orders.eu", 1, 11, -1, 11)},
		},
		{
			name:      "a topic that stopped replicating counts from its stored position",
			lags:      []flow.PartitionLag{lag("orders.eu", 0, 10, 10, 0), lag("orders.eu", 1, 11, 11, 0)},
			positions: map[progress.Partition]progress.Position{{Topic: "orders", Partition: 1}: {SourceNext: 4}},
			want:      []flow.PartitionLag{lag("orders", 0, 10, -1, 10), lag("orders", 1, 11, 4, 7)},
		},
		{
			name: "a partition the target could not grow to",
			lags: []flow.PartitionLag{lag("orders", 0, 10, 10, 0), lag("orders.eu", 0, 10, 10, 0), lag("orders.eu", 1, 11, 11, 0)},
			want: []flow.PartitionLag{lag("orders", 1, 11, -1, 11)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := e.unreplicated(ctx, adm, tc.lags, tc.positions)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("unreplicated = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestNotReplicatedErrorNamesTopics(t *testing.T) {
	err := &NotReplicatedError{Partitions: []flow.PartitionLag{
		{Topic: "orders.eu", Partition: 0, Lag: 10}, {Topic: "orders.eu", Partition: 1, Lag: 11}, {Topic: "audit", Partition: 0, Lag: 0},
	}}
	for _, want := range []string{"2 source topics", "audit (1 partitions, 0 records), orders.eu (2 partitions, 21 records)", "run the failover again"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not contain %q", err.Error(), want)
		}
	}
}
