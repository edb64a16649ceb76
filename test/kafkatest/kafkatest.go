// Package kafkatest runs real Apache Kafka for integration tests.
//
// A Cluster is a single-node KRaft cluster (one combined broker and
// controller) run as a child JVM, listening on free loopback ports, with its
// configuration, data and log in the test's temporary directory:
//
//	func TestMirror(t *testing.T) {
//		src := kafkatest.Start(t, kafkatest.Options{Name: "source"})
//		dst := kafkatest.Start(t, kafkatest.Options{Name: "target"})
//		cl, err := kgo.NewClient(kgo.SeedBrokers(src.Bootstrap()))
//		...
//	}
//
// Options.Brokers > 1 adds broker-only nodes (their own JVMs) to node 1,
// so that one broker can be stopped (StopBroker) while the rest of the
// cluster runs; Stop, Kill and Restart act on node 1.
//
// Options.Listeners adds TLS, mutual-TLS and SASL listeners beside the
// PLAINTEXT one (ListenerAddr gives their addresses; TLSProps, ScramProps,
// PlainProps and ScramUser build their settings), Options.Authorizer turns
// on ACLs, Options.JVMArgs and Options.FormatArgs extend the JVM's and the
// storage tool's command lines.
//
// The cluster is killed when the test ends. It can be stopped, killed and
// restarted on the same ports with the same data to test recovery.
//
// The broker is configured for tests on a small machine: every internal
// topic has one partition and one replica, auto.create.topics.enable=false,
// num.partitions=1, group.initial.rebalance.delay.ms=0, the log cleaner and
// retention checks run every second (log.cleaner.backoff.ms,
// log.retention.check.interval.ms), broker.session.timeout.ms is 4 s so
// that a killed broker can rejoin soon after a restart, and transactions
// work on one broker (the transaction log has one replica), a transaction
// past its timeout being aborted within about a second
// (transaction.abort.timed.out.transaction.cleanup.interval.ms).
// Options.ExtraProps overrides any of these. The JVM gets -Xmx768m,
// SerialGC and the C1 JIT only, and maps a class-data archive of Kafka's
// classes, made once per machine (see cds.go).
//
// Start is made for many tests starting clusters at once: the ports are
// picked below the kernel's ephemeral range (kafkaproc.FreePorts), a
// broker that finds one taken anyway is started again on fresh ports, and
// the storage tool runs once per configuration in the process, the next
// nodes getting a copy of its output with ids of their own (storage.go).
//
// The Kafka jars come from scripts/kafka/fetch.sh (see LibsDir). Without
// them Start skips the test, or fails it if KMIRROR_REQUIRE_KAFKA=1, which
// scripts/test.sh sets so that CI cannot pass without running Kafka.
package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kmirror/kmirror/test/kafkaproc"
)

const (
	readyTimeout  = 60 * time.Second       // from JVM launch to a broker in the metadata
	formatTimeout = 60 * time.Second       // for the storage tool
	stopTimeout   = 20 * time.Second       // SIGTERM to exit, before SIGKILL
	pingTimeout   = 2 * time.Second        // one readiness probe
	pollInterval  = 100 * time.Millisecond // between readiness probes
)

