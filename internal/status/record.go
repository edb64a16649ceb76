// Package status tells how each flow of a configuration stands, from
// the clusters alone, for `kmirror status`: whether it runs and where,
// its topics, its lag in records and in seconds, its latency, the age of
// its last heartbeat, its last error and the age of its last consumer
// group sync.
//
// A running flow stores a summary of itself, the Record, every few seconds
// in a compacted topic of its target cluster (policy.StatusTopic). Collect
// reads that record, the flow's progress and checkpoint topics and the
// copies of its heartbeats on the target, and the end offsets of its
// topics on the source, so it works from any machine, whether the flow
// runs or not, and never writes anything.
package status

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// RecordKey is the key of the status record in a flow's status topic.
const RecordKey = "status"

// Interval is how often a running flow stores its Record.
const Interval = 5 * time.Second

// StateRunning is the state of a Record written by a running flow.
const StateRunning = "running"

// Record is the summary a running flow stores under RecordKey in its
// status topic, as JSON. Pointers are null when unknown.
type Record struct {
	Flow   string `json:"flow"`
	Source string `json:"source"`
	Target string `json:"target"`
	State  string `json:"state"` // StateRunning
	// Owner is the instance that holds and runs the flow: "host:pid".
	Owner     string `json:"owner"`
	StartedMs int64  `json:"started_ms"` // when this run of the flow started
	UpdatedMs int64  `json:"updated_ms"` // when the record was written
	// IntervalMs is how often the record is written.
	IntervalMs int64 `json:"interval_ms"`
	Topics     int   `json:"topics"`
	Partitions int   `json:"partitions"`
	// LagRecords is the sum over the replicated partitions (the
	// heartbeat topic's excepted) of the source end offset minus the
	// next source offset to copy; LagSeconds the age of the oldest
	// source record not yet copied (see OldestPending).
	LagRecords *int64   `json:"lag_records"`
	LagSeconds *float64 `json:"lag_seconds"`
	// LatencyP50Ms and LatencyP99Ms are the median and 99th percentile
	// of the time from a source record's timestamp to the target's
	// acknowledgement over the last minute, as upper bounds of the
	// kmirror_replication_latency_seconds buckets; null when nothing was
	// copied in the last minute.
	LatencyP50Ms *float64 `json:"latency_p50_ms"`
	LatencyP99Ms *float64 `json:"latency_p99_ms"`
	// Heartbeat is null when the flow writes no heartbeats.
	Heartbeat *RecordHeartbeat `json:"heartbeat"`
	// LastError is the newest fault counted in kmirror_errors_total in
	// this run, or null.
	LastError *LastError `json:"last_error"`
	// GroupSyncAgeSeconds is the time since the last group sync pass
	// that checkpointed a group, or null if none did in this run.
	GroupSyncAgeSeconds *float64 `json:"group_sync_age_seconds"`
	// RecoveryPointBytes and RecoveryPointSeconds are what the target
	// would miss if the source died now, as the data plane sees it: the
	// estimated bytes of the records not yet acknowledged by the target,
	// and the age of the oldest of them fetched (0 when none is); see
	// kmirror_recovery_point_bytes and kmirror_recovery_point_seconds.
	// Null when written by a version that does not know them.
	RecoveryPointBytes   *int64   `json:"recovery_point_bytes,omitempty"`
	RecoveryPointSeconds *float64 `json:"recovery_point_seconds,omitempty"`
	SourceUp             bool     `json:"source_up"`
	TargetUp             bool     `json:"target_up"`
	// Instances are the instances sharing the flow's partitions with
	// scale_out, with how many each owns; empty without scale_out.
	Instances []Instance `json:"instances,omitempty"`
}

// Instance is one instance of a scaled-out flow.
type Instance struct {
	Instance   string `json:"instance"` // "host:pid"
	Partitions int    `json:"partitions"`
	Elected    bool   `json:"elected,omitempty"` // runs the flow-wide work
}

// RecordHeartbeat is what a running flow knows of its heartbeats.
type RecordHeartbeat struct {
	// LastMs is when the newest heartbeat seen on the target was written
	// on the source, in Unix milliseconds; 0 if none arrived in this run.
	LastMs int64 `json:"last_ms"`
	// LatencyMs is the time that heartbeat took from the source to the
	// target.
	LatencyMs float64 `json:"latency_ms"`
}

// LastError is a flow's newest fault.
type LastError struct {
	Kind string `json:"kind"` // the kind label of kmirror_errors_total
	// Message is the fault in one line, or empty when it is only in the
	// log.
	Message string `json:"message"`
	AtMs    int64  `json:"at_ms"`
}

// Updated is when the record was written.
func (r Record) Updated() time.Time { return time.UnixMilli(r.UpdatedMs) }

// Encode returns the Kafka record that stores r in topic.
func Encode(topic string, r Record) (*kgo.Record, error) {
	v, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encoding the status of flow %q: %w", r.Flow, err)
	}
	return &kgo.Record{Topic: topic, Partition: 0, Key: []byte(RecordKey), Value: v}, nil
}

// Decode parses a status record; ok is false for other keys, tombstones
// and values that are not a Record.
func Decode(kr *kgo.Record) (Record, bool) {
	if string(kr.Key) != RecordKey || kr.Value == nil {
		return Record{}, false
	}
	var r Record
	if json.Unmarshal(kr.Value, &r) != nil || r.UpdatedMs <= 0 {
		return Record{}, false
	}
	return r, true
}
