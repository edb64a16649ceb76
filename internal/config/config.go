// Package config loads kmirror's YAML configuration.
//
// Load and Parse read the file into a yaml.Node tree, expand ${VAR} and
// ${VAR:-default} references in scalar values, apply defaults and validate
// everything before anything connects to a cluster. Every problem is
// reported as an *Error naming the file, the line, the key path and what was
// expected; when there are several, all of them are returned, joined with
// errors.Join, in file order.
//
// The work is bounded whatever the file holds: a file larger than
// MaxFileSize, aliases and merge keys that expand past MaxNodes keys and
// items, and regexes past MaxRegexLen or MaxRegexInsts are refused with
// one error. Values taken from environment variables never appear in
// errors: they show the ${VAR} references of the file instead.
//
// The reference for every key is docs/configuration.md.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// DefaultGroupsExclude are the consumer groups not synced unless
// groups_exclude says otherwise: console consumers, Kafka Connect's and
// internal groups.
var DefaultGroupsExclude = []string{"console-consumer-.*", "connect-.*", "__.*"}

// DefaultTopicConfigExclude are the topic configs never copied to the
// target unless topic_config_exclude says otherwise. They describe the
// source cluster's brokers and operations rather than the data, following
// MirrorMaker 2's default config filter: durability settings sized for the
// source's brokers, replication throttles, timestamp handling that would
// change what the target stores, and unclean leader election.
var DefaultTopicConfigExclude = []string{
	`follower\.replication\.throttled\.replicas`,
	`leader\.replication\.throttled\.replicas`,
	`message\.timestamp\.difference\.max\.ms`,
	`message\.timestamp\.before\.max\.ms`,
	`message\.timestamp\.after\.max\.ms`,
	`message\.timestamp\.type`,
	`unclean\.leader\.election\.enable`,
	`min\.insync\.replicas`,
	// Removed in Kafka 4: a 4.x target refuses topics that set them.
	`message\.format\.version`,
	`message\.downconversion\.enable`,
}

// Defaults of the optional keys.
const (
	DefaultClientID       = "kmirror"
	DefaultDialTimeout    = 10 * time.Second
	DefaultRequestTimeout = 30 * time.Second

	DefaultTopicNaming          = NamingPrefix
	DefaultStartFrom            = StartEarliest
	DefaultTopicRefreshInterval = 5 * time.Second
	DefaultProgressInterval     = 200 * time.Millisecond
	DefaultOwnershipTimeout     = 10 * time.Second
	DefaultTransactionInterval  = 100 * time.Millisecond
	DefaultTransactionMaxBytes  = 16 << 20
	DefaultSyncInterval         = 5 * time.Second
	DefaultOffsetMapRetention   = 7 * 24 * time.Hour
	DefaultOffsetMapMaxRuns     = 50_000
	DefaultRefusedRetryInterval = 5 * time.Minute
	DefaultHeartbeatInterval    = time.Second
	DefaultHeartbeatTopic       = "heartbeats"
	DefaultHeartbeatLocation    = HeartbeatTarget
	DefaultACLs                 = ACLsOff
	DefaultProvenance           = ProvenanceAuto

	DefaultCompression      = "lz4"
	DefaultLinger           = 5 * time.Millisecond
	DefaultBatchMaxBytes    = 1 << 20  // 1 MiB
	DefaultMaxBufferedBytes = 32 << 20 // 32 MiB; the memory budget may set less (internal/membudget)
	DefaultAcks             = AcksAll

	// Fetch sizes; the memory budget may set less (internal/membudget).
	DefaultFetchMaxBytes          = 8 << 20 // 8 MiB
	DefaultFetchMaxPartitionBytes = 2 << 20 // 2 MiB
	DefaultIsolationLevel         = ReadCommitted

	DefaultHTTPListen = "127.0.0.1:9780"
	DefaultLogLevel   = "info"
	DefaultLogFormat  = "text"
)

// Defaults and limits of the admin HTTP server (http).
const (
	DefaultHTTPReadHeaderTimeout = 5 * time.Second
	DefaultHTTPReadTimeout       = 10 * time.Second
	DefaultHTTPWriteTimeout      = 30 * time.Second
	DefaultHTTPIdleTimeout       = 60 * time.Second
	DefaultHTTPMaxHeaderBytes    = 8 << 10 // 8 KiB
	DefaultHTTPMaxConnections    = 64

	MinHTTPAuthTokenLen = 16 // auth_token: shortest accepted
)

