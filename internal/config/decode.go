package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// The keys each mapping allows, in the order error messages list them.
const (
	configKeys   = "clusters flows http log memory_limit"
	clusterKeys  = "allow_plaintext_sasl bootstrap_servers client_id dial_timeout request_timeout sasl tls"
	tlsKeys      = "ca_file cert_file enabled insecure_skip_verify key_file server_name"
	saslKeys     = "client_id client_secret extensions mechanism password region scope token_endpoint token_file username"
	flowKeys     = "acls consumer dead_letter_topic delete_topics exactly_once groups groups_exclude heartbeat_interval heartbeat_location heartbeat_topic name offset_map_max_runs offset_map_retention ownership_group ownership_timeout pass_through producer progress_interval provenance refused_retry_interval replication_factor scale_out source start_from sync_group_offsets sync_interval target topic_config_exclude topic_config_overrides topic_naming topic_prefix topic_refresh_interval topics topics_exclude transaction_interval transaction_max_bytes verify_interval"
	producerKeys = "acks batch_max_bytes compression linger max_buffered_bytes"
	consumerKeys = "fetch_max_bytes fetch_max_partition_bytes isolation_level"
	httpKeys     = "auth_token basic_auth idle_timeout listen max_connections max_header_bytes read_header_timeout read_timeout tls write_timeout"
	logKeys      = "format level"
)

var (
	// aliasRE is what a cluster alias may look like: it goes into topic
	// prefixes ("<alias>.") and default flow names, so no dots.
	aliasRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	// flowNameRE is what a flow name may look like: it goes into the names
	// of kmirror's internal topics and consumer groups.
	flowNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)
	// topicCharsRE is the alphabet of Kafka topic names.
	topicCharsRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
)

const maxTopicLen = 249 // Kafka's limit on topic names

// groupNameRE and maxGroupLen bound ownership_group: Kafka accepts any
// group name; kmirror keeps to names ACLs and tools handle plainly.
var groupNameRE = regexp.MustCompile(`^[A-Za-z0-9._:-]+$`)

const maxGroupLen = 249

func (d *decoder) config(root *yaml.Node) *Config {
	cfg := &Config{
		Clusters: map[string]*Cluster{},
		HTTP:     defaultHTTP(),
		Log:      Log{Level: DefaultLogLevel, Format: DefaultLogFormat},
	}
	m := d.mapping(&field{val: root}, "a mapping with keys clusters and flows", configKeys)
	if m == nil {
		return cfg
	}
	if f := m.get("clusters"); f != nil {
		cfg.Clusters = d.clusters(f)
	} else {
		d.errorf(nil, "clusters", "missing; expected a mapping of cluster aliases to clusters")
	}
	if f := m.get("flows"); f != nil {
		cfg.Flows = d.flows(f, cfg.Clusters)
	} else {
		d.errorf(nil, "flows", "missing; expected a list of flows")
	}
	if f := m.get("http"); f != nil {
		d.http(f, &cfg.HTTP)
	}
	if f := m.get("log"); f != nil {
		d.log(f, &cfg.Log)
	}
	if f := m.get("memory_limit"); f != nil {
		d.memoryLimit(f, cfg)
	}
	return cfg
}

// --- clusters ---

func (d *decoder) clusters(f *field) map[string]*Cluster {
	clusters := map[string]*Cluster{}
	m := d.mapping(f, "a mapping of cluster aliases to clusters", "")
	if m == nil {
		return clusters
	}
	if len(m.order) == 0 {
		d.errorf(f.val, f.path, "empty; expected at least one cluster")
	}
	for _, alias := range m.order {
		cf := m.fields[alias]
		if !aliasRE.MatchString(alias) {
			d.errorf(cf.key, cf.path, "invalid cluster alias %q; expected 1 to 64 letters, digits, _ or -", alias)
		}
		clusters[alias] = d.cluster(alias, cf)
	}
	return clusters
}

func (d *decoder) cluster(alias string, f *field) *Cluster {
	c := &Cluster{
		Alias:          alias,
		ClientID:       DefaultClientID,
		DialTimeout:    DefaultDialTimeout,
		RequestTimeout: DefaultRequestTimeout,
	}
	m := d.mapping(f, "a mapping with key bootstrap_servers", clusterKeys)
	if m == nil {
		return c
	}
	if f := m.get("bootstrap_servers"); f != nil {
		c.BootstrapServers = d.bootstrapServers(f)
	} else {
		d.missing(m, "bootstrap_servers", `a list of "host:port" addresses`)
	}
	if f := m.get("client_id"); f != nil {
		d.nonEmpty(f, &c.ClientID, "a client ID")
	}
	if f := m.get("dial_timeout"); f != nil {
		d.duration(f, &c.DialTimeout, time.Millisecond, math.MaxInt64)
	}
	if f := m.get("request_timeout"); f != nil {
		d.duration(f, &c.RequestTimeout, time.Millisecond, math.MaxInt64)
	}
	if f := m.get("tls"); f != nil {
		c.TLS = d.tls(f)
	}
	if f := m.get("sasl"); f != nil {
		c.SASL = d.sasl(f)
	}
	if f := m.get("allow_plaintext_sasl"); f != nil {
		d.boolean(f, &c.AllowPlaintextSASL)
	}
	d.plaintextSASL(c, m)
	return c
}

