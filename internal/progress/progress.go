// Package progress stores a flow's replication progress in a compacted
// topic on the target cluster, so that any instance, on any machine, can
// resume a flow from the target alone.
//
// Each record's key is "<source topic>/<partition>" and its value a JSON
// Position. A position is written only after the target acknowledged every
// record before it, so resuming from it never loses a record.
package progress

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Partition names one source partition.
type Partition struct {
	Topic     string
	Partition int32
}

func (p Partition) String() string { return p.Topic + "/" + strconv.Itoa(int(p.Partition)) }

// Position is where replication of one source partition stands.
type Position struct {
	// SourceNext is the next source offset to replicate: every record
	// before it is on the target.
	SourceNext int64 `json:"source_next"`
	// TargetNext is the target offset just after the last record this flow
	// wrote for the partition, or -1 when unknown.
	TargetNext int64 `json:"target_next"`
	// UpdatedMs is when the position was written, in Unix milliseconds.
	UpdatedMs int64 `json:"updated_ms"`
}

// Entry is a position of one partition.
type Entry struct {
	Partition
	Position
}

// Store reads and writes a flow's progress topic.
type Store struct {
	client *kgo.Client
	admin  *kadm.Client
	topic  string
}

// NewStore returns a store over topic, using client (connected to the
// target cluster) to read and write it.
func NewStore(client *kgo.Client, topic string) *Store {
	return &Store{client: client, admin: kadm.NewClient(client), topic: topic}
}

// Topic is the name of the progress topic.
func (s *Store) Topic() string { return s.topic }

// Ensure creates the progress topic (one partition, compacted) unless it
// exists. replicationFactor <= 0 means the cluster's default.
func (s *Store) Ensure(ctx context.Context, replicationFactor int) error {
	rf := int16(replicationFactor)
	if rf <= 0 {
		rf = -1
	}
	configs := map[string]*string{
		"cleanup.policy":        kadm.StringPtr("compact"),
		"min.compaction.lag.ms": kadm.StringPtr("60000"),
	}
	resp, err := s.admin.CreateTopic(ctx, 1, rf, configs, s.topic)
	if err == nil || errors.Is(err, kerr.TopicAlreadyExists) {
		return nil
	}
	return fmt.Errorf("creating progress topic %q on the target: %w%s", s.topic, err, suffix(resp.ErrMessage))
}

// flowStartedKey marks that the flow has started once; from then on its
// start_from setting no longer applies (see Loaded.Started).
const flowStartedKey = "flow-started"

// Loaded is what a flow's progress topic holds.
type Loaded struct {
	// Positions holds the newest position of every partition.
	Positions map[Partition]Position
	// Started is true once MarkStarted was written: the flow has run
	// before, so partitions without a position are new and start at their
	// earliest offset.
	Started bool
}

// MarkStarted records that the flow has started.
func (s *Store) MarkStarted(ctx context.Context) error {
	r := &kgo.Record{Topic: s.topic, Partition: 0, Key: []byte(flowStartedKey), Value: []byte(strconv.FormatInt(time.Now().UnixMilli(), 10))}
	if err := s.client.ProduceSync(ctx, r).FirstErr(); err != nil {
		return fmt.Errorf("writing to progress topic %q: %w", s.topic, err)
	}
	return nil
}

// Load reads the progress topic to its end.
func (s *Store) Load(ctx context.Context) (Loaded, error) {
	out := Loaded{Positions: map[Partition]Position{}}
	positions, started, err := s.load(ctx)
	if err != nil {
		return out, err
	}
	out.Positions, out.Started = positions, started
	return out, nil
}

func (s *Store) load(ctx context.Context) (map[Partition]Position, bool, error) {
	ends, err := s.admin.ListEndOffsets(ctx, s.topic)
	if err != nil {
		return nil, false, fmt.Errorf("listing end offset of progress topic %q: %w", s.topic, err)
	}
	if err := ends.Error(); err != nil {
		return nil, false, fmt.Errorf("listing end offset of progress topic %q: %w", s.topic, err)
	}
	end, _ := ends.Lookup(s.topic, 0)
	out := map[Partition]Position{}
	started := false
	if end.Offset <= 0 {
		return out, started, nil
	}
	reader, err := kgo.NewClient(append(slices.Clone(s.client.Opts()),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{s.topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)...)
	if err != nil {
		return nil, false, fmt.Errorf("reading progress topic %q: %w", s.topic, err)
	}
	defer reader.Close()
	// The end offset may sit past a transaction marker that is never
	// returned as a record; a long quiet poll after the last record also
	// ends the read. Stopping early only resumes from older positions,
	// which re-sends records but never skips one.
	const quiet = 5 * time.Second
	for {
		pollCtx, cancel := context.WithTimeout(ctx, quiet)
		fetches := reader.PollFetches(pollCtx)
		cancel()
		if err := ctx.Err(); err != nil {
			return nil, false, fmt.Errorf("reading progress topic %q: %w", s.topic, err)
		}
		if pollCtx.Err() != nil && fetches.NumRecords() == 0 {
			return out, started, nil
		}
		for _, fe := range fetches.Errors() {
			if !errors.Is(fe.Err, context.DeadlineExceeded) {
				return nil, false, fmt.Errorf("reading progress topic %q: %w", s.topic, fe.Err)
			}
		}
		done := false
		fetches.EachRecord(func(r *kgo.Record) {
			if r.Offset >= end.Offset-1 {
				done = true
			}
			if string(r.Key) == flowStartedKey {
				started = true
				return
			}
			p, ok := parseKey(string(r.Key))
			if !ok {
				return
			}
			if r.Value == nil {
				delete(out, p)
				return
			}
			var pos Position
			if json.Unmarshal(r.Value, &pos) == nil {
				out[p] = pos
			}
		})
		if done {
			return out, started, nil
		}
	}
}

// Write stores entries and returns once the target acknowledged them.
func (s *Store) Write(ctx context.Context, entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	now := time.Now().UnixMilli()
	recs := make([]*kgo.Record, len(entries))
	for i, e := range entries {
		e.UpdatedMs = now
		v, err := json.Marshal(e.Position)
		if err != nil {
			return fmt.Errorf("encoding progress of %s: %w", e.Partition, err)
		}
		recs[i] = &kgo.Record{Topic: s.topic, Partition: 0, Key: []byte(e.Partition.String()), Value: v}
	}
	if err := s.client.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("writing progress to %q: %w", s.topic, err)
	}
	return nil
}

func parseKey(k string) (Partition, bool) {
	i := strings.LastIndexByte(k, '/')
	if i <= 0 {
		return Partition{}, false
	}
	n, err := strconv.ParseInt(k[i+1:], 10, 32)
	if err != nil {
		return Partition{}, false
	}
	return Partition{Topic: k[:i], Partition: int32(n)}, true
}

func suffix(msg string) string {
	if msg == "" {
		return ""
	}
	return " (" + msg + ")"
}