// Values of the enumerated keys.
const (
	NamingPrefix   = "prefix"   // topic_naming: target topic is TopicPrefix + source topic
	NamingIdentity = "identity" // topic_naming: target topic has the source topic's name

	StartEarliest = "earliest" // start_from
	StartLatest   = "latest"   // start_from

	AcksAll    = "all"    // producer.acks
	AcksLeader = "leader" // producer.acks

	ReadUncommitted = "read_uncommitted" // consumer.isolation_level
	ReadCommitted   = "read_committed"   // consumer.isolation_level

	HTTPOff = "off" // http.listen: no HTTP server

	ACLsOff    = "off"    // acls: no ACL sync
	ACLsSafe   = "safe"   // acls: copy topic and group ACLs, never granting writes to replicas
	ACLsMirror = "mirror" // acls: copy topic and group ACLs as they are, removals included

	ProvenanceAuto   = "auto"   // provenance: on with identity naming, off with prefix naming
	ProvenanceAlways = "always" // provenance: on
	ProvenanceOff    = "off"    // provenance: off

	HeartbeatTarget = "target" // heartbeat_location: heartbeats written to the target, the source only read
	HeartbeatSource = "source" // heartbeat_location: heartbeats written to the source and replicated like data
)

// Config is a loaded, defaulted and validated configuration.
type Config struct {
	File     string              // path it was loaded from
	Clusters map[string]*Cluster // by alias
	Flows    []*Flow             // in file order
	HTTP     HTTP
	Log      Log
	// MemoryLimit (memory_limit) is the memory the process may use, in
	// bytes; 0 when the file does not say, and kmirror derives it from
	// the cgroup or the machine's RAM at start (see internal/membudget).
	// MemoryLimitLine is its line in the file.
	MemoryLimit     int64
	MemoryLimitLine int
}

// Cluster is one Kafka cluster, named by its alias.
type Cluster struct {
	Alias            string   // the key under clusters
	BootstrapServers []string // bootstrap_servers: "host:port" seeds, at least one
	ClientID         string   // client_id; default "kmirror"
	TLS              *TLS     // tls; nil = plaintext
	SASL             *SASL    // sasl; nil = no authentication
	// AllowPlaintextSASL (allow_plaintext_sasl) accepts SASL PLAIN
	// without TLS, which sends the password in clear.
	AllowPlaintextSASL bool
	DialTimeout        time.Duration // dial_timeout; default 10s
	RequestTimeout     time.Duration // request_timeout; default 30s
}

// TLS configures the connection to a cluster's brokers. Relative file paths
// in the file are resolved against the config file's directory, so the paths
// here can be opened as they are.
type TLS struct {
	Enabled            bool   // enabled; true unless the tls block says false
	CAFile             string // ca_file; "" = system roots
	CertFile           string // cert_file (client certificate, with KeyFile)
	KeyFile            string // key_file
	InsecureSkipVerify bool   // insecure_skip_verify
	ServerName         string // server_name; "" = the broker's host name
}

// SASL configures authentication to a cluster. Its String and GoString
// methods never show the password or the client secret.
type SASL struct {
	Mechanism string // mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM (upper case)
	Username  string // username (PLAIN, SCRAM)
	Password  string // password (PLAIN, SCRAM)
	OAuth     *OAuth // OAUTHBEARER settings; nil for other mechanisms
	Region    string // region (AWS_MSK_IAM); "" = from the AWS configuration chain
}

// OAuth is where an OAUTHBEARER token comes from: an OAuth 2 token
// endpoint (client-credentials grant) or a file that another process keeps
// up to date. Exactly one of TokenEndpoint and TokenFile is set.
type OAuth struct {
	TokenEndpoint string            // token_endpoint: http(s) URL; https unless the host is a loopback address
	ClientID      string            // client_id
	ClientSecret  string            // client_secret
	Scope         string            // scope; "" = none sent
	TokenFile     string            // token_file: path, resolved against the config file's directory
	Extensions    map[string]string // extensions: SASL extensions sent with the token (such as logicalCluster)
}

// String describes s without its password or client secret.
func (s SASL) String() string {
	out := fmt.Sprintf("{Mechanism:%s Username:%s Password:%s", s.Mechanism, s.Username, redact(s.Password))
	if s.OAuth != nil {
		out += " OAuth:" + s.OAuth.String()
	}
	if s.Region != "" {
		out += " Region:" + s.Region
	}
	return out + "}"
}