// Options are optional knobs for Start; the zero value is fine.
type Options struct {
	// Name labels the cluster in test logs and on the JVM's command line
	// (-Dkafkatest.cluster=NAME). Default "kafka".
	Name string

	// ExtraProps are server.properties entries that add to or override the
	// harness's defaults (see the package doc), e.g. "message.max.bytes".
	// Overriding listeners, node.id or the quorum breaks the harness.
	ExtraProps map[string]string

	// Brokers is the number of brokers, default 1. Node 1 is broker and
	// controller; nodes 2..Brokers are brokers only, each its own JVM
	// (-Xmx384m), which StopBroker and StartBroker stop and start alone.
	Brokers int

	// Listeners are client listeners opened beside the PLAINTEXT one on
	// every broker, each on a free port of its own (see ListenerAddr):
	// TLS, mutual TLS, SASL. The harness's own clients and the brokers
	// keep using PLAINTEXT.
	Listeners []Listener

	// FormatArgs are added to the storage tool's format command, e.g.
	// ScramUser's --add-scram arguments.
	FormatArgs []string

	// JVMArgs are added to the broker JVM's command line before the main
	// class, e.g. -Dname=value system properties.
	JVMArgs []string

	// Authorizer turns on KRaft's StandardAuthorizer, with the harness's
	// PLAINTEXT and controller principal (User:ANONYMOUS) as the only
	// super user: other principals need ACLs. ExtraProps may name more
	// super users ("super.users").
	Authorizer bool

	// Libs is the directory of Kafka jars to run, for another Kafka
	// release than the pinned one (RequireLibs3 returns the Kafka 3.x
	// jars). Default: RequireLibs.
	Libs string
	// beforeLaunch, for the package's tests, runs before every launch of
	// every node's JVM.
	beforeLaunch func(*Cluster)
}

// Cluster is one single-node KRaft Apache Kafka broker run as a child JVM.
// Its methods are meant for the test's goroutine.
type Cluster struct {
	t         testing.TB
	name      string
	java      string // path of the java binary
	libs      string // directory of Kafka jars
	dir       string // holds the files below and the data directory
	propsPath string // server.properties
	log4jPath string // log4j2.properties
	logPath   string // the JVM's stdout and stderr, across restarts
	port      int    // client (PLAINTEXT) listener on 127.0.0.1
	quorum    int    // controller listener on 127.0.0.1 (node 1)
	logQuoted bool   // a failure message quoted the log already

	mu   sync.Mutex
	proc *process // nil while stopped

	clusterID string     // shared by every node of the cluster
	nodeID    int        // 1 for the controller node
	heap      string     // -Xmx of the JVM
	extra     []*Cluster // broker-only nodes 2..N, on node 1 only

	listenerPorts map[string]int // Options.Listeners by name
	jvmArgs       []string       // Options.JVMArgs
	formatArgs    []string       // Options.FormatArgs
	beforeLaunch  func(*Cluster) // Options.beforeLaunch
	classArchive  string         // the JVMs' class-data archive, "" for none
}

// process is one run of the Kafka JVM, the leader of its own process group.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the JVM has exited and been reaped
	err  error         // cmd.Wait's result; read only after done is closed
}

// Start formats and starts a fresh cluster and waits until its broker
// answers metadata requests. It fails the test with the tail of the Kafka
// log if Kafka cannot start, and registers a cleanup that kills the JVM.
// Without Kafka jars it skips the test, or fails it (see RequireLibs).
//
// A broker that cannot bind one of its ports, taken by another process
// since FreePorts found it free, is started again from scratch on fresh
// ports, up to startAttempts times in all.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	libs := opts.Libs
	if libs == "" {
		libs = RequireLibs(t)
		// The archive is made for the pinned release's jars.
		useClassArchive(t, libs)
	}
	for attempt := 1; ; attempt++ {
		c, err := start(t, opts, libs)
		if err == nil {
			return c
		}
		var le *launchError
		if !errors.As(err, &le) {
			t.Fatalf("kafkatest: cluster %q: %v", opts.Name, err)
		}
		if !le.portTaken || attempt == startAttempts {
			le.node.fatal(le.doing, le.err)
		}
		t.Logf("kafkatest: cluster %q: a port was taken before the broker bound it (%v); starting the cluster again on fresh ports (attempt %d of %d)",
			le.node.name, le.err, attempt+1, startAttempts)
		for _, n := range c.nodes() {
			n.Kill()
			n.logQuoted = true // abandoned: its log is not the test's concern
		}
	}
}

// startAttempts bounds the launches of a broker whose port was taken.
const startAttempts = 3