// plaintextSASL refuses SASL PLAIN over a connection without TLS, where
// the password would cross the network in clear, unless the cluster says
// allow_plaintext_sasl. It speaks only of a sasl block that is otherwise
// complete.
func (d *decoder) plaintextSASL(c *Cluster, m *mapping) {
	s := c.SASL
	if s == nil || s.Mechanism != "PLAIN" || s.Username == "" || s.Password == "" || c.AllowPlaintextSASL {
		return
	}
	if c.TLS != nil && c.TLS.Enabled {
		return
	}
	f := m.get("sasl")
	d.errorf(f.at(), f.path, "mechanism PLAIN without TLS sends the password in clear; add a tls block "+
		"(tls: {} uses the system's roots) or set allow_plaintext_sasl: true on the cluster")
}

// bootstrapServers decodes a list of "host:port", or one string of them
// separated by commas (handy with ${KAFKA_BROKERS}).
func (d *decoder) bootstrapServers(f *field) []string {
	const want = `a list of "host:port" addresses`
	var addrs []string
	if f.val.Kind == yaml.ScalarNode && !isNull(f.val) {
		v, ok := d.scalar(f, want)
		if !ok {
			return nil
		}
		for _, a := range strings.Split(v, ",") {
			if a = strings.TrimSpace(a); !d.hostPort(f, a, false) {
				return nil
			}
			addrs = append(addrs, a)
		}
		return addrs
	}
	items, ok := d.list(f, want)
	if !ok {
		return nil
	}
	if len(items) == 0 {
		d.errorf(f.val, f.path, "empty; expected at least one \"host:port\" address")
		return nil
	}
	for _, it := range items {
		var a string
		if d.str(it, &a) && d.hostPort(it, a, false) {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// hostPort checks that addr is "host:port" with a numeric port; listen
// addresses may leave out the host and use port 0.
func (d *decoder) hostPort(f *field, addr string, listen bool) bool {
	const want = `expected "host:port" with a numeric port`
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		d.errorf(f.val, f.path, "invalid address %q; %s", addr, want)
		return false
	}
	if host == "" && !listen {
		d.errorf(f.val, f.path, "invalid address %q: no host; %s", addr, want)
		return false
	}
	min := uint64(1)
	if listen {
		min = 0
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p < min {
		d.errorf(f.val, f.path, "invalid address %q: port %q is not a number from %d to 65535; %s", addr, port, min, want)
		return false
	}
	return true
}

func (d *decoder) tls(f *field) *TLS {
	t := &TLS{Enabled: true}
	m := d.mapping(f, "a mapping of TLS settings (use {} for TLS with the system's roots)", tlsKeys)
	if m == nil {
		return t
	}
	if f := m.get("enabled"); f != nil {
		d.boolean(f, &t.Enabled)
	}
	files := map[string]*string{"ca_file": &t.CAFile, "cert_file": &t.CertFile, "key_file": &t.KeyFile}
	for _, key := range m.order {
		if dst, ok := files[key]; ok && d.str(m.fields[key], dst) && *dst != "" && !filepath.IsAbs(*dst) {
			*dst = filepath.Join(d.dir, *dst)
		}
	}
	if f := m.get("insecure_skip_verify"); f != nil {
		d.boolean(f, &t.InsecureSkipVerify)
	}
	if f := m.get("server_name"); f != nil {
		d.str(f, &t.ServerName)
	}
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		d.errorf(m.get("cert_file").val, join(m.path, "cert_file"), "set without key_file; expected both cert_file and key_file, or neither")
	case t.KeyFile != "" && t.CertFile == "":
		d.errorf(m.get("key_file").val, join(m.path, "key_file"), "set without cert_file; expected both cert_file and key_file, or neither")
	}
	if t.Enabled {
		for _, key := range m.order {
			if dst, ok := files[key]; ok && *dst != "" {
				d.fileExists(m.fields[key], *dst)
			}
		}
	}
	return t
}

// fileExists checks that the TLS file at path can be read.
func (d *decoder) fileExists(f *field, path string) {
	const want = "expected a readable PEM file"
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		d.errorf(f.val, f.path, "file %q does not exist; %s", path, want)
	case err != nil:
		d.errorf(f.val, f.path, "file %q: %v; %s", path, unwrapPathError(err), want)
	case fi.IsDir():
		d.errorf(f.val, f.path, "%q is a directory; %s", path, want)
	}
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// The SASL mechanisms kmirror supports.
const (
	MechanismPlain       = "PLAIN"
	MechanismScramSHA256 = "SCRAM-SHA-256"
	MechanismScramSHA512 = "SCRAM-SHA-512"
	MechanismOAuthBearer = "OAUTHBEARER"
	MechanismAWSMSKIAM   = "AWS_MSK_IAM"
)

var saslMechanisms = [...]string{MechanismPlain, MechanismScramSHA256, MechanismScramSHA512, MechanismOAuthBearer, MechanismAWSMSKIAM}

// saslKeysOf are the keys each mechanism uses besides mechanism.
var saslKeysOf = map[string][]string{
	MechanismPlain:       {"username", "password"},
	MechanismScramSHA256: {"username", "password"},
	MechanismScramSHA512: {"username", "password"},
	MechanismOAuthBearer: {"token_endpoint", "client_id", "client_secret", "scope", "token_file", "extensions"},
	MechanismAWSMSKIAM:   {"region"},
}

// awsRegionRE is what an AWS region name looks like (us-east-1,
// us-gov-west-1, cn-north-1).
var awsRegionRE = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)

func (d *decoder) sasl(f *field) *SASL {
	s := &SASL{}
	m := d.mapping(f, "a mapping with keys mechanism, username and password", saslKeys)
	if m == nil {
		return s
	}
	if f := m.get("mechanism"); f != nil {
		d.enum(f, &s.Mechanism, saslMechanisms[:]...)
	} else {
		d.missing(m, "mechanism", oneOf(saslMechanisms[:]))
	}
	if s.Mechanism == "" {
		return s
	}
	for _, key := range m.order {
		if key != "mechanism" && !slices.Contains(saslKeysOf[s.Mechanism], key) {
			d.errorf(m.fields[key].key, m.fields[key].path, "not used with mechanism %s; expected only: mechanism, %s",
				s.Mechanism, strings.Join(saslKeysOf[s.Mechanism], ", "))
		}
	}
	switch s.Mechanism {
	case MechanismOAuthBearer:
		s.OAuth = d.oauth(m)
	case MechanismAWSMSKIAM:
		if f := m.get("region"); f != nil && d.nonEmpty(f, &s.Region, "an AWS region such as us-east-1") && !awsRegionRE.MatchString(s.Region) {
			d.errorf(f.val, f.path, "invalid region %q; expected an AWS region such as us-east-1", s.Region)
		}
	default:
		d.requiredString(m, "username", &s.Username, "a user name", "a user name")
		d.requiredString(m, "password", &s.Password, "a password", "a password (such as ${KAFKA_PASSWORD})")
	}
	return s
}

// oauth decodes the OAUTHBEARER keys of a sasl mapping: token_endpoint
// with client_id, client_secret and an optional scope, or token_file.
func (d *decoder) oauth(m *mapping) *OAuth {
	o := &OAuth{}
	endpoint, file := m.get("token_endpoint"), m.get("token_file")
	switch {
	case endpoint != nil && file != nil:
		d.errorf(file.key, file.path, "set with token_endpoint (line %d); expected one of token_endpoint or token_file", endpoint.key.Line)
		return o
	case endpoint == nil && file == nil:
		d.missing(m, "token_endpoint", "token_endpoint (with client_id and client_secret) or token_file")
		return o
	case file != nil:
		for _, key := range [...]string{"client_id", "client_secret", "scope"} {
			if f := m.get(key); f != nil {
				d.errorf(f.key, f.path, "only used with token_endpoint; expected no %s with token_file", key)
			}
		}
		if d.nonEmpty(file, &o.TokenFile, "the path of a file holding the token") {
			if !filepath.IsAbs(o.TokenFile) {
				o.TokenFile = filepath.Join(d.dir, o.TokenFile)
			}
			d.readableFile(file, o.TokenFile, "expected a readable file holding the token")
		}
	default:
		if d.nonEmpty(endpoint, &o.TokenEndpoint, "the URL of an OAuth 2 token endpoint") {
			d.tokenEndpoint(endpoint, o.TokenEndpoint)
		}
		d.requiredString(m, "client_id", &o.ClientID, "a client ID", "the OAuth client ID")
		d.requiredString(m, "client_secret", &o.ClientSecret, "a client secret", "the OAuth client secret (such as ${OIDC_SECRET})")
		if f := m.get("scope"); f != nil {
			d.str(f, &o.Scope)
		}
	}
	if f := m.get("extensions"); f != nil {
		em := d.mapping(f, "a mapping of SASL extension names to values", "")
		if em != nil {
			o.Extensions = map[string]string{}
			for _, key := range em.order {
				var v string
				switch {
				case key == "auth" || !saslExtKeyRE.MatchString(key):
					d.errorf(em.fields[key].key, em.fields[key].path, "invalid SASL extension name %q; expected letters only, not \"auth\"", key)
				case d.str(em.fields[key], &v):
					o.Extensions[key] = v
				}
			}
		}
	}
	return o
}

// saslExtKeyRE is RFC 7628's key: ALPHA+.
var saslExtKeyRE = regexp.MustCompile(`^[A-Za-z]+$`)

// tokenEndpoint checks that u is an absolute http(s) URL, and https unless
// it names a loopback host: the client secret travels in the request.
func (d *decoder) tokenEndpoint(f *field, u string) {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" || (p.Scheme != "https" && p.Scheme != "http") {
		d.errorf(f.val, f.path, "invalid URL %q; expected an https:// URL", u)
		return
	}
	if p.Scheme == "http" && !isLoopback(p.Hostname()) {
		d.errorf(f.val, f.path, "%q is not https; expected an https:// URL (the client secret would cross the network in clear)", u)
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// readableFile checks that a file can be read at path.
func (d *decoder) readableFile(f *field, path, want string) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		d.errorf(f.val, f.path, "file %q does not exist; %s", path, want)
	case err != nil:
		d.errorf(f.val, f.path, "file %q: %v; %s", path, unwrapPathError(err), want)
	case fi.IsDir():
		d.errorf(f.val, f.path, "%q is a directory; %s", path, want)
	}
}

