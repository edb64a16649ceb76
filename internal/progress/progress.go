// Package progress stores a flow's replication progress in a compacted
// topic on the target cluster, so that any instance, on any machine, can
// resume a flow from the target alone.
//
// A partition's position has the key "<source topic>/<partition>" and a
// JSON Position as value. Every run of the partition's offset map is a
// record of its own, keyed "<source topic>/<partition>/<run's first source
// offset>", written whenever the run is created, extended or covers more,
// always before the position that depends on it, and deleted with a
// tombstone when retention drops it: a position never carries or erases a
// run, so the map loaded after a restart is the map that was stored. A
// position is written only after the target acknowledged every record
// before it, so resuming from it never loses a record.
//
// The topic is read with internal/logread: to the end offset listed when
// the read begins, read_committed, failing rather than returning part of
// it.
package progress

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmirror/kmirror/internal/kafka"
	"github.com/kmirror/kmirror/internal/logread"
	"github.com/kmirror/kmirror/internal/offsets"
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
	// Run is the newest run of the partition's offset map, in positions
	// stored by older versions; Load keeps it as a run of its own. Write
	// never stores it: every run is a record of its own.
	Run *offsets.Run `json:"run,omitempty"`
	// TopicID is the Kafka topic ID of the source topic this position
	// belongs to, or empty if unknown (cluster without topic IDs, or
	// written by an older kmirror). A topic deleted and created again
	// under the same name has a new ID: a position with another ID is
	// not applied to it.
	TopicID string `json:"topic_id,omitempty"`
	// LeaderEpoch is the source leader epoch of the record just before
	// SourceNext, when known. Resuming with it lets the consumer detect a
	// source partition truncated below SourceNext while the flow was
	// stopped (an unclean leader election): the records that replaced
	// the lost ones are then copied as new data.
	LeaderEpoch *int32 `json:"leader_epoch,omitempty"`
	// IdleEnd is a target offset up to which the flow wrote nothing past
	// TargetNext: the target partition's end offset, listed while the
	// flow had no write to it in flight (0 when unknown). Records other
	// writers put there, in [TargetNext, IdleEnd), are known not to be
	// the flow's copies without waiting for its next write (see
	// internal/provenance).
	IdleEnd int64 `json:"idle_end,omitempty"`
	// Stopped says the partition's owner stopped cleanly at this
	// position: every write it sent was acknowledged, and the target holds
	// no record of the flow past TargetNext. Only the owner's last store
	// as it stops (or hands the partition over) sets it; every other
	// store clears it, and an owner that resumes from a Stopped position
	// stores it cleared before it writes anything. A position without the
	// field (older versions) is not Stopped, unless the older versions'
	// flow-wide flag says so (see Load).
	Stopped bool `json:"stopped,omitempty"`
	// Writers are the target producers (idempotent, at-least-once mode)
	// that may have written copies of the partition since its last clean
	// stop: the owner's own, stored before its first write, and those of
	// earlier owners it has not fenced yet. A next owner that finds the
	// position not Stopped fences each of them on the target partition
	// before its own writes go on, so that a write of theirs still on its
	// way is refused by the broker (see internal/replicate, fence.go).
	Writers []Producer `json:"writers,omitempty"`
}

// Producer is a target producer: its ID and the epoch it wrote with.
type Producer struct {
	ID    int64 `json:"id"`
	Epoch int16 `json:"epoch"`
}

// Entry is what one write stores for one partition.
type Entry struct {
	Partition
	Position
	// Runs are the runs of the offset map added or changed since the last
	// write, each stored as a record of its own before the position.
	Runs []offsets.Run
	// Dropped are runs retention removed from the offset map.
	Dropped []offsets.Run
}

// Store reads and writes a flow's progress topic.
type Store struct {
	client *kgo.Client
	admin  *kadm.Client
	topic  string
	access kafka.Access
	// stable makes Load wait for the transactions open on the topic (see
	// Stable).
	stable bool
}