// String describes o without its client secret.
func (o OAuth) String() string {
	return fmt.Sprintf("{TokenEndpoint:%s ClientID:%s ClientSecret:%s Scope:%s TokenFile:%s Extensions:%v}",
		o.TokenEndpoint, o.ClientID, redact(o.ClientSecret), o.Scope, o.TokenFile, o.Extensions)
}

// GoString is String, so that %#v does not show the client secret either.
func (o OAuth) GoString() string { return "config.OAuth" + o.String() }

// GoString is String, so that %#v does not show the password either.
func (s SASL) GoString() string { return "config.SASL" + s.String() }

func redact(secret string) string {
	if secret == "" {
		return `""`
	}
	return "<redacted>"
}

// Flow replicates topics from one cluster to another.
type Flow struct {
	Name                 string           // name; default "<source>-to-<target>"; unique, ^[A-Za-z0-9._-]{1,100}$
	Source, Target       string           // source, target: cluster aliases; they differ
	Topics               []string         // topics: include regexes; default [".*"]
	TopicsExclude        []string         // topics_exclude: exclude regexes; default none
	TopicsRegexps        []*regexp.Regexp // Topics compiled as ^(?:re)$
	TopicsExcludeRegexps []*regexp.Regexp // TopicsExclude compiled as ^(?:re)$
	TopicNaming          string           // topic_naming: NamingPrefix (default) or NamingIdentity
	TopicPrefix          string           // topic_prefix: default "<source>."; "" with identity naming
	StartFrom            string           // start_from: StartEarliest (default) or StartLatest
	ReplicationFactor    int              // replication_factor: 1..32767, or 0 for the target cluster's default (-1 in the file is stored as 0)
	TopicRefreshInterval time.Duration    // topic_refresh_interval: default 5s; 100ms..10m
	ProgressInterval     time.Duration    // progress_interval: default 200ms; 10ms..1m
	Groups               []string         // groups: consumer groups whose offsets are synced, include regexes; default [".*"]
	GroupsExclude        []string         // groups_exclude: exclude regexes; default DefaultGroupsExclude (replaced, not extended, when set)
	GroupsRegexps        []*regexp.Regexp // Groups compiled as ^(?:re)$
	GroupsExcludeRegexps []*regexp.Regexp // GroupsExclude compiled as ^(?:re)$
	SyncGroupOffsets     bool             // sync_group_offsets: default true
	SyncInterval         time.Duration    // sync_interval: how often group offsets are synced; default 5s; 100ms..10m
	OffsetMapRetention   time.Duration    // offset_map_retention: how long offset translation stays exact; default 168h; 1m..100 years
	OffsetMapMaxRuns     int              // offset_map_max_runs: bound on the offset map per partition; default 50000
	DeadLetterTopic      string           // dead_letter_topic: target topic for records the target refuses for good; default none (the partition stops)
	RefusedRetryInterval time.Duration    // refused_retry_interval: how often a partition stopped at a refused record tries it again; default 5m; 1s..24h
	OwnershipTimeout     time.Duration    // ownership_timeout: how long a holder that died keeps the flow; default 10s; 6s..30m
	// ExactlyOnce (exactly_once) writes the flow's records, positions and
	// offset map in target transactions fenced by the brokers; default
	// false. TransactionInterval (transaction_interval: default 100ms;
	// 10ms..1m) and TransactionMaxBytes (transaction_max_bytes: default
	// 16 MiB; 1 KiB..1 GiB) say when a transaction is committed.
	ExactlyOnce         bool
	TransactionInterval time.Duration
	TransactionMaxBytes int64
	// PassThrough (pass_through) writes each source record batch the
	// target can take as it is to the target unchanged, without decoding
	// or compressing it again; default false. It needs a flow that adds
	// nothing to records: provenance off, not exactly_once.
	PassThrough bool
	// TopicConfigExclude (topic_config_exclude) are regexes of topic
	// config keys never copied to, changed on or removed from the target;
	// default DefaultTopicConfigExclude (replaced, not extended, when set).
	TopicConfigExclude        []string
	TopicConfigExcludeRegexps []*regexp.Regexp // TopicConfigExclude compiled as ^(?:re)$
	// TopicConfigOverrides (topic_config_overrides) are topic configs
	// forced on every target topic of the flow, whatever the source says.
	TopicConfigOverrides map[string]string
	DeleteTopics         bool          // delete_topics: delete a target topic when its source topic is deleted; default false
	ScaleOut             bool          // scale_out: split the flow's partitions over every instance running it; default true
	OwnershipGroup       string        // ownership_group: the flow's ownership group on the target; "" for __kmirror.<name>.owners
	ACLs                 string        // acls: ACLsOff (default), ACLsSafe or ACLsMirror
	Provenance           string        // provenance: ProvenanceAuto (default), ProvenanceAlways or ProvenanceOff
	HeartbeatInterval    time.Duration // heartbeat_interval: default 1s; 100ms..10m; 0 (or "off") writes no heartbeats
	HeartbeatTopic       string        // heartbeat_topic: default "heartbeats"
	HeartbeatLocation    string        // heartbeat_location: HeartbeatTarget (default) or HeartbeatSource
	VerifyInterval       time.Duration // verify_interval: default 0 (off); 1m..24h: audit the newest replicated records that often
	// Line is the line of the flow in the config file, for errors about
	// several flows.
	Line     int
	Producer Producer // producer
	Consumer Consumer // consumer
	// Explicit holds the producer and consumer sizes written in the file
	// (such as "consumer.fetch_max_bytes"), with their lines: the memory
	// budget sets the others, and warns about these when they take more
	// than the flow's share. Nil when the file sets none.
	Explicit map[string]int
}

