// Package metrics defines kmirror's Prometheus metrics. One Metrics value
// is created per process and handed down to the flows; nothing is
// registered globally.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Error kinds used as the kind label of kmirror_errors_total.
const (
	ErrUnreachable    = "cluster_unreachable"
	ErrProduce        = "produce"
	ErrRecordTooLarge = "record_too_large"
	ErrAuthorization  = "authorization"
	ErrAuthentication = "authentication" // SASL refused: wrong user, password or mechanism
	ErrTLS            = "tls"            // TLS handshake failed or TLS files unreadable
	ErrFetch          = "fetch"
	ErrTopicSync      = "topic_sync"
	ErrTopicDeleted   = "topic_deleted"
	ErrPartitionShape = "partition_mismatch"
	ErrProgress       = "progress"
	ErrOffsetReset    = "offset_out_of_range"
	ErrFlowRestart    = "flow_restart"
	ErrUnknownTopic   = "unknown_target_topic"
	ErrInvalidRecord  = "invalid_record"
	ErrOther          = "other"
	ErrGroupSync      = "group_sync"
	ErrRecordsLost    = "records_lost"
	ErrSourceTrunc    = "source_truncated"
	ErrTargetDataLoss = "target_data_loss"
	ErrDeadLetter     = "dead_letter"
	ErrOwnershipLost  = "ownership_lost"
	ErrConfigSync     = "config_sync" // a target topic's configs could not be brought in step
	ErrACLSync        = "acl_sync"
	ErrHeartbeat      = "heartbeat"
	ErrProvenance     = "provenance"  // the progress of a flow writing into the source could not be read
	ErrFenced         = "fenced"      // exactly_once: the brokers refused a transaction of an instance that lost its partitions
	ErrTransaction    = "transaction" // exactly_once: a transaction was aborted (a write in doubt, a broker fault)
	// ErrDecompressTooLarge: a source record batch decompresses past the
	// flow's limit (memory_limit); its partition stops there.
	ErrDecompressTooLarge = "decompress_too_large"
)

// Reasons of kmirror_provenance_dropped_records_total.
const (
	DropLoop   = "loop"   // the target cluster is already in the record's provenance
	DropRouted = "routed" // another flow of the topology brings the record to the target
)

// Reasons of kmirror_provenance_foreign_records_total.
const (
	ForeignNotCopy  = "not_a_copy" // the flow its mark names did not write it
	ForeignUnproven = "unproven"   // neither proven nor disproven in time
)

// Metrics holds every metric kmirror exports.
type Metrics struct {
	Registry *prometheus.Registry

	ReplicatedRecords *prometheus.CounterVec   // flow, topic
	ReplicatedBytes   *prometheus.CounterVec   // flow, topic
	PartitionLag      *prometheus.GaugeVec     // flow, topic, partition
	Latency           *prometheus.HistogramVec // flow
	Errors            *prometheus.CounterVec   // flow, kind
	Duplicates        *prometheus.CounterVec   // flow, topic
	// BatchesPassedThrough counts source record batches written to the
	// target as they are; BatchesFallback those of a pass-through flow
	// written record by record instead, by reason.
	BatchesPassedThrough *prometheus.CounterVec // flow, topic
	BatchesFallback      *prometheus.CounterVec // flow, topic, reason
	Retried              *prometheus.CounterVec // flow, topic
	ResumeSkipped        *prometheus.CounterVec // flow, topic
	TopicsReplicated     *prometheus.GaugeVec   // flow
	PartitionsActive     *prometheus.GaugeVec   // flow
	ClusterUp            *prometheus.GaugeVec   // flow, cluster
	ProgressWrites       *prometheus.CounterVec // flow
	TopicsCreated        *prometheus.CounterVec // flow
	GroupsSynced         *prometheus.GaugeVec   // flow
	CheckpointAge        *prometheus.GaugeVec   // flow, group
	GroupCommits         *prometheus.CounterVec // flow

	TransactionsCommitted    *prometheus.CounterVec   // flow
	TransactionsAborted      *prometheus.CounterVec   // flow
	TransactionCommitSeconds *prometheus.HistogramVec // flow

	RecordsLost       *prometheus.CounterVec // flow, topic
	SourceTruncations *prometheus.CounterVec // flow, topic
	TargetDataLoss    *prometheus.CounterVec // flow, topic
	DeadLettered      *prometheus.CounterVec // flow, topic
	PartitionsStopped *prometheus.GaugeVec   // flow

	TopicsRecreated *prometheus.CounterVec // flow, cluster, topic
	TopicStuck      *prometheus.GaugeVec   // flow, topic
	FlowOwner       *prometheus.GaugeVec   // flow
	PartitionsOwned *prometheus.GaugeVec   // flow
	LagOwned        *prometheus.GaugeVec   // flow
	GroupsActive    *prometheus.GaugeVec   // flow

	ProvenanceDropped *prometheus.CounterVec // flow, topic, reason
	ProvenanceForeign *prometheus.CounterVec // flow, topic, reason
	ConfigUpdates     *prometheus.CounterVec // flow
	TopicsDeleted     *prometheus.CounterVec // flow
	ACLChanges        *prometheus.CounterVec // flow, op (create, delete)
	ACLsSynced        *prometheus.GaugeVec   // flow
	HeartbeatAge      *prometheus.GaugeVec   // flow
	HeartbeatsSent    *prometheus.CounterVec // flow

	HeartbeatLatency *prometheus.GaugeVec // flow

	RecoveryPointRecords *prometheus.GaugeVec // flow, topic
	RecoveryPointBytes   *prometheus.GaugeVec // flow, topic
	RecoveryPointSeconds *prometheus.GaugeVec // flow, topic
	BuildInfo            *prometheus.GaugeVec // version, commit, goversion

	VerifyRuns        *prometheus.CounterVec // flow
	VerifyRecords     *prometheus.CounterVec // flow
	VerifyMismatches  *prometheus.CounterVec // flow, kind (VerifyKinds)
	VerifyLastSuccess *prometheus.GaugeVec   // flow
}