// start prepares, formats and launches every node of a cluster on fresh
// ports. On an error it returns the cluster as far as it was built, its
// nodes stopped.
func start(t testing.TB, opts Options, libs string) (*Cluster, error) {
	t.Helper()
	id, err := kafkaproc.NewClusterID()
	if err != nil {
		return nil, err
	}
	c, err := newCluster(t, opts, libs, 1, 0)
	if err != nil {
		return nil, err
	}
	c.clusterID = id
	t.Cleanup(c.cleanup)
	for n := 2; n <= opts.Brokers; n++ {
		b, err := newCluster(t, opts, libs, n, c.controllerPort())
		if err != nil {
			return c, err
		}
		b.clusterID = id
		t.Cleanup(b.cleanup)
		c.extra = append(c.extra, b)
	}
	begin := time.Now()
	for _, n := range c.nodes() {
		if err := n.format(); err != nil {
			return c, &launchError{node: n, doing: "formatting storage", err: err}
		}
	}
	for _, n := range c.nodes() {
		if err := n.tryLaunch("start", begin); err != nil {
			for _, n := range c.nodes() {
				n.Kill()
			}
			return c, err
		}
	}
	if len(c.extra) > 0 {
		c.waitBrokers(len(c.extra) + 1)
	}
	return c, nil
}

// launchError is a node that failed to format or start.
type launchError struct {
	node      *Cluster
	doing     string // "formatting storage", "starting", "restarting"
	err       error
	portTaken bool // Kafka logged that it could not bind a port
}

func (e *launchError) Error() string { return e.node.name + ": " + e.doing + ": " + e.err.Error() }

func (e *launchError) Unwrap() error { return e.err }

// nodes returns the cluster's nodes, node 1 first.
func (c *Cluster) nodes() []*Cluster { return append([]*Cluster{c}, c.extra...) }

// controllerPort is the quorum port of node 1.
func (c *Cluster) controllerPort() int { return c.quorum }

// Bootstraps returns the addresses of every broker of the cluster, node 1
// first.
func (c *Cluster) Bootstraps() []string {
	var out []string
	for _, n := range c.nodes() {
		out = append(out, n.Bootstrap())
	}
	return out
}

// node returns broker id (2..Brokers), failing the test if there is none.
func (c *Cluster) node(id int) *Cluster {
	c.t.Helper()
	if id < 2 || id > len(c.extra)+1 {
		c.t.Fatalf("kafkatest: cluster %q has no broker-only node %d", c.name, id)
	}
	return c.extra[id-2]
}

// StopBroker stops broker-only node id (2..Brokers) gracefully; the rest
// of the cluster keeps running.
func (c *Cluster) StopBroker(id int) { c.node(id).Stop() }

// StartBroker starts broker-only node id again with its data and waits
// until the cluster lists as many brokers as there are nodes running
// (other nodes may still be stopped).
func (c *Cluster) StartBroker(id int) {
	c.t.Helper()
	c.node(id).mustLaunch("restart", time.Now())
	running := 0
	for _, n := range c.nodes() {
		n.mu.Lock()
		if n.proc != nil {
			running++
		}
		n.mu.Unlock()
	}
	c.waitBrokers(running)
}

// waitBrokers waits until node 1 lists n registered brokers.
func (c *Cluster) waitBrokers(n int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	for {
		got, err := kafkaproc.Brokers(ctx, c.Bootstrap(), pingTimeout)
		if err == nil && got >= n {
			return
		}
		select {
		case <-ctx.Done():
			c.fatal("waiting for brokers", fmt.Errorf("%d of %d registered after %v (last error %w)", got, n, readyTimeout, err))
		case <-time.After(pollInterval):
		}
	}
}