// Keys of the flow sizes the memory budget sets unless the file does
// (Flow.Explicit).
const (
	KeyFetchMaxBytes          = "consumer.fetch_max_bytes"
	KeyFetchMaxPartitionBytes = "consumer.fetch_max_partition_bytes"
	KeyMaxBufferedBytes       = "producer.max_buffered_bytes"
)

// IsExplicit reports whether key (KeyFetchMaxBytes, ...) was written in
// the file.
func (f *Flow) IsExplicit(key string) bool {
	_, ok := f.Explicit[key]
	return ok
}

// HeartbeatsOnSource reports whether the flow writes heartbeats to its
// source cluster (heartbeat_location: source), which it then replicates;
// false when it writes none or writes them to the target.
func (f *Flow) HeartbeatsOnSource() bool {
	return f.HeartbeatInterval > 0 && f.HeartbeatLocation == HeartbeatSource
}

// UsesProvenance reports whether the flow reads and writes the provenance
// header: provenance always, or auto with identity naming.
func (f *Flow) UsesProvenance() bool {
	switch f.Provenance {
	case ProvenanceAlways:
		return true
	case ProvenanceOff:
		return false
	}
	return f.TopicNaming == NamingIdentity
}

// Producer tunes the writes of a flow to its target cluster.
type Producer struct {
	Compression      string        // compression: none, gzip, snappy, lz4 (default) or zstd
	Linger           time.Duration // linger: default 5ms; 0..10s
	BatchMaxBytes    int32         // batch_max_bytes: default 1 MiB; 1 KiB..256 MiB
	MaxBufferedBytes int64         // max_buffered_bytes: default 32 MiB, or twice BatchMaxBytes if more; at least BatchMaxBytes
	Acks             string        // acks: AcksAll (default) or AcksLeader
}

// Consumer tunes the reads of a flow from its source cluster.
type Consumer struct {
	FetchMaxBytes          int32  // fetch_max_bytes: default 8 MiB
	FetchMaxPartitionBytes int32  // fetch_max_partition_bytes: default 2 MiB
	IsolationLevel         string // isolation_level: ReadUncommitted (default) or ReadCommitted
}

// HTTP configures the admin HTTP server: metrics, health, readiness and
// the JSON API.
type HTTP struct {
	Listen string // listen: "host:port"; default "127.0.0.1:9780"; HTTPOff disables the server

	TLS       *HTTPTLS   // tls: serve HTTPS; nil = plain HTTP
	AuthToken string     // auth_token: bearer token required for all but /healthz and /readyz; "" = none. A secret.
	BasicAuth *BasicAuth // basic_auth: instead of auth_token; nil = none

	ReadHeaderTimeout time.Duration // read_header_timeout: default 5s
	ReadTimeout       time.Duration // read_timeout: whole request; default 10s
	WriteTimeout      time.Duration // write_timeout: whole response; default 30s
	IdleTimeout       time.Duration // idle_timeout: keep-alive connection between requests; default 60s
	MaxHeaderBytes    int           // max_header_bytes: default 8 KiB
	MaxConnections    int           // max_connections: open connections at once; default 64
}