// --- flows ---

func (d *decoder) flows(f *field, clusters map[string]*Cluster) []*Flow {
	items, ok := d.list(f, "a list of flows")
	if !ok {
		return nil
	}
	if len(items) == 0 {
		d.errorf(f.val, f.path, "empty; expected at least one flow")
		return nil
	}
	type seen struct {
		path string
		line int
	}
	names := map[string]seen{}
	flows := make([]*Flow, 0, len(items))
	for _, it := range items {
		fl, at := d.flow(it, clusters)
		flows = append(flows, fl)
		if fl.Name == "" || at == nil {
			continue
		}
		if prev, dup := names[fl.Name]; dup {
			d.errorf(at, join(it.path, "name"), "duplicate flow name %q, also used by %s on line %d; expected unique names (set name to tell the flows apart)", fl.Name, prev.path, prev.line)
			continue
		}
		names[fl.Name] = seen{it.path, at.Line}
	}
	if len(d.errs) == 0 {
		d.validateTopology(flows)
	}
	return flows
}

// flow decodes one item of flows. It also returns the node its name comes
// from (the name value, or the flow itself for a default name), or nil if it
// has no valid name.
func (d *decoder) flow(f *field, clusters map[string]*Cluster) (*Flow, *yaml.Node) {
	fl := &Flow{
		Topics:               []string{".*"},
		TopicNaming:          DefaultTopicNaming,
		StartFrom:            DefaultStartFrom,
		TopicRefreshInterval: DefaultTopicRefreshInterval,
		ProgressInterval:     DefaultProgressInterval,
		Groups:               []string{".*"},
		GroupsExclude:        slices.Clone(DefaultGroupsExclude),
		SyncGroupOffsets:     true,
		SyncInterval:         DefaultSyncInterval,
		OffsetMapRetention:   DefaultOffsetMapRetention,
		OffsetMapMaxRuns:     DefaultOffsetMapMaxRuns,
		RefusedRetryInterval: DefaultRefusedRetryInterval,
		OwnershipTimeout:     DefaultOwnershipTimeout,
		TransactionInterval:  DefaultTransactionInterval,
		TransactionMaxBytes:  DefaultTransactionMaxBytes,
		ScaleOut:             true,
		TopicConfigExclude:   slices.Clone(DefaultTopicConfigExclude),
		ACLs:                 DefaultACLs,
		Provenance:           DefaultProvenance,
		HeartbeatInterval:    DefaultHeartbeatInterval,
		HeartbeatTopic:       DefaultHeartbeatTopic,
		HeartbeatLocation:    DefaultHeartbeatLocation,
		Producer: Producer{
			Compression:      DefaultCompression,
			Linger:           DefaultLinger,
			BatchMaxBytes:    DefaultBatchMaxBytes,
			MaxBufferedBytes: DefaultMaxBufferedBytes,
			Acks:             DefaultAcks,
		},
		Consumer: Consumer{
			FetchMaxBytes:          DefaultFetchMaxBytes,
			FetchMaxPartitionBytes: DefaultFetchMaxPartitionBytes,
			IsolationLevel:         DefaultIsolationLevel,
		},
	}
	fl.TopicsRegexps = compileAnchored(fl.Topics)
	fl.GroupsRegexps = compileAnchored(fl.Groups)
	fl.GroupsExcludeRegexps = compileAnchored(fl.GroupsExclude)
	fl.TopicConfigExcludeRegexps = compileAnchored(fl.TopicConfigExclude)
	if f.val != nil {
		fl.Line = f.val.Line
	}
	m := d.mapping(f, "a mapping with keys source and target", flowKeys)
	if m == nil {
		return fl, nil
	}
	d.clusterRef(m, "source", clusters, &fl.Source)
	d.clusterRef(m, "target", clusters, &fl.Target)
	if fl.Source != "" && fl.Source == fl.Target {
		d.errorf(m.get("target").val, join(m.path, "target"), "same cluster as source (%q); expected a different cluster", fl.Source)
	}
	nameAt := d.flowName(m, f, fl)

	if f := m.get("topics"); f != nil {
		if len(f.val.Content) == 0 && f.val.Kind == yaml.SequenceNode {
			d.errorf(f.val, f.path, `empty; expected at least one regex (leave topics out to replicate every topic)`)
		} else {
			d.regexes(f, &fl.Topics, &fl.TopicsRegexps)
		}
	}
	if f := m.get("topics_exclude"); f != nil {
		d.regexes(f, &fl.TopicsExclude, &fl.TopicsExcludeRegexps)
	}
	if f := m.get("topic_naming"); f != nil {
		d.enum(f, &fl.TopicNaming, NamingPrefix, NamingIdentity)
	}
	d.topicPrefix(m, fl)
	if f := m.get("start_from"); f != nil {
		d.enum(f, &fl.StartFrom, StartEarliest, StartLatest)
	}
	if f := m.get("replication_factor"); f != nil {
		if integer(d, f, &fl.ReplicationFactor, -1, math.MaxInt16,
			"an integer from 1 to 32767, or 0 or -1 for the target cluster's default") && fl.ReplicationFactor < 0 {
			fl.ReplicationFactor = 0
		}
	}
	if f := m.get("topic_refresh_interval"); f != nil {
		d.duration(f, &fl.TopicRefreshInterval, 100*time.Millisecond, 10*time.Minute)
	}
	if f := m.get("progress_interval"); f != nil {
		d.duration(f, &fl.ProgressInterval, 10*time.Millisecond, time.Minute)
	}
	if f := m.get("groups"); f != nil {
		if len(f.val.Content) == 0 && f.val.Kind == yaml.SequenceNode {
			d.errorf(f.val, f.path, `empty; expected at least one regex (set sync_group_offsets: false to sync no group)`)
		} else {
			d.regexes(f, &fl.Groups, &fl.GroupsRegexps)
		}
	}
	if f := m.get("groups_exclude"); f != nil {
		fl.GroupsExclude, fl.GroupsExcludeRegexps = nil, nil
		d.regexes(f, &fl.GroupsExclude, &fl.GroupsExcludeRegexps)
	}
	if f := m.get("sync_group_offsets"); f != nil {
		d.boolean(f, &fl.SyncGroupOffsets)
	}
	if f := m.get("sync_interval"); f != nil {
		d.duration(f, &fl.SyncInterval, 100*time.Millisecond, 10*time.Minute)
	}
	if f := m.get("offset_map_retention"); f != nil {
		d.duration(f, &fl.OffsetMapRetention, time.Minute, 100*365*24*time.Hour)
	}
	if f := m.get("offset_map_max_runs"); f != nil {
		integer(d, f, &fl.OffsetMapMaxRuns, 1, 100_000_000, "an integer from 1 to 100000000")
	}
	if f := m.get("dead_letter_topic"); f != nil {
		var name string
		if d.nonEmpty(f, &name, "a topic name of the target cluster") {
			if !topicCharsRE.MatchString(name) || len(name) > maxTopicLen || name == "." || name == ".." {
				d.errorf(f.val, f.path, "invalid topic name %q; expected 1 to %d letters, digits, '.', '_' or '-'", name, maxTopicLen)
			} else {
				fl.DeadLetterTopic = name
			}
		}
	}
	if f := m.get("refused_retry_interval"); f != nil {
		d.duration(f, &fl.RefusedRetryInterval, time.Second, 24*time.Hour)
	}
	if f := m.get("ownership_timeout"); f != nil {
		d.duration(f, &fl.OwnershipTimeout, 6*time.Second, 30*time.Minute)
	}
	d.metadataKeys(m, fl)
	if f := m.get("producer"); f != nil {
		d.producer(f, fl)
	}
	if f := m.get("consumer"); f != nil {
		d.consumer(f, fl)
	}
	d.exactlyOnce(m, fl)
	d.passThrough(m, fl)
	return fl, nameAt
}