// Stable returns a copy of s whose Load waits for the transactions open
// on the progress topic when it begins to end, and returns what they
// committed: the store of an exactly-once flow, whose positions are
// written in the same transactions as the records they cover.
func (s *Store) Stable() *Store {
	c := *s
	c.stable = true
	return &c
}

// WithClient returns a copy of s that reads and writes with client: an
// exactly-once flow writes its progress with its transactional producer.
func (s *Store) WithClient(client *kgo.Client) *Store {
	c := *s
	c.client, c.admin = client, kadm.NewClient(client)
	return &c
}

// WithAccess sets who kmirror is on the target, named in errors about
// missing ACLs, and returns s.
func (s *Store) WithAccess(a kafka.Access) *Store {
	s.access = a
	return s
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
	// Positions are read back only at start: let the cleaner keep a minute
	// of history, which helps when looking at a flow's recent progress.
	extra := map[string]string{"min.compaction.lag.ms": "60000"}
	if err := kafka.EnsureCompactedTopic(ctx, s.admin, s.topic, replicationFactor, extra); err != nil {
		return fmt.Errorf("progress topic on the target: %w", s.access.Name(err))
	}
	return nil
}

// flowStartedKey marks that the flow has started once; from then on its
// start_from setting no longer applies (see Loaded.Started).
const flowStartedKey = "flow-started"

// Loaded is what a flow's progress topic holds.
type Loaded struct {
	// Positions holds the newest position of every partition.
	Positions map[Partition]Position
	// Runs holds every partition's offset map, sorted, newest run
	// included.
	Runs map[Partition][]offsets.Run
	// Started is true once MarkStarted was written: the flow has run
	// before, so partitions without a position are new and start at their
	// earliest offset.
	Started bool
	// Failover is the newest failover recorded, if any.
	Failover *Failover
}

// Unclean returns the partitions, among those keep selects (all if keep
// is nil), whose stored position is not Stopped, sorted: a write of their
// last owner may still land on the target, or an owner replicates them
// now. A flow is cleanly stopped when no instance runs it and Unclean of
// the partitions it replicates is empty.
func (l Loaded) Unclean(keep func(Partition) bool) []Partition {
	var out []Partition
	for p, pos := range l.Positions {
		if !pos.Stopped && (keep == nil || keep(p)) {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b Partition) int {
		if c := cmp.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		return cmp.Compare(a.Partition, b.Partition)
	})
	return out
}

// InTopics returns a selector for Unclean: the partitions of topics.
func InTopics(topics ...string) func(Partition) bool {
	set := make(map[string]bool, len(topics))
	for _, t := range topics {
		set[t] = true
	}
	return func(p Partition) bool { return set[p.Topic] }
}

// failoverKey holds the newest Failover of the flow, as JSON.
const failoverKey = "flow-failover"

// Failover records that clients were moved from the flow's source to its
// target.
type Failover struct {
	AtMs    int64 `json:"at_ms"`
	Planned bool  `json:"planned"`
	// TargetEnds are the end offsets of the target topics at the
	// failover, by target topic and partition: records after them were
	// written on the target afterwards.
	TargetEnds map[string]map[int32]int64 `json:"target_ends"`
}

// PutFailover stores a failover record.
func (s *Store) PutFailover(ctx context.Context, f Failover) error {
	v, err := json.Marshal(f)
	if err != nil {
		return err
	}
	return s.put(ctx, failoverKey, string(v))
}

// ClearFailover deletes the failover record, after a failback.
func (s *Store) ClearFailover(ctx context.Context) error {
	r := &kgo.Record{Topic: s.topic, Partition: 0, Key: []byte(failoverKey)}
	if err := s.client.ProduceSync(ctx, r).FirstErr(); err != nil {
		return fmt.Errorf("writing to progress topic %q: %w", s.topic, s.access.Denied(kafka.OpWrite, kafka.ResTopic, s.topic, err))
	}
	return nil
}