// VerifyKinds are the kind labels of kmirror_verify_mismatches_total.
func VerifyKinds() []string { return []string{"missing", "altered", "duplicated", "extra"} }

// New creates the metrics and registers them, with the Go runtime and
// process collectors, in a fresh registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		ReplicatedRecords: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kmirror_replicated_records_total",
			Help: "Records written to the target and acknowledged by it.",
		}, []string{"flow", "topic"}),
		ReplicatedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kmirror_replicated_bytes_total",
			Help: "Key, value and header bytes of the records acknowledged by the target.",
		}, []string{"flow", "topic"}),
		PartitionLag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kmirror_partition_lag_records",
			Help: "Source end offset minus the next source offset to replicate.",
		}, []string{"flow", "topic", "partition"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kmirror_replication_latency_seconds",
			Help:    "Time from the source record's timestamp to the target's acknowledgement.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 22), // 1 ms .. ~35 min
		}, []string{"flow"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kmirror_errors_total",
			Help: "Faults met while replicating, by kind.",
		}, []string{"flow", "kind"}),
		Duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kmirror_duplicate_records_total",
			Help: "Records written to the target a second time after a restart or a retry (already present there).",
		}, []string{"flow", "topic"}),
		Retried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kmirror_retried_records_total",
			Help: "Records whose write to the target failed and that will be written again.",
		}, []string{"flow", "topic"}),
		ResumeSkipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kmirror_resume_skipped_records_total",
			Help: "Records a restarted flow found already on the target (written after the last stored position) and did not write again.",
		}, []string{"flow", "topic"}),
		TopicsReplicated: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kmirror_topics_replicated",
			Help: "Source topics the flow replicates.",
		}, []string{"flow"}),
		PartitionsActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kmirror_partitions_replicated",
			Help: "Source partitions the flow replicates.",
		}, []string{"flow"}),
		ClusterUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kmirror_cluster_up",
			Help: "1 when the last check reached the cluster, 0 otherwise.",
		}, []string{"flow", "cluster"}),
		ProgressWrites: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kmirror_progress_writes_total",
			Help: "Progress records written to the target's progress topic.",
		}, []string{"flow"}),
		TopicsCreated: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kmirror_topics_created_total",
			Help: "Topics created on the target.",
		}, []string{"flow"}),
	}
	m.GroupsSynced = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kmirror_groups_synced",
		Help: "Consumer groups whose offsets the last sync pass checkpointed.",
	}, []string{"flow"})
	m.CheckpointAge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kmirror_group_checkpoint_age_seconds",
		Help: "Seconds since the group's offsets were last checkpointed.",
	}, []string{"flow", "group"})
	m.GroupCommits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kmirror_group_offsets_committed_total",
		Help: "Partition offsets committed to consumer groups on the target.",
	}, []string{"flow"})
	m.RecordsLost = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kmirror_records_lost_total",
		Help: "Source records deleted (retention, DeleteRecords) before they were copied.",
	}, []string{"flow", "topic"})
	m.SourceTruncations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kmirror_source_truncations_total",
		Help: "Times a source partition was truncated below the copied position; the records from there are copied as new data.",
	}, []string{"flow", "topic"})
	m.TargetDataLoss = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kmirror_target_data_loss_total",
		Help: "Times a target partition lost acknowledged records (its offsets went backwards).",
	}, []string{"flow", "topic"})
	m.DeadLettered = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kmirror_dead_letter_records_total",
		Help: "Records the target refused for good that were written to the dead-letter topic instead.",
	}, []string{"flow", "topic"})
	m.PartitionsStopped = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kmirror_partitions_stopped",
		Help: "Source partitions stopped at a record the target refuses for good.",
	}, []string{"flow"})
	m.Registry.MustRegister(m.RecordsLost, m.SourceTruncations, m.TargetDataLoss, m.DeadLettered, m.PartitionsStopped)
	m.TopicsRecreated = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kmirror_topic_recreated_total",
		Help: "Topics found deleted and created again under the same name (new topic ID, or a target that lost the records written to it); the topic is then copied from the source's beginning.",
	}, []string{"flow", "cluster", "topic"})
	m.TopicStuck = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kmirror_topic_stuck",
		Help: "1 while some partitions of a source topic cannot be replicated (no leader on the source, no offsets, target topic not creatable); the others go on.",
	}, []string{"flow", "topic"})
	m.Registry.MustRegister(m.TopicsRecreated, m.TopicStuck)
	m.FlowOwner = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kmirror_flow_owner",
		Help: "1 while this process holds the flow and may write to its target, 0 while it waits for another instance to stop.",
	}, []string{"flow"})
	m.Registry.MustRegister(m.FlowOwner)
	m.GroupsActive = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kmirror_groups_active_on_target",
		Help: "Synced consumer groups left alone by the last sync pass because they have members on the target (classic or consumer protocol).",
	}, []string{"flow"})
	m.Registry.MustRegister(m.GroupsSynced, m.CheckpointAge, m.GroupCommits, m.GroupsActive)
	m.ProvenanceDropped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kmirror_provenance_dropped_records_total",
		Help: "Source records not written to the target because of their provenance: reason loop (the target already has them) or routed (another flow brings them there).",
	}, []string{"flow", "topic", "reason"})
	m.ProvenanceForeign = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kmirror_provenance_foreign_records_total",
		Help: "Source records carrying a provenance mark that does not prove them a copy kmirror made (a header forwarded by an application, or forged), written like records of the source: reason not_a_copy, or unproven (not decided within the wait).",
	}, []string{"flow", "topic", "reason"})
	m.ConfigUpdates = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kmirror_topic_config_updates_total",
		Help: "Target topics whose configs were changed to follow the source (or topic_config_overrides).",
	}, []string{"flow"})
	m.TopicsDeleted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kmirror_topics_deleted_total",
		Help: "Target topics deleted because their source topic was deleted (delete_topics: true).",
	}, []string{"flow"})
	m.ACLChanges = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kmirror_acl_changes_total",
		Help: "ACLs created or deleted on the target by ACL sync, by op (create, delete).",
	}, []string{"flow", "op"})
	m.ACLsSynced = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kmirror_acls_synced",
		Help: "Target ACLs the last ACL sync pass kept in step with the source.",
	}, []string{"flow"})
	m.HeartbeatAge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kmirror_heartbeat_age_seconds",
		Help: "Seconds since the time of the newest heartbeat of the flow seen on the target: written to the source and replicated, or written to the target once the source answered (heartbeat_location).",
	}, []string{"flow"})
	m.HeartbeatsSent = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kmirror_heartbeats_sent_total",
		Help: "Heartbeat records the flow wrote (to its target, or to its source with heartbeat_location: source).",
	}, []string{"flow"})
	m.BatchesPassedThrough = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kmirror_batches_passthrough_total",
		Help: "Source record batches written to the target as they are (pass_through), without decoding or recompressing them.",
	}, []string{"flow", "topic"})
	m.BatchesFallback = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kmirror_batches_passthrough_fallback_total",
		Help: "Source record batches of a pass_through flow written record by record instead, by reason (compacted, log_append_time, compression, old_format, fence, retry, sequence).",
	}, []string{"flow", "topic", "reason"})
	m.Registry.MustRegister(m.BatchesPassedThrough, m.BatchesFallback)
	m.Registry.MustRegister(m.ProvenanceDropped, m.ProvenanceForeign, m.ConfigUpdates, m.TopicsDeleted, m.ACLChanges, m.ACLsSynced, m.HeartbeatAge, m.HeartbeatsSent)
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.ReplicatedRecords, m.ReplicatedBytes, m.PartitionLag, m.Latency, m.Errors,
		m.Duplicates, m.Retried, m.ResumeSkipped, m.TopicsReplicated, m.PartitionsActive, m.ClusterUp,
		m.ProgressWrites, m.TopicsCreated,
	)
	m.HeartbeatLatency = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kmirror_heartbeat_latency_seconds",
		Help: "Time from the time of the newest heartbeat of the flow (written to the source, or the question to the source before a write to the target) to its arrival on the target; absent until one arrived.",
	}, []string{"flow"})
	m.Registry.MustRegister(m.HeartbeatLatency)
	m.TransactionsCommitted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kmirror_transactions_committed_total",
		Help: "Target transactions the flow committed (exactly_once).",
	}, []string{"flow"})
	m.TransactionsAborted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kmirror_transactions_aborted_total",
		Help: "Target transactions the flow aborted (exactly_once); replication then resumes from the last committed position.",
	}, []string{"flow"})
	m.TransactionCommitSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kmirror_transaction_commit_seconds",
		Help:    "Time the commit of a target transaction took (EndTxn; exactly_once).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"flow"})
	m.Registry.MustRegister(m.TransactionsCommitted, m.TransactionsAborted, m.TransactionCommitSeconds)
	m.PartitionsOwned = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kmirror_partitions_owned",
		Help: "Source partitions of the flow this instance owns (scale_out); 0 without scale_out.",
	}, []string{"flow"})
	m.LagOwned = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kmirror_lag_owned_records",
		Help: "Records the partitions this instance owns are behind their source end (scale_out).",
	}, []string{"flow"})
	m.Registry.MustRegister(m.PartitionsOwned, m.LagOwned)
	m.RecoveryPointRecords = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kmirror_recovery_point_records",
		Help: "Records of the source topic not yet acknowledged by the target: what would be lost if the source died now (source end offset minus position, summed over partitions).",
	}, []string{"flow", "topic"})
	m.RecoveryPointBytes = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kmirror_recovery_point_bytes",
		Help: "Estimated key, value and header bytes of the records counted by kmirror_recovery_point_records: exact for the records fetched, the topic's average record size for the others.",
	}, []string{"flow", "topic"})
	m.RecoveryPointSeconds = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kmirror_recovery_point_seconds",
		Help: "Age of the oldest source record fetched and not yet acknowledged by the target (its timestamp); 0 when none is pending.",
	}, []string{"flow", "topic"})
	m.BuildInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kmirror_build_info",
		Help: "Always 1; its labels name the running build: version, commit and Go version.",
	}, []string{"version", "commit", "goversion"})
	m.Registry.MustRegister(m.RecoveryPointRecords, m.RecoveryPointBytes, m.RecoveryPointSeconds, m.BuildInfo)
	m.VerifyRuns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kmirror_verify_runs_total",
		Help: "Audits of continuous verification (verify_interval) that compared every partition they planned.",
	}, []string{"flow"})
	m.VerifyRecords = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kmirror_verify_records_total",
		Help: "Source records continuous verification compared with their copy.",
	}, []string{"flow"})
	m.VerifyMismatches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kmirror_verify_mismatches_total",
		Help: "Records continuous verification found differing, by kind: missing (a source record without its copy), altered (a copy that differs), duplicated (a second copy of a compared record), extra (a target record the flow did not write).",
	}, []string{"flow", "kind"})
	m.VerifyLastSuccess = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kmirror_verify_last_success_timestamp_seconds",
		Help: "Unix time at which the flow's last audit of continuous verification completed.",
	}, []string{"flow"})
	m.Registry.MustRegister(m.VerifyRuns, m.VerifyRecords, m.VerifyMismatches, m.VerifyLastSuccess)
	return m
}