// passThrough decodes pass_through and rejects the settings it cannot
// work with yet.
func (d *decoder) passThrough(m *mapping, fl *Flow) {
	f := m.get("pass_through")
	if f == nil || !d.boolean(f, &fl.PassThrough) || !fl.PassThrough {
		return
	}
	if fl.UsesProvenance() {
		d.errorf(f.val, f.path, "pass_through writes source record batches unchanged, and this flow adds a provenance header to every record (provenance: %s, topic_naming: %s); expected provenance: off or pass_through: false", fl.Provenance, fl.TopicNaming)
	}
	if fl.ExactlyOnce {
		d.errorf(f.val, f.path, "pass_through is not available with exactly_once yet; expected one of them false")
	}
	if fl.Producer.Acks == AcksLeader {
		d.errorf(f.val, f.path, "pass_through writes with an idempotent producer, which needs producer acks: all; expected acks: all or pass_through: false")
	}
}

// clusterRef decodes source or target: the alias of a defined cluster.
func (d *decoder) clusterRef(m *mapping, key string, clusters map[string]*Cluster, dst *string) {
	f := m.get(key)
	if f == nil {
		d.missing(m, key, "the alias of a cluster defined under clusters")
		return
	}
	var alias string
	if !d.nonEmpty(f, &alias, "the alias of a cluster defined under clusters") {
		return
	}
	if _, ok := clusters[alias]; !ok {
		d.errorf(f.val, f.path, "unknown cluster %q; %s", alias, definedClusters(clusters))
		return
	}
	*dst = alias
}

