package kafkatest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	scramsasl "github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kmirror/kmirror/test/certs"
	"github.com/kmirror/kmirror/test/kafkaproc"
)

const opTimeout = 30 * time.Second

// TestFetchScriptPinsKafkaVersion keeps KafkaVersion and the version that
// scripts/kafka/fetch.sh downloads in step.
func TestFetchScriptPinsKafkaVersion(t *testing.T) {
	script, err := os.ReadFile(filepath.Join("..", "..", "scripts", "kafka", "fetch.sh"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^KAFKA_VERSION=(\S+)$`).FindSubmatch(script)
	if m == nil {
		t.Fatal("no KAFKA_VERSION=... line in fetch.sh")
	}
	if got := string(m[1]); got != KafkaVersion {
		t.Fatalf("fetch.sh pins Kafka %s, KafkaVersion is %s", got, KafkaVersion)
	}
}

func TestLibsDirFromEnv(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvLibs, dir)
	if _, err := LibsDir(); err == nil {
		t.Fatalf("LibsDir accepted %s without a kafka jar", dir)
	}
	if err := os.WriteFile(filepath.Join(dir, "kafka_2.13-9.9.9.jar"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := LibsDir()
	if err != nil || got != dir {
		t.Fatalf("LibsDir() = %q, %v; want %q", got, err, dir)
	}
}

func TestServerProps(t *testing.T) {
	p := serverProps(9092, 9093, `/data\dir`, map[string]string{"num.partitions": "3", "log.segment.bytes": "1024"})
	text := string(formatProps(p))
	for _, want := range []string{
		"num.partitions=3\n",
		"log.segment.bytes=1024\n",
		"listeners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093\n",
		"controller.quorum.voters=1@127.0.0.1:9093\n",
		`log.dirs=/data\\dir` + "\n",
		// Transactions on a single broker, a timed-out one aborted
		// within about a second.
		"transaction.state.log.replication.factor=1\n",
		"transaction.state.log.min.isr=1\n",
		"transaction.abort.timed.out.transaction.cleanup.interval.ms=1000\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("server.properties lacks %q:\n%s", want, text)
		}
	}
}

// TestCluster runs a cluster through its life: produce and consume, then
// graceful stop and restart, then crash and restart, checking that the
// records and the address survive.
func TestCluster(t *testing.T) {
	c := Start(t, Options{
		Name:       "lifecycle",
		ExtraProps: map[string]string{"log.retention.ms": "604800001"},
	})
	logRSS(t, c)
	checkBrokerConfig(t, c, "log.retention.ms", "604800001")

	const topic = "events"
	createTopic(t, c, topic)
	produce(t, c, topic, "a", "b", "c")
	expectRecords(t, c, topic, "a", "b", "c")

	bootstrap := c.Bootstrap()
	pid := c.pid()
	c.Stop()
	expectGone(t, pid)
	c.Stop() // stopping a stopped cluster is a no-op
	c.Restart()
	if got := c.Bootstrap(); got != bootstrap {
		t.Fatalf("bootstrap changed across a restart: %s, then %s", bootstrap, got)
	}
	expectRecords(t, c, topic, "a", "b", "c")
	produce(t, c, topic, "d")

	pid = c.pid()
	c.Kill()
	expectGone(t, pid)
	c.Restart()
	expectRecords(t, c, topic, "a", "b", "c", "d")

	pid = c.pid()
	c.Restart() // restarting a running cluster stops it first
	expectGone(t, pid)
	expectRecords(t, c, topic, "a", "b", "c", "d")
}

// TestTwoClusters checks that clusters started side by side, as a
// replication test does, are independent.
func TestTwoClusters(t *testing.T) {
	src := Start(t, Options{Name: "source"})
	dst := Start(t, Options{Name: "target"})
	if src.Bootstrap() == dst.Bootstrap() {
		t.Fatalf("both clusters at %s", src.Bootstrap())
	}
	createTopic(t, src, "only-in-source")
	produce(t, src, "only-in-source", "x")

	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	topics, err := kadm.NewClient(newClient(t, dst)).ListTopics(ctx)
	if err != nil {
		t.Fatalf("listing the target's topics: %v", err)
	}
	if topics.Has("only-in-source") {
		t.Fatal("the target cluster has the source's topic")
	}
}

// TestPortTaken takes a broker's client port between FreePorts and the
// JVM binding it: Start must start the cluster again on fresh ports, and
// Restart, which keeps the ports, must wait until the port is free again.
func TestPortTaken(t *testing.T) {
	var taken []int
	hold := func(port int) net.Listener {
		t.Helper()
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatalf("taking port %d: %v", port, err)
		}
		taken = append(taken, port)
		return l
	}
	var first net.Listener
	c := Start(t, Options{Name: "ports", beforeLaunch: func(c *Cluster) {
		if first == nil {
			first = hold(c.port)
		}
	}})
	defer first.Close()
	if got := c.Bootstrap(); got == net.JoinHostPort("127.0.0.1", strconv.Itoa(taken[0])) {
		t.Fatalf("the cluster runs at %s, the port that was taken", got)
	}
	if !bindFailed(logPathOfFirstTry(t, c), 0) {
		t.Errorf("the first try's log does not say the port was taken")
	}
	createTopic(t, c, "events")
	produce(t, c, "events", "a")

	// Restart on a port held until Kafka has failed to bind it.
	bootstrap := c.Bootstrap()
	c.Stop()
	mark := fileSize(c.LogPath())
	l := hold(c.port)
	released := make(chan struct{})
	go func() {
		defer close(released)
		defer l.Close()
		deadline := time.Now().Add(readyTimeout)
		for !bindFailed(c.LogPath(), mark) && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
	}()
	c.Restart()
	<-released
	if !bindFailed(c.LogPath(), mark) {
		t.Errorf("the restart did not meet the taken port")
	}
	if got := c.Bootstrap(); got != bootstrap {
		t.Fatalf("bootstrap changed across a restart: %s, then %s", bootstrap, got)
	}
	expectRecords(t, c, "events", "a")
}

// logPathOfFirstTry finds the log of the abandoned first try of a
// cluster: the other kafka.log in the test's temporary directories.
func logPathOfFirstTry(t *testing.T, c *Cluster) string {
	t.Helper()
	logs, err := filepath.Glob(filepath.Join(filepath.Dir(filepath.Dir(c.LogPath())), "*", "kafka.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range logs {
		if l != c.LogPath() {
			return l
		}
	}
	t.Fatalf("no log besides %s among %v", c.LogPath(), logs)
	return ""
}

// pid returns the running JVM's process id.
func (c *Cluster) pid() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		c.t.Fatal("cluster not running")
	}
	return c.proc.cmd.Process.Pid
}

func expectGone(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("JVM %d still exists after stopping (kill 0: %v)", pid, err)
	}
}

// logRSS logs the JVM's resident memory, read from /proc where there is one.
func logRSS(t *testing.T, c *Cluster) {
	status, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(c.pid()), "status"))
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			t.Logf("kafka JVM %s", strings.Join(strings.Fields(line), " "))
		}
	}
}

func newClient(t *testing.T, c *Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.Bootstrap())}, opts...)...)
	if err != nil {
		t.Fatalf("creating a client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func createTopic(t *testing.T, c *Cluster, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := kadm.NewClient(newClient(t, c)).CreateTopic(ctx, 1, 1, nil, topic); err != nil {
		t.Fatalf("creating topic %s: %v", topic, err)
	}
}

func checkBrokerConfig(t *testing.T, c *Cluster, key, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	configs, err := kadm.NewClient(newClient(t, c)).DescribeBrokerConfigs(ctx, 1)
	if err != nil {
		t.Fatalf("describing broker configs: %v", err)
	}
	for _, rc := range configs {
		for _, cfg := range rc.Configs {
			if cfg.Key == key {
				if cfg.Value == nil || *cfg.Value != want {
					t.Fatalf("broker config %s = %v, want %s", key, cfg.Value, want)
				}
				return
			}
		}
	}
	t.Fatalf("broker config %s not described", key)
}

func produce(t *testing.T, c *Cluster, topic string, values ...string) {
	t.Helper()
	cl := newClient(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	records := make([]*kgo.Record, 0, len(values))
	for _, v := range values {
		records = append(records, &kgo.Record{Topic: topic, Value: []byte(v)})
	}
	if err := cl.ProduceSync(ctx, records...).FirstErr(); err != nil {
		t.Fatalf("producing to %s: %v", topic, err)
	}
	cl.Close()
}

// expectRecords reads the topic from its start and checks that it holds
// exactly the values, in order.
func expectRecords(t *testing.T, c *Cluster, topic string, values ...string) {
	t.Helper()
	cl := newClient(t, c,
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	var got []string
	for len(got) < len(values) {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %q from %s, want %q: %v", got, topic, values, ctx.Err())
		}
		for _, fe := range fetches.Errors() {
			t.Fatalf("consuming %s: partition %d: %v", fe.Topic, fe.Partition, fe.Err)
		}
		fetches.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	if !slices.Equal(got, values) {
		t.Fatalf("consumed %q from %s, want %q", got, topic, values)
	}
}

// TestSecuredListeners starts a broker with a mutual-TLS listener, a
// SASL_SSL listener with SCRAM-SHA-512, the ACL authorizer and an extra
// JVM system property, and checks that a TLS client with a certificate and
// a SCRAM client answer, that clients without a certificate or with a
// wrong password do not, and that the SCRAM user needs ACLs.
func TestSecuredListeners(t *testing.T) {
	dir := t.TempDir()
	ca, err := certs.NewCA("kafkatest CA")
	if err != nil {
		t.Fatal(err)
	}
	caFile, err := ca.WriteCA(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(name string, o certs.Options) certs.Files {
		l, err := ca.Issue(name, o)
		if err != nil {
			t.Fatal(err)
		}
		f, err := l.Write(dir, name)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	broker := leaf("broker", certs.Options{Hosts: []string{"127.0.0.1", "localhost"}})
	client := leaf("client", certs.Options{Client: true})

	const user, password = "kmirror", "s3cret-listener-test"
	c := Start(t, Options{
		Name: "secured",
		Listeners: []Listener{
			{Name: "MTLS", Protocol: "SSL", Props: TLSProps(broker.Keystore, caFile)},
			{Name: "SASL_SSL", Protocol: "SASL_SSL", Props: kafkaproc.With(TLSProps(broker.Keystore, ""), ScramProps("SCRAM-SHA-512"))},
		},
		FormatArgs: ScramUser("SCRAM-SHA-512", user, password),
		JVMArgs:    []string{"-Dkafkatest.jvmarg=yes"},
		Authorizer: true,
	})
	cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(c.pid()), "cmdline"))
	if err == nil && !strings.Contains(string(cmdline), "-Dkafkatest.jvmarg=yes") {
		t.Errorf("the JVM's command line lacks the extra argument: %q", cmdline)
	}

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.PEM)
	cert, err := tls.LoadX509KeyPair(client.Cert, client.Key)
	if err != nil {
		t.Fatal(err)
	}
	ping := func(addr string, opts ...kgo.Opt) error {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr), kgo.RetryTimeout(5 * time.Second)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		return cl.Ping(ctx)
	}
	withCert := &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}}
	noCert := &tls.Config{RootCAs: roots}
	scram := func(pass string) kgo.Opt {
		return kgo.SASL(scramsasl.Auth{User: user, Pass: pass}.AsSha512Mechanism())
	}
	if err := ping(c.ListenerAddr("MTLS"), kgo.DialTLSConfig(withCert)); err != nil {
		t.Errorf("mutual TLS client: %v", err)
	}
	if err := ping(c.ListenerAddr("MTLS"), kgo.DialTLSConfig(noCert)); err == nil {
		t.Error("a TLS client without a certificate was let in")
	}
	if err := ping(c.ListenerAddr("SASL_SSL"), kgo.DialTLSConfig(noCert), scram(password)); err != nil {
		t.Errorf("SCRAM client: %v", err)
	}
	if err := ping(c.ListenerAddr("SASL_SSL"), kgo.DialTLSConfig(noCert), scram("wrong")); err == nil {
		t.Error("a SCRAM client with a wrong password was let in")
	}

	// The harness's PLAINTEXT client is a super user; the SCRAM user has
	// no ACL to write.
	createTopic(t, c, "acl")
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenerAddr("SASL_SSL")), kgo.DialTLSConfig(noCert), scram(password))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	err = cl.ProduceSync(ctx, &kgo.Record{Topic: "acl", Value: []byte("x")}).FirstErr()
	if !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Errorf("producing without an ACL: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
	produce(t, c, "acl", "y")
}

func TestAddListeners(t *testing.T) {
	p := serverProps(9092, 9093, "/data", nil)
	addListeners(p, []Listener{
		{Name: "MTLS", Protocol: "SSL", Props: TLSProps("/ks.pem", "/ca.pem")},
		{Name: "SASL_SSL", Protocol: "SASL_SSL", Props: ScramProps("SCRAM-SHA-512")},
	}, []int{9094, 9095})
	for k, want := range map[string]string{
		"listeners":                                      "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093,MTLS://127.0.0.1:9094,SASL_SSL://127.0.0.1:9095",
		"advertised.listeners":                           "PLAINTEXT://127.0.0.1:9092,MTLS://127.0.0.1:9094,SASL_SSL://127.0.0.1:9095",
		"listener.security.protocol.map":                 "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,MTLS:SSL,SASL_SSL:SASL_SSL",
		"listener.name.mtls.ssl.client.auth":             "required",
		"listener.name.mtls.ssl.truststore.type":         "PEM",
		"listener.name.sasl_ssl.sasl.enabled.mechanisms": "SCRAM-SHA-512",
		"sasl.enabled.mechanisms":                        "SCRAM-SHA-512",
		"inter.broker.listener.name":                     "PLAINTEXT",
	} {
		if p[k] != want {
			t.Errorf("%s = %q, want %q", k, p[k], want)
		}
	}
	if err := (Listener{Name: "PLAINTEXT", Protocol: "SSL"}).check(); err == nil {
		t.Error("a listener named PLAINTEXT passed the check")
	}
}