// ErrorKinds returns every kind label of kmirror_errors_total.
func ErrorKinds() []string {
	return []string{
		ErrUnreachable, ErrProduce, ErrRecordTooLarge, ErrAuthorization, ErrAuthentication, ErrTLS,
		ErrFetch, ErrTopicSync, ErrTopicDeleted, ErrPartitionShape, ErrProgress, ErrOffsetReset,
		ErrFlowRestart, ErrUnknownTopic, ErrInvalidRecord, ErrOther, ErrGroupSync, ErrRecordsLost,
		ErrSourceTrunc, ErrTargetDataLoss, ErrDeadLetter, ErrOwnershipLost, ErrConfigSync, ErrACLSync,
		ErrHeartbeat, ErrProvenance, ErrFenced, ErrTransaction, ErrDecompressTooLarge,
	}
}

// InitFlow creates flow's kmirror_errors_total series of every kind at 0,
// so that rate() and increase() see the first fault of a kind as an
// increase from 0 rather than as a new series.
func (m *Metrics) InitFlow(flow string) {
	for _, kind := range ErrorKinds() {
		m.Errors.WithLabelValues(flow, kind).Add(0)
	}
}

// SetBuildInfo sets kmirror_build_info to 1 for the given build, and
// removes any other build's series.
func (m *Metrics) SetBuildInfo(version, commit, goVersion string) {
	m.BuildInfo.Reset()
	m.BuildInfo.WithLabelValues(version, commit, goVersion).Set(1)
}