func definedClusters(clusters map[string]*Cluster) string {
	if len(clusters) == 0 {
		return "no clusters are defined under clusters"
	}
	aliases := make([]string, 0, len(clusters))
	for a := range clusters {
		aliases = append(aliases, a)
	}
	slices.Sort(aliases)
	return "defined clusters: " + strings.Join(aliases, ", ")
}

// flowName sets fl.Name from name, or to "<source>-to-<target>", and returns
// the node to blame for it (nil if it is not valid).
func (d *decoder) flowName(m *mapping, item *field, fl *Flow) *yaml.Node {
	const want = "1 to 100 letters, digits, '.', '_' or '-'"
	if f := m.get("name"); f != nil {
		var name string
		if !d.nonEmpty(f, &name, "a flow name of "+want) {
			return nil
		}
		if !flowNameRE.MatchString(name) {
			d.errorf(f.val, f.path, "invalid flow name %q; expected %s", name, want)
			return nil
		}
		fl.Name = name
		return f.val
	}
	if fl.Source == "" || fl.Target == "" {
		return nil
	}
	name := fl.Source + "-to-" + fl.Target
	if !flowNameRE.MatchString(name) {
		d.errorf(item.val, join(m.path, "name"), "default name %q is invalid; expected %s (set name)", name, want)
		return nil
	}
	fl.Name = name
	return item.val
}