// cleanStopKey is the flow-wide clean-stop flag of older versions: "1"
// after a run stopped cleanly, "0" while one ran. It is no longer
// written (each position says whether its partition stopped cleanly);
// Load still reads it, so that a flow stopped cleanly by an older version
// is known as stopped cleanly: a position stored before a "1" that is
// still the flag's value counts as Stopped.
const cleanStopKey = "flow-clean-stop"

func (s *Store) put(ctx context.Context, key, value string) error {
	r := &kgo.Record{Topic: s.topic, Partition: 0, Key: []byte(key), Value: []byte(value)}
	if err := s.client.ProduceSync(ctx, r).FirstErr(); err != nil {
		return fmt.Errorf("writing to progress topic %q: %w", s.topic, s.access.Denied(kafka.OpWrite, kafka.ResTopic, s.topic, err))
	}
	return nil
}

// MarkStarted records that the flow has started.
func (s *Store) MarkStarted(ctx context.Context) error {
	r := &kgo.Record{Topic: s.topic, Partition: 0, Key: []byte(flowStartedKey), Value: []byte(strconv.FormatInt(time.Now().UnixMilli(), 10))}
	if err := s.client.ProduceSync(ctx, r).FirstErr(); err != nil {
		return fmt.Errorf("writing to progress topic %q: %w", s.topic, s.access.Denied(kafka.OpWrite, kafka.ResTopic, s.topic, err))
	}
	return nil
}

// Load reads the progress topic to the end offset it has when the read
// begins. A slow or failing broker delays it or makes it fail; it never
// returns less than was stored.
func (s *Store) Load(ctx context.Context) (Loaded, error) {
	out := Loaded{Positions: map[Partition]Position{}, Runs: map[Partition][]offsets.Run{}}
	runs := map[Partition]map[int64]offsets.Run{}
	flags := map[string]string{}
	// For the older versions' clean-stop flag: how many records were
	// read when each position and the flag's value were.
	var seq, flagSeq int64
	posSeq := map[Partition]int64{}
	visit := func(r *kgo.Record) bool {
		seq++
		if r.Attrs.IsControl() {
			return true
		}
		if k := string(r.Key); k == flowStartedKey || k == cleanStopKey || k == failoverKey {
			if r.Value == nil {
				delete(flags, k)
			} else {
				flags[k] = string(r.Value)
			}
			if k == cleanStopKey {
				flagSeq = seq
			}
			return true
		}
		it, ok := Decode(r.Key, r.Value)
		switch {
		case !ok || it.IsFailover:
		case it.IsRun && it.Deleted:
			delete(runs[it.Partition], it.RunStart)
		case it.IsRun:
			if runs[it.Partition] == nil {
				runs[it.Partition] = map[int64]offsets.Run{}
			}
			runs[it.Partition][it.RunStart] = it.Run
		case it.Deleted:
			delete(out.Positions, it.Partition)
		default:
			out.Positions[it.Partition] = it.Position
			posSeq[it.Partition] = seq
		}
		return true
	}
	if err := logread.ReadTopic(ctx, s.client, s.topic, logread.Options{WaitStable: s.stable}, visit); err != nil {
		return Loaded{}, fmt.Errorf("reading progress topic %q: %w", s.topic, s.access.Denied(kafka.OpRead, kafka.ResTopic, s.topic, err))
	}
	out.Started = flags[flowStartedKey] != ""
	if flags[cleanStopKey] == "1" {
		// An older version stopped the flow cleanly and no position was
		// stored since (a newer version stores every position it resumes
		// from before it writes anything): those positions are exact.
		for p, pos := range out.Positions {
			if posSeq[p] < flagSeq {
				pos.Stopped = true
				out.Positions[p] = pos
			}
		}
	}
	if v, ok := flags[failoverKey]; ok {
		var f Failover
		if json.Unmarshal([]byte(v), &f) == nil {
			out.Failover = &f
		}
	}
	for p, pos := range out.Positions {
		// A position of the older format carries the newest run, which
		// may be stored nowhere else: keep it, marked to be stored as a
		// record of its own.
		if pos.Run == nil {
			continue
		}
		if stored, ok := runs[p][pos.Run.Source]; !ok || stored.Len < pos.Run.Len {
			if runs[p] == nil {
				runs[p] = map[int64]offsets.Run{}
			}
			runs[p][pos.Run.Source] = pos.Run.Unsaved()
		}
	}
	for p, byStart := range runs {
		list := make([]offsets.Run, 0, len(byStart))
		for _, r := range byStart {
			list = append(list, r)
		}
		slices.SortFunc(list, func(a, b offsets.Run) int { return cmp.Compare(a.Source, b.Source) })
		out.Runs[p] = list
	}
	return out, nil
}