// newCluster prepares the directory and configuration files of node
// nodeID; nodes other than 1 are brokers only, joining the quorum of node 1
// at controllerPort.
func newCluster(t testing.TB, opts Options, libs string, nodeID, controllerPort int) (*Cluster, error) {
	java, err := javaPath()
	if err != nil {
		return nil, err
	}
	for _, l := range opts.Listeners {
		if err := l.check(); err != nil {
			return nil, err
		}
	}
	ports, err := kafkaproc.FreePorts(2 + len(opts.Listeners))
	if err != nil {
		return nil, err
	}
	name := opts.Name
	if name == "" {
		name = "kafka"
	}
	heap := "-Xmx768m"
	if nodeID > 1 {
		name += "-" + strconv.Itoa(nodeID)
		heap = "-Xmx384m"
	}
	dir := t.TempDir()
	c := &Cluster{
		t:         t,
		name:      name,
		java:      java,
		libs:      libs,
		dir:       dir,
		propsPath: filepath.Join(dir, "server.properties"),
		log4jPath: filepath.Join(dir, "log4j2.properties"),
		logPath:   filepath.Join(dir, "kafka.log"),
		port:      ports[0],
		quorum:    ports[1],
		nodeID:    nodeID,
		heap:      heap,

		listenerPorts: map[string]int{},
		jvmArgs:       opts.JVMArgs,
		beforeLaunch:  opts.beforeLaunch,
	}
	if opts.Libs == "" {
		c.classArchive = archivePath
	}
	if nodeID == 1 {
		// Bootstrap metadata such as SCRAM credentials is written by
		// the controller's format.
		c.formatArgs = opts.FormatArgs
	}
	for i, l := range opts.Listeners {
		c.listenerPorts[l.Name] = ports[2+i]
	}
	extra := map[string]string{}
	if opts.Authorizer {
		extra = authorizerProps()
	}
	props := serverProps(ports[0], ports[1], filepath.Join(dir, "data"), kafkaproc.With(extra, opts.ExtraProps))
	if nodeID > 1 {
		kafkaproc.BrokerOnly(props, nodeID, ports[0], controllerPort)
	}
	addListeners(props, opts.Listeners, ports[2:])
	if err := writeFile(c.propsPath, formatProps(props)); err != nil {
		return nil, err
	}
	if err := writeFile(c.log4jPath, []byte(kafkaproc.Log4jConfig)); err != nil {
		return nil, err
	}
	return c, nil
}

// javaPath finds the java binary: $JAVA_HOME/bin/java, else java on PATH.
func javaPath() (string, error) {
	if home := os.Getenv("JAVA_HOME"); home != "" {
		java := filepath.Join(home, "bin", "java")
		if _, err := os.Stat(java); err == nil {
			return java, nil
		}
	}
	java, err := exec.LookPath("java")
	if err != nil {
		return "", fmt.Errorf("no java (17+) found on PATH or in JAVA_HOME: %w", err)
	}
	return java, nil
}

// Bootstrap returns the broker's address, "127.0.0.1:PORT". It does not
// change across restarts.
func (c *Cluster) Bootstrap() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port))
}

// LogPath returns the file receiving the JVM's output (Kafka's log at INFO)
// across all its runs.
func (c *Cluster) LogPath() string { return c.logPath }

// Stop shuts Kafka down gracefully: SIGTERM to the JVM's process group,
// then SIGKILL if it has not exited after 20 s. It returns once the JVM
// has exited. Stopping a stopped cluster does nothing.
func (c *Cluster) Stop() { c.halt(syscall.SIGTERM, stopTimeout) }

// Kill kills Kafka with SIGKILL, as in a crash, and returns once the JVM
// has exited. Killing a stopped cluster does nothing.
func (c *Cluster) Kill() { c.halt(syscall.SIGKILL, stopTimeout) }

// Restart starts Kafka again on the same ports with the same data, after
// stopping it gracefully if it is running, and waits until it is ready. It
// fails the test if Kafka cannot start.
func (c *Cluster) Restart() {
	c.t.Helper()
	c.Stop()
	c.mustLaunch("restart", time.Now())
}

// cleanup kills the JVM at the end of the test, and quotes its log if the
// test failed, as the log goes away with the test's temporary directory.
func (c *Cluster) cleanup() {
	c.Kill()
	if c.t.Failed() && !c.logQuoted {
		c.t.Logf("kafkatest: cluster %q (the test failed):\n%s", c.name, logExcerpt(c.logPath))
	}
}