// regexes decodes a list of topic regexes and compiles each anchored at
// both ends.
func (d *decoder) regexes(f *field, dst *[]string, dstRE *[]*regexp.Regexp) {
	items, ok := d.list(f, `a list of regexes such as ["orders.*"]`)
	if !ok {
		return
	}
	res := make([]string, 0, len(items))
	compiled := make([]*regexp.Regexp, 0, len(items))
	for _, it := range items {
		var re string
		if !d.nonEmpty(it, &re, `a regex (".*" matches every topic)`) {
			continue
		}
		c := d.regex(it, re)
		if c == nil {
			continue
		}
		res = append(res, re)
		compiled = append(compiled, c)
	}
	if len(res) == len(items) {
		*dst = res
		*dstRE = compiled
	}
}

// compileAnchored compiles the default regexes so that they match whole
// names, as MirrorMaker 2 does; regexes from the file go through d.regex.
func compileAnchored(res []string) []*regexp.Regexp {
	out := make([]*regexp.Regexp, len(res))
	for i, re := range res {
		out[i] = regexp.MustCompile(`^(?:` + re + `)$`)
	}
	return out
}

// regexpProblem is err without Go's "error parsing regexp: " and with the
// offending part unquoted.
func regexpProblem(err error) string {
	var se *syntax.Error
	if !errors.As(err, &se) {
		return strings.TrimPrefix(err.Error(), "error parsing regexp: ")
	}
	if se.Expr == "" {
		return string(se.Code)
	}
	expr := se.Expr
	if len(expr) > maxShownRegex {
		expr = expr[:maxShownRegex] + "..."
	}
	return fmt.Sprintf("%s: %s", se.Code, expr)
}

// topicPrefix sets fl.TopicPrefix once fl.TopicNaming is known.
func (d *decoder) topicPrefix(m *mapping, fl *Flow) {
	f := m.get("topic_prefix")
	if fl.TopicNaming != NamingPrefix {
		if f != nil {
			d.errorf(f.key, f.path, "only allowed with topic_naming: prefix; expected no topic_prefix with topic_naming: %s", fl.TopicNaming)
		}
		return
	}
	if f == nil {
		if fl.Source != "" {
			fl.TopicPrefix = fl.Source + "."
		}
		return
	}
	var p string
	if !d.nonEmpty(f, &p, `a topic name prefix such as "primary." (use topic_naming: identity for none)`) {
		return
	}
	if !topicCharsRE.MatchString(p) || len(p) >= maxTopicLen {
		d.errorf(f.val, f.path, "invalid topic prefix %q; expected at most %d letters, digits, '.', '_' or '-'", p, maxTopicLen-1)
		return
	}
	fl.TopicPrefix = p
}