// Write stores entries and returns once the target acknowledged them.
func (s *Store) Write(ctx context.Context, entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	now := time.Now().UnixMilli()
	recs := make([]*kgo.Record, 0, len(entries))
	for _, e := range entries {
		// Runs first: a position never refers to runs not yet stored.
		for _, run := range e.Dropped {
			recs = append(recs, &kgo.Record{Topic: s.topic, Key: runKey(e.Partition, run.Source)})
		}
		for _, run := range e.Runs {
			v, err := json.Marshal(run)
			if err != nil {
				return fmt.Errorf("encoding offset map of %s: %w", e.Partition, err)
			}
			recs = append(recs, &kgo.Record{Topic: s.topic, Key: runKey(e.Partition, run.Source), Value: v})
		}
		e.UpdatedMs = now
		e.Run = nil
		v, err := json.Marshal(e.Position)
		if err != nil {
			return fmt.Errorf("encoding progress of %s: %w", e.Partition, err)
		}
		recs = append(recs, &kgo.Record{Topic: s.topic, Key: []byte(e.Partition.String()), Value: v})
	}
	if err := s.client.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("writing progress to %q: %w", s.topic, s.access.Denied(kafka.OpWrite, kafka.ResTopic, s.topic, err))
	}
	return nil
}

// Item is one record of a progress topic: a partition's position, a run
// of its offset map, or the flow's failover record.
type Item struct {
	// IsFailover says the record is the flow's failover record (Failover,
	// or none any more if Deleted); Partition is then unset.
	IsFailover bool
	Failover   Failover
	Partition  Partition
	// IsRun says the record holds a run (Run, starting at source offset
	// RunStart); otherwise it holds a position.
	IsRun    bool
	RunStart int64
	Run      offsets.Run
	Position Position
	// Deleted says the record is a tombstone: the run or position is gone.
	Deleted bool
}

// Decode decodes a record of a progress topic that holds a position, a
// run or the failover record; false for the topic's other records (flags)
// and for values it cannot read.
func Decode(key, value []byte) (Item, bool) {
	k := string(key)
	if k == failoverKey {
		it := Item{IsFailover: true, Deleted: value == nil}
		if value != nil && json.Unmarshal(value, &it.Failover) != nil {
			return Item{}, false
		}
		return it, true
	}
	if p, start, ok := parseRunKey(k); ok {
		it := Item{Partition: p, IsRun: true, RunStart: start, Deleted: value == nil}
		if value != nil && json.Unmarshal(value, &it.Run) != nil {
			return Item{}, false
		}
		return it, true
	}
	p, ok := parseKey(k)
	if !ok {
		return Item{}, false
	}
	it := Item{Partition: p, Deleted: value == nil}
	if value != nil && json.Unmarshal(value, &it.Position) != nil {
		return Item{}, false
	}
	return it, true
}

func runKey(p Partition, start int64) []byte {
	return []byte(p.String() + "/" + strconv.FormatInt(start, 10))
}

// parseRunKey parses "<topic>/<partition>/<start>"; topic names never
// hold a slash.
func parseRunKey(k string) (Partition, int64, bool) {
	i := strings.LastIndexByte(k, '/')
	if i <= 0 || strings.Count(k, "/") != 2 {
		return Partition{}, 0, false
	}
	start, err := strconv.ParseInt(k[i+1:], 10, 64)
	if err != nil {
		return Partition{}, 0, false
	}
	p, ok := parseKey(k[:i])
	return p, start, ok
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
