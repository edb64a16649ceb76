package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kmirror/kmirror/test/kafkaproc"
)

const (
	brokerReadyTimeout = 90 * time.Second
	brokerStopTimeout  = 30 * time.Second
)

// brokerJVMFlags are the JVM options of both brokers: bin/kafka-server-start.sh's
// heap (1 GiB, enough for 2 GB of data: the data lives in the page cache,
// not the heap) and bin/kafka-run-class.sh's G1 settings.
func brokerJVMFlags() []string {
	return []string{
		"-Xms1g", "-Xmx1g",
		"-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
		"-XX:+ExplicitGCInvokesConcurrent", "-XX:+ExitOnOutOfMemoryError",
		"-Djava.awt.headless=true",
	}
}

// brokerProps returns the server.properties of a single-node KRaft cluster
// (combined broker and controller) on 127.0.0.1: the shared single-node
// settings with the benchmark's tuning (Kafka's defaults, fewer threads for
// a 2-core machine).
func brokerProps(port, controllerPort int, dataDir string) map[string]string {
	return kafkaproc.With(kafkaproc.ServerProps(port, controllerPort, dataDir), kafkaproc.TuningBench())
}

// broker is one single-node KRaft Apache Kafka cluster run as a child JVM
// with its data under the bench work directory.
type broker struct {
	name      string
	dir       string
	dataDir   string
	propsPath string
	logPath   string
	port      int
	// wanPort, if not 0, is the port of a second client listener, WAN,
	// which advertises a wanLink's address: clients that bootstrap
	// through the link keep using it (the long-links scenario).
	wanPort int
	props   map[string]string
	proc    *proc
}

// startBroker formats and starts a fresh broker named name under dir and
// waits until it answers metadata requests. If wanAddr is not empty, the
// broker has a second client listener, WAN, advertised at wanAddr (a
// wanLink forwarding to it).
func startBroker(ctx context.Context, e *env, name, wanAddr string) (*broker, error) {
	nPorts := 2
	if wanAddr != "" {
		nPorts = 3
	}
	ports, err := kafkaproc.FreePorts(nPorts)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(e.workDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("broker %s: %w", name, err)
	}
	b := &broker{
		name:      name,
		dir:       dir,
		dataDir:   filepath.Join(dir, "data"),
		propsPath: filepath.Join(dir, "server.properties"),
		logPath:   filepath.Join(dir, "kafka.log"),
		port:      ports[0],
	}
	b.props = brokerProps(ports[0], ports[1], b.dataDir)
	if wanAddr != "" {
		b.wanPort = ports[2]
		addWANListener(b.props, b.wanPort, wanAddr)
	}
	if err := writeFile(b.propsPath, formatProps("bench broker "+name, b.props)); err != nil {
		return nil, err
	}
	log4j := filepath.Join(dir, "log4j2.properties")
	if err := writeFile(log4j, []byte(kafkaproc.Log4jConfig)); err != nil {
		return nil, err
	}
	id, err := kafkaproc.NewClusterID()
	if err != nil {
		return nil, err
	}
	jvm := append(brokerJVMFlags(), "-Dlog4j2.configurationFile="+log4j, "-cp", filepath.Join(e.libs, "*"))

	fmtCtx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	format := exec.CommandContext(fmtCtx, e.java, append(slices.Clone(jvm),
		"kafka.tools.StorageTool", "format", "--cluster-id", id, "--config", b.propsPath)...)
	if out, err := format.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("broker %s: formatting storage: %w\n%s", name, err, out)
	}

	b.proc, err = startProc("broker-"+name, b.logPath, nil, e.java, append(jvm, "kafka.Kafka", b.propsPath)...)
	if err != nil {
		return nil, fmt.Errorf("broker %s: %w", name, err)
	}
	if err := b.waitReady(ctx); err != nil {
		b.stop()
		return nil, fmt.Errorf("broker %s: %w\n--- end of %s ---\n%s", name, err, b.logPath, tail(b.logPath, 30))
	}
	return b, nil
}

// bootstrap is the broker's client address.
func (b *broker) bootstrap() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.port)) }

// wanListener is the address of the broker's WAN listener, which a
// wanLink forwards to; "" if it has none.
func (b *broker) wanListener() string {
	if b.wanPort == 0 {
		return ""
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(b.wanPort))
}

// addWANListener adds to the broker properties p a plaintext client
// listener named WAN on port, advertised at advertised: a client that
// connects to advertised learns advertised as the broker's address from
// metadata, so all of its connections go there. The PLAINTEXT listener
// and its clients are unchanged.
func addWANListener(p map[string]string, port int, advertised string) {
	p["listeners"] += ",WAN://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p["advertised.listeners"] += ",WAN://" + advertised
	p["listener.security.protocol.map"] += ",WAN:PLAINTEXT"
}

// stop shuts the broker down (SIGTERM, then SIGKILL after a grace period).
func (b *broker) stop() {
	if b.proc != nil {
		b.proc.stop(brokerStopTimeout)
	}
}

// waitReady polls the broker until it lists itself as a registered broker.
func (b *broker) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, brokerReadyTimeout)
	defer cancel()
	var lastErr error
	for {
		if lastErr = kafkaproc.Ping(ctx, b.bootstrap(), 2*time.Second); lastErr == nil {
			return nil
		}
		select {
		case <-b.proc.done:
			return fmt.Errorf("kafka exited while starting: %w", b.proc.err)
		case <-ctx.Done():
			return fmt.Errorf("kafka not ready after %v: %w", brokerReadyTimeout, lastErr)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// topicDiskBytes sums the sizes of the files of every partition directory
// of topic in the broker's data directory: the bytes the topic takes on
// disk, after compression.
func (b *broker) topicDiskBytes(topic string) (int64, error) {
	dirs, err := filepath.Glob(filepath.Join(b.dataDir, topic+"-*"))
	if err != nil {
		return 0, fmt.Errorf("listing %s partitions: %w", topic, err)
	}
	var total int64
	for _, d := range dirs {
		suffix := strings.TrimPrefix(filepath.Base(d), topic+"-")
		if _, err := strconv.Atoi(suffix); err != nil {
			continue // another topic whose name starts with topic-
		}
		files, err := os.ReadDir(d)
		if err != nil {
			return 0, fmt.Errorf("reading %s: %w", d, err)
		}
		for _, f := range files {
			if !strings.HasSuffix(f.Name(), ".log") {
				continue // indexes are preallocated; count the records only
			}
			info, err := f.Info()
			if err != nil {
				return 0, fmt.Errorf("stat %s: %w", f.Name(), err)
			}
			total += info.Size()
		}
	}
	return total, nil
}

// formatProps renders p as a Java properties file, keys sorted.
func formatProps(header string, p map[string]string) []byte {
	return kafkaproc.FormatProps(header+" (written by kmirror's bench)", p)
}

func writeFile(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// killGroup sends sig to the process group led by pid.
func killGroup(pid int, sig syscall.Signal) error {
	if err := syscall.Kill(-pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signalling process group %d: %w", pid, err)
	}
	return nil
}