func (d *decoder) producer(f *field, fl *Flow) {
	p := &fl.Producer
	m := d.mapping(f, "a mapping of producer settings", producerKeys)
	if m == nil {
		return
	}
	if f := m.get("compression"); f != nil {
		d.enum(f, &p.Compression, "none", "gzip", "snappy", "lz4", "zstd")
	}
	if f := m.get("linger"); f != nil {
		d.duration(f, &p.Linger, 0, 10*time.Second)
	}
	if f := m.get("batch_max_bytes"); f != nil {
		integer(d, f, &p.BatchMaxBytes, 1<<10, 256<<20, "an integer from 1024 (1 KiB) to 268435456 (256 MiB)")
	}
	if f := m.get("max_buffered_bytes"); f != nil {
		if integer(d, f, &p.MaxBufferedBytes, 1, math.MaxInt64, "a positive integer") {
			if p.MaxBufferedBytes < int64(p.BatchMaxBytes) {
				d.errorf(f.val, f.path, "%d is less than batch_max_bytes (%d); expected at least batch_max_bytes", p.MaxBufferedBytes, p.BatchMaxBytes)
			}
			fl.explicit(KeyMaxBufferedBytes, f)
		}
	} else {
		// Room for two batches at least, so that one fills while the
		// other is written.
		p.MaxBufferedBytes = max(p.MaxBufferedBytes, 2*int64(p.BatchMaxBytes))
	}
	if f := m.get("acks"); f != nil {
		d.enum(f, &p.Acks, AcksAll, AcksLeader)
	}
}

func (d *decoder) consumer(f *field, fl *Flow) {
	c := &fl.Consumer
	m := d.mapping(f, "a mapping of consumer settings", consumerKeys)
	if m == nil {
		return
	}
	const want = "an integer from 1 to 2147483647"
	if f := m.get("fetch_max_bytes"); f != nil && integer(d, f, &c.FetchMaxBytes, 1, math.MaxInt32, want) {
		fl.explicit(KeyFetchMaxBytes, f)
	}
	if f := m.get("fetch_max_partition_bytes"); f != nil && integer(d, f, &c.FetchMaxPartitionBytes, 1, math.MaxInt32, want) {
		fl.explicit(KeyFetchMaxPartitionBytes, f)
	}
	if f := m.get("isolation_level"); f != nil {
		d.enum(f, &c.IsolationLevel, ReadUncommitted, ReadCommitted)
	}
}

// explicit records that key of the flow was written in the file, at f.
func (f *Flow) explicit(key string, at *field) {
	if f.Explicit == nil {
		f.Explicit = map[string]int{}
	}
	f.Explicit[key] = at.at().Line
}

// --- http, log ---

func defaultHTTP() HTTP {
	return HTTP{
		Listen:            DefaultHTTPListen,
		ReadHeaderTimeout: DefaultHTTPReadHeaderTimeout,
		ReadTimeout:       DefaultHTTPReadTimeout,
		WriteTimeout:      DefaultHTTPWriteTimeout,
		IdleTimeout:       DefaultHTTPIdleTimeout,
		MaxHeaderBytes:    DefaultHTTPMaxHeaderBytes,
		MaxConnections:    DefaultHTTPMaxConnections,
	}
}

func (d *decoder) http(f *field, h *HTTP) {
	m := d.mapping(f, "a mapping with key listen", httpKeys)
	if m == nil {
		return
	}
	if f := m.get("listen"); f != nil {
		d.httpListen(f, h)
	}
	if f := m.get("tls"); f != nil {
		h.TLS = d.httpTLS(f)
	}
	if f := m.get("auth_token"); f != nil {
		d.authToken(f, &h.AuthToken)
	}
	if f := m.get("basic_auth"); f != nil {
		h.BasicAuth = d.basicAuth(f)
		if m.get("auth_token") != nil {
			d.errorf(f.key, f.path, "set together with auth_token; expected one of auth_token and basic_auth")
		}
	}
	durations := []struct {
		key string
		dst *time.Duration
	}{
		{"read_header_timeout", &h.ReadHeaderTimeout},
		{"read_timeout", &h.ReadTimeout},
		{"write_timeout", &h.WriteTimeout},
		{"idle_timeout", &h.IdleTimeout},
	}
	for _, dur := range durations {
		if f := m.get(dur.key); f != nil {
			d.duration(f, dur.dst, time.Millisecond, 24*time.Hour)
		}
	}
	if f := m.get("max_header_bytes"); f != nil {
		integer(d, f, &h.MaxHeaderBytes, 1<<10, 1<<20, "an integer from 1024 to 1048576")
	}
	if f := m.get("max_connections"); f != nil {
		integer(d, f, &h.MaxConnections, 1, 100_000, "an integer from 1 to 100000")
	}
}

