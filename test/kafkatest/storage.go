package kafkatest

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"github.com/kmirror/kmirror/test/kafkaproc"
)

// Formatting a node's storage with Kafka's storage tool takes a JVM of its
// own, seconds of CPU on a small machine. What the tool writes depends on
// the node's configuration and the format arguments only, but for the
// cluster id and a random directory id in meta.properties (and the time
// in bootstrap.checkpoint). So the first node of each configuration in the
// process is formatted by the tool, and the files it wrote become the
// template of the next nodes of that configuration, which get them with
// their own cluster id and a fresh directory id.

var (
	templatesMu sync.Mutex
	templates   = map[string]map[string][]byte{} // by templateKey: data directory files
)

var loopbackAddr = regexp.MustCompile(`127\.0\.0\.1:[0-9]+`)

// templateKey is what the storage tool's output depends on: the Kafka
// release (its jars: each writes its own metadata version), the node's
// server.properties, with its own directory and ports left out, and the
// format arguments.
func (c *Cluster) templateKey() (string, error) {
	props, err := os.ReadFile(c.propsPath)
	if err != nil {
		return "", err
	}
	text := strings.ReplaceAll(string(props), c.dir, "<dir>")
	text = loopbackAddr.ReplaceAllString(text, "127.0.0.1:<port>")
	return c.libs + "\x00" + text + "\x00" + strings.Join(c.formatArgs, "\x00"), nil
}

// format writes the node's storage, from the template of its
// configuration if there is one, else with the storage tool (and keeps
// what the tool wrote as the template).
func (c *Cluster) format() error {
	key, err := c.templateKey()
	if err != nil {
		return err
	}
	// The tool writes into log.dirs alone unless told otherwise.
	if strings.Contains(key, "\nmetadata.log.dir=") || !strings.Contains(key, "\nlog.dirs=<dir>/data\n") {
		return c.runFormat()
	}
	templatesMu.Lock()
	tpl := templates[key]
	templatesMu.Unlock()
	if tpl != nil {
		return c.formatFrom(tpl)
	}
	if err := c.runFormat(); err != nil {
		return err
	}
	if tpl, ok := c.readTemplate(); ok {
		templatesMu.Lock()
		templates[key] = tpl
		templatesMu.Unlock()
	}
	return nil
}

// dataDir is the node's log directory (log.dirs), where the storage tool
// writes.
func (c *Cluster) dataDir() string { return filepath.Join(c.dir, "data") }

// readTemplate reads what the storage tool wrote into the data directory,
// meta.properties with its cluster id and directory id replaced by
// placeholders. It reports false if the files are not as expected.
func (c *Cluster) readTemplate() (map[string][]byte, bool) {
	files := map[string][]byte{}
	root := c.dataDir()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s is not a regular file", path)
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(path)
		files[rel] = data
		return err
	})
	if err != nil {
		return nil, false
	}
	meta, ok := files["meta.properties"]
	if !ok {
		return nil, false
	}
	var lines []string
	var cluster, directory bool
	for _, l := range strings.Split(string(meta), "\n") {
		switch {
		case l == "cluster.id="+c.clusterID:
			l, cluster = "cluster.id=<cluster>", true
		case strings.HasPrefix(l, "directory.id="):
			l, directory = "directory.id=<directory>", true
		}
		lines = append(lines, l)
	}
	if !cluster || !directory {
		return nil, false
	}
	files["meta.properties"] = []byte(strings.Join(lines, "\n"))
	return files, true
}

// formatFrom writes the files of tpl into the data directory, with the
// node's cluster id and a fresh directory id.
func (c *Cluster) formatFrom(tpl map[string][]byte) error {
	dirID, err := kafkaproc.NewClusterID() // the same random Uuid form
	if err != nil {
		return err
	}
	log, err := c.openLog("formatting storage, cluster id " + c.clusterID + ", from the storage tool's output for an earlier node of this configuration")
	if err != nil {
		return err
	}
	defer log.Close()
	for rel, data := range tpl {
		if rel == "meta.properties" {
			data = []byte(strings.NewReplacer("<cluster>", c.clusterID, "<directory>", dirID).Replace(string(data)))
		}
		path := filepath.Join(c.dataDir(), rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("formatting storage: %w", err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return fmt.Errorf("formatting storage: %w", err)
		}
	}
	return nil
}
