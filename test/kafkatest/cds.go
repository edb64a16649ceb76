package kafkatest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/kmirror/kmirror/test/kafkaproc"
)

// The Kafka JVMs map a class-data archive (CDS, -XX:SharedArchiveFile) of
// the classes a broker loads, which spares each JVM the parsing and
// verifying of thousands of classes from the jars: the start of a broker
// takes about 40% less CPU. The archive is made once per machine, by a
// broker started and stopped for the purpose (-XX:ArchiveClassesAtExit),
// and kept in the user's cache directory under a name that changes with
// the java binary and the jars. A JVM that cannot use it (another JDK
// build, say) says so in its log and loads the classes from the jars.

// EnvClassArchive, set to "0", turns the class-data archive off.
const EnvClassArchive = "KMIRROR_KAFKATEST_CDS"

var (
	archiveOnce sync.Once
	archivePath string // the archive the JVMs use, "" for none; set once
)

// useClassArchive makes the class-data archive if there is none yet, the
// first time it is called in the process (later calls wait for it).
func useClassArchive(t testing.TB, libs string) {
	t.Helper()
	archiveOnce.Do(func() { archivePath = makeClassArchive(t, libs) })
}

// makeClassArchive returns the path of the archive for the java binary and
// the jars in libs, making it first if needed, or "" (and logs why) if
// there cannot be one.
func makeClassArchive(t testing.TB, libs string) string {
	t.Helper()
	if os.Getenv(EnvClassArchive) == "0" {
		return ""
	}
	path, err := classArchivePath(libs)
	if err != nil {
		t.Logf("kafkatest: no class-data archive for the JVMs: %v", err)
		return ""
	}
	if st, err := os.Stat(path); err == nil && st.Size() > 0 {
		return path
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Logf("kafkatest: no class-data archive for the JVMs: %v", err)
		return ""
	}
	begin := time.Now()
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	defer func() { _ = os.Remove(tmp) }() // gone once renamed
	if err := archiveClasses(t, libs, tmp); err != nil {
		t.Logf("kafkatest: no class-data archive for the JVMs: %v", err)
		return ""
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Logf("kafkatest: no class-data archive for the JVMs: %v", err)
		return ""
	}
	t.Logf("kafkatest: made the JVMs' class-data archive %s in %v", path, time.Since(begin).Round(time.Millisecond))
	return path
}

// archiveClasses starts a broker that writes the classes it loaded to an
// archive at path when it exits, waits until it is ready, and stops it.
func archiveClasses(t testing.TB, libs, path string) error {
	c, err := newCluster(t, Options{Name: "class-archive", JVMArgs: []string{"-XX:ArchiveClassesAtExit=" + path}}, libs, 1, 0)
	if err != nil {
		return err
	}
	if c.clusterID, err = kafkaproc.NewClusterID(); err != nil {
		return err
	}
	c.logQuoted = true // not the test's concern
	t.Cleanup(c.cleanup)
	if err := c.format(); err != nil {
		return err
	}
	if err := c.tryLaunch("start", time.Now()); err != nil {
		return err
	}
	c.Stop()
	if st, err := os.Stat(path); err != nil {
		return fmt.Errorf("the JVM wrote no archive (%w); see %s", err, c.logPath)
	} else if st.Size() == 0 {
		return fmt.Errorf("the JVM wrote an empty archive; see %s", c.logPath)
	}
	return nil
}

// classArchivePath names the archive after what it depends on: the java
// binary and the jars (paths, sizes and times).
func classArchivePath(libs string) (string, error) {
	java, err := javaPath()
	if err != nil {
		return "", err
	}
	if real, err := filepath.EvalSymlinks(java); err == nil {
		java = real
	}
	jars, err := filepath.Glob(filepath.Join(libs, "*.jar"))
	if err != nil {
		return "", err
	}
	sort.Strings(jars)
	h := sha256.New()
	for _, f := range append([]string{java}, jars...) {
		st, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		abs, _ := filepath.Abs(f)
		fmt.Fprintf(h, "%s %d %d\n", abs, st.Size(), st.ModTime().UnixNano())
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	name := fmt.Sprintf("kafka-%s-%s.jsa", KafkaVersion, hex.EncodeToString(h.Sum(nil))[:16])
	return filepath.Join(dir, "kmirror-kafkatest", name), nil
}