func (d *decoder) httpListen(f *field, h *HTTP) {
	var listen string
	if !d.nonEmpty(f, &listen, `"host:port" or "off"`) {
		return
	}
	if strings.EqualFold(listen, HTTPOff) {
		h.Listen = HTTPOff
		return
	}
	if d.hostPort(f, listen, true) {
		h.Listen = listen
	}
}

// httpTLS decodes the admin server's certificate: both files are required.
func (d *decoder) httpTLS(f *field) *HTTPTLS {
	t := &HTTPTLS{}
	m := d.mapping(f, "a mapping with keys cert_file and key_file", "cert_file key_file")
	if m == nil {
		return t
	}
	files := []struct {
		key string
		dst *string
	}{{"cert_file", &t.CertFile}, {"key_file", &t.KeyFile}}
	for _, file := range files {
		f, dst := m.get(file.key), file.dst
		if f == nil {
			d.missing(m, file.key, "a PEM file")
			continue
		}
		if !d.nonEmpty(f, dst, "a PEM file") {
			continue
		}
		if !filepath.IsAbs(*dst) {
			*dst = filepath.Join(d.dir, *dst)
		}
		d.fileExists(f, *dst)
	}
	return t
}

// authToken decodes a bearer token. Messages never show its value.
func (d *decoder) authToken(f *field, dst *string) {
	const want = "a token of at least 16 printable characters, such as ${KMIRROR_ADMIN_TOKEN}"
	v, ok := d.scalar(f, want)
	switch {
	case !ok:
		return
	case len(v) < MinHTTPAuthTokenLen:
		d.errorf(f.val, f.path, "too short; expected %s", want)
		return
	case strings.IndexFunc(v, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0:
		d.errorf(f.val, f.path, "contains a space, control or non-ASCII character; expected %s", want)
		return
	}
	*dst = v
}

func (d *decoder) basicAuth(f *field) *BasicAuth {
	b := &BasicAuth{}
	m := d.mapping(f, "a mapping with keys username and password", "password username")
	if m == nil {
		return b
	}
	if f := m.get("username"); f != nil {
		if d.nonEmpty(f, &b.Username, "a user name") && strings.Contains(b.Username, ":") {
			d.errorf(f.val, f.path, "contains \":\"; expected a user name without \":\" (HTTP basic authentication)")
		}
	} else {
		d.missing(m, "username", "a user name")
	}
	d.requiredString(m, "password", &b.Password, "a password", "a password, such as ${KMIRROR_ADMIN_PASSWORD}")
	return b
}

// requiredString decodes key of m into dst as a non-empty string (what
// names the value expected), or reports the key missing (missing names
// what to set).
func (d *decoder) requiredString(m *mapping, key string, dst *string, what, missing string) {
	if f := m.get(key); f != nil {
		d.nonEmpty(f, dst, what)
	} else {
		d.missing(m, key, missing)
	}
}

func (d *decoder) log(f *field, l *Log) {
	m := d.mapping(f, "a mapping with keys level and format", logKeys)
	if m == nil {
		return
	}
	if f := m.get("level"); f != nil {
		d.enum(f, &l.Level, "debug", "info", "warn", "error")
	}
	if f := m.get("format"); f != nil {
		d.enum(f, &l.Format, "text", "json")
	}
}

// exactlyOnce decodes exactly_once and the transaction settings, and
// rejects the settings exactly-once cannot work with.
func (d *decoder) exactlyOnce(m *mapping, fl *Flow) {
	if f := m.get("transaction_interval"); f != nil {
		d.duration(f, &fl.TransactionInterval, 10*time.Millisecond, time.Minute)
	}
	if f := m.get("transaction_max_bytes"); f != nil {
		integer(d, f, &fl.TransactionMaxBytes, 1<<10, 1<<30, "an integer from 1024 (1 KiB) to 1073741824 (1 GiB)")
	}
	f := m.get("exactly_once")
	if f == nil || !d.boolean(f, &fl.ExactlyOnce) || !fl.ExactlyOnce {
		return
	}
	if fl.Producer.Acks == AcksLeader {
		d.errorf(f.val, f.path, "exactly_once needs producer acks: all (transactions are idempotent writes acknowledged by all in-sync replicas); expected acks: all or exactly_once: false")
	}
	if fl.Consumer.IsolationLevel == ReadUncommitted {
		d.errorf(f.val, f.path, "exactly_once reads the source read_committed (aborted records are never copied); expected consumer isolation_level: read_committed or exactly_once: false")
	}
}