// halt sends sig to the running JVM's process group and waits for it to
// exit, sending SIGKILL after grace.
func (c *Cluster) halt(sig syscall.Signal, grace time.Duration) {
	c.mu.Lock()
	p := c.proc
	c.proc = nil
	c.mu.Unlock()
	if p == nil {
		return
	}
	p.signal(sig)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		c.t.Logf("kafkatest: cluster %q did not exit within %v of %v; killing it", c.name, grace, sig)
		p.signal(syscall.SIGKILL)
		<-p.done
	}
}

// signal sends sig to the process group of p unless p has already exited
// (after which its id may belong to someone else).
func (p *process) signal(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	// The JVM leads its own group (see sysProcAttr): a negative pid
	// signals the whole group.
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		_ = p.cmd.Process.Signal(sig)
	}
}

// mustLaunch launches the JVM and waits until it is ready, or kills it and
// fails the test. verb ("start", "restart") and begin are for messages. A
// port taken meanwhile by another process (the node keeps its ports across
// restarts) is waited out for a while.
func (c *Cluster) mustLaunch(verb string, begin time.Time) {
	c.t.Helper()
	for attempt := 1; ; attempt++ {
		err := c.tryLaunch(verb, begin)
		if err == nil {
			return
		}
		var le *launchError
		if !errors.As(err, &le) {
			c.fatal(verb+"ing", err)
		}
		if !le.portTaken || attempt == startAttempts {
			c.fatal(le.doing, le.err)
		}
		c.t.Logf("kafkatest: cluster %q: %s: a port is taken (%v); trying again in %v (attempt %d of %d)",
			c.name, le.doing, le.err, portRetryPause, attempt+1, startAttempts)
		time.Sleep(portRetryPause)
	}
}

// portRetryPause is the wait before launching again on ports that were
// taken.
const portRetryPause = 2 * time.Second

// tryLaunch launches the JVM and waits until it is ready, or kills it and
// returns a *launchError saying whether Kafka could not bind a port.
func (c *Cluster) tryLaunch(verb string, begin time.Time) error {
	c.t.Helper()
	mark := fileSize(c.logPath)
	if c.beforeLaunch != nil {
		c.beforeLaunch(c)
	}
	release, waited := acquireSlot()
	err := c.launch()
	release()
	if err != nil {
		c.Kill()
		return &launchError{node: c, doing: verb + "ing", err: err, portTaken: bindFailed(c.logPath, mark)}
	}
	var queued string
	if waited >= 100*time.Millisecond {
		queued = fmt.Sprintf(", %v of it waiting for one of %d launch slots", waited.Round(time.Millisecond), launchSlots)
	}
	c.t.Logf("kafkatest: cluster %q %sed at %s in %v%s (log %s)",
		c.name, verb, c.Bootstrap(), time.Since(begin).Round(time.Millisecond), queued, c.logPath)
	return nil
}

// fileSize returns the size of the file at path, 0 if there is none.
func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// bindFailed reports whether the log at path, from byte offset on, says
// that Kafka could not bind a listener's port.
func bindFailed(path string, offset int64) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return false
	}
	data, err := io.ReadAll(io.LimitReader(f, 16<<20))
	if err != nil {
		return false
	}
	text := string(data)
	for _, s := range []string{"Unable to start acceptor", "Socket server failed to bind", "Address already in use"} {
		if strings.Contains(text, s) {
			return true
		}
	}
	return false
}

// fatal fails the test, quoting the Kafka log.
func (c *Cluster) fatal(doing string, err error) {
	c.t.Helper()
	c.logQuoted = true
	c.t.Fatalf("kafkatest: cluster %q: %s: %v\n%s", c.name, doing, err, logExcerpt(c.logPath))
}