// String describes h without its token.
func (h HTTP) String() string {
	type plain HTTP // without this method
	p := plain(h)
	p.AuthToken = redact(h.AuthToken)
	return fmt.Sprintf("%+v", p)
}

// GoString is String, so that %#v does not show the token either.
func (h HTTP) GoString() string { return "config.HTTP" + h.String() }

// HTTPTLS is the certificate the admin server presents. The files are read
// again when they change, so a rotated certificate needs no restart.
type HTTPTLS struct {
	CertFile string // cert_file: PEM certificate chain
	KeyFile  string // key_file: PEM private key
}

// BasicAuth is the user and password the admin server requires.
type BasicAuth struct {
	Username string // username
	Password string // password: a secret
}

// String describes b without its password.
func (b BasicAuth) String() string {
	return fmt.Sprintf("{Username:%s Password:%s}", b.Username, redact(b.Password))
}

// GoString is String, so that %#v does not show the password either.
func (b BasicAuth) GoString() string { return "config.BasicAuth" + b.String() }

// Log configures kmirror's own log.
type Log struct {
	Level  string // level: debug, info (default), warn or error
	Format string // format: text (default) or json
}

// MaxFileSize is the largest config file Load and Parse accept.
const MaxFileSize = 4 << 20 // 4 MiB

// Load reads, expands (from the process environment), defaults and
// validates the config file at path. A file larger than MaxFileSize is
// refused without being read.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config file %q: %w", path, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() > MaxFileSize {
		return nil, tooBig(path, fi.Size())
	}
	// Not a regular file (a pipe, a device) or growing: read at most one
	// byte past the limit.
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config file %q: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, tooBig(path, -1)
	}
	return Parse(path, data, os.LookupEnv)
}

// tooBig is the error for a file of size bytes (-1: unknown, past the
// limit).
func tooBig(file string, size int64) error {
	what := "more than " + strconv.Itoa(MaxFileSize) + " bytes"
	if size > MaxFileSize {
		what = strconv.FormatInt(size, 10) + " bytes"
	}
	return &Error{File: file, Msg: fmt.Sprintf("config file of %s is too large; expected at most %d bytes (4 MiB)", what, MaxFileSize)}
}

// Parse is Load for a file already read: file names the file in errors and
// is the base of relative TLS paths; lookupEnv resolves ${VAR} references
// (nil means no variable is defined). Parse touches the file system only to
// check that the TLS files it names exist.
func Parse(file string, data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	if len(data) > MaxFileSize {
		return nil, tooBig(file, int64(len(data)))
	}
	if lookupEnv == nil {
		lookupEnv = func(string) (string, bool) { return "", false }
	}
	root, err := parseYAML(file, data)
	if err != nil {
		return nil, err
	}
	d := &decoder{file: file, dir: filepath.Dir(file), lookupEnv: lookupEnv}
	cfg := d.config(root)
	if err := d.err(); err != nil {
		return nil, err
	}
	cfg.File = file
	return cfg, nil
}

// parseYAML parses data into the root node of its single document.
func parseYAML(file string, data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		return nil, syntaxError(file, data, err)
	}
	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return nil, &Error{File: file, Msg: "empty config; expected keys clusters and flows"}
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, syntaxError(file, data, err)
	case len(next.Content) > 0 && !isNull(next.Content[0]):
		return nil, &Error{File: file, Line: next.Content[0].Line,
			Msg: `a second YAML document; expected a single document (remove the "---" above it)`}
	}
	return doc.Content[0], nil
}

// syntaxError turns yaml's "yaml: line N: msg" into an *Error at line N.
//
// The YAML library counts lines from 1 for scanner errors but from 0 for
// parser errors, which it reports at the start of the construct that is
// not closed; those are moved to the right line, within the file.
func syntaxError(file string, data []byte, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	e := &Error{File: file}
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		msg = m[2]
		if isParserError(msg) {
			e.Line = min(e.Line+1, max(bytes.Count(data, []byte("\n")), 1))
		}
	}
	e.Msg = "invalid YAML: " + oneLine(msg)
	return e
}

var yamlLineRE = regexp.MustCompile(`(?s)^line (\d+): (.*)$`)

// isParserError reports whether msg is one of the YAML parser's (not its
// scanner's) messages.
func isParserError(msg string) bool {
	for _, p := range []string{"did not find expected", "found undefined tag handle", "found duplicate %YAML", "found incompatible YAML", "found duplicate %TAG"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}