// javaCmd returns a command running the main class from the Kafka jars in
// a JVM sized for a small machine, output appended to the log file.
func (c *Cluster) javaCmd(ctx context.Context, log *os.File, main string, args ...string) *exec.Cmd {
	jvm := []string{
		"-Xms256m", c.heap,
		"-XX:+UseSerialGC",
		"-XX:TieredStopAtLevel=1", // C1 only: faster start, plenty for tests
		"-XX:+ExitOnOutOfMemoryError",
		"-Djava.awt.headless=true",
		"-Dlog4j2.configurationFile=" + c.log4jPath,
		"-Dkafkatest.cluster=" + c.name,
	}
	if c.classArchive != "" {
		jvm = append(jvm, "-XX:SharedArchiveFile="+c.classArchive)
	}
	jvm = append(jvm, c.jvmArgs...)
	jvm = append(jvm,
		"-cp", filepath.Join(c.libs, "*"),
		main,
	)
	cmd := exec.CommandContext(ctx, c.java, append(jvm, args...)...)
	cmd.Dir = c.dir
	cmd.Stdout = log
	cmd.Stderr = log
	cmd.SysProcAttr = sysProcAttr()
	return cmd
}

// openLog opens the log file for appending and writes a header line.
func (c *Cluster) openLog(header string) (*os.File, error) {
	f, err := os.OpenFile(c.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the log: %w", err)
	}
	fmt.Fprintf(f, "=== kafkatest: %s (%s) ===\n", header, time.Now().Format(time.RFC3339Nano))
	return f, nil
}

// runFormat runs the storage tool on the fresh data directory with the
// cluster's id.
func (c *Cluster) runFormat() error {
	id := c.clusterID
	log, err := c.openLog("formatting storage, cluster id " + id)
	if err != nil {
		return err
	}
	defer log.Close()
	release, _ := acquireSlot()
	defer release()
	ctx, cancel := context.WithTimeout(context.Background(), formatTimeout)
	defer cancel()
	args := append([]string{"format", "--cluster-id", id, "--config", c.propsPath}, c.formatArgs...)
	cmd := c.javaCmd(ctx, log, "kafka.tools.StorageTool", args...)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("kafka.tools.StorageTool format: %w", err)
	}
	return nil
}

// launch starts the Kafka JVM and waits until it is ready.
func (c *Cluster) launch() error {
	log, err := c.openLog("starting kafka.Kafka")
	if err != nil {
		return err
	}
	cmd := c.javaCmd(context.Background(), log, "kafka.Kafka", c.propsPath)
	err = cmd.Start()
	log.Close() // the JVM has its own descriptor
	if err != nil {
		return fmt.Errorf("starting java: %w", err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	c.mu.Lock()
	c.proc = p
	c.mu.Unlock()
	return c.waitReady(p)
}

// waitReady polls the broker until it lists itself in a metadata response,
// the JVM exits, or readyTimeout passes.
func (c *Cluster) waitReady(p *process) error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		err := kafkaproc.Ping(ctx, c.Bootstrap(), pingTimeout)
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("kafka exited while starting: %w", p.err)
		case <-ctx.Done():
			return fmt.Errorf("kafka not ready after %v: %w", readyTimeout, err)
		case <-ticker.C:
		}
	}
}

// logExcerpt returns, for a failure message, the last lines of the log at
// path that Kafka logged at ERROR or FATAL (which a failing broker may have
// buried under retries) and then its last lines, or a note saying why not.
func logExcerpt(path string) string {
	const (
		maxBytes   = 1 << 20 // read at most the last MiB
		errorLines = 10
		tailLines  = 40
	)
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > maxBytes {
		if _, err := f.Seek(-maxBytes, io.SeekEnd); err != nil {
			return fmt.Sprintf("(reading %s: %v)", path, err)
		}
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	var errs []string
	for _, l := range lines {
		if strings.Contains(l, "] ERROR ") || strings.Contains(l, "] FATAL ") {
			errs = append(errs, l)
		}
	}
	var b strings.Builder
	if len(errs) > 0 {
		fmt.Fprintf(&b, "--- last ERROR lines of %s ---\n%s\n", path, strings.Join(lastN(errs, errorLines), "\n"))
	}
	fmt.Fprintf(&b, "--- last lines of %s ---\n%s", path, strings.Join(lastN(lines, tailLines), "\n"))
	return b.String()
}

// lastN returns the last n elements of s, or all of s.
func lastN(s []string, n int) []string {
	return s[max(0, len(s)-n):]
}
