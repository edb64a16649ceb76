package kafkatest

import (
	"fmt"
	"os"

	"github.com/kmirror/kmirror/test/kafkaproc"
)

// serverProps returns the broker+controller configuration of a single-node
// KRaft cluster listening on 127.0.0.1:port (clients) and
// 127.0.0.1:controllerPort (the quorum), with its log in dataDir: the
// shared single-node settings of kafkaproc with its test tuning (few
// threads, background tasks every second so compaction and retention tests
// finish fast). extra overrides or adds to them.
func serverProps(port, controllerPort int, dataDir string, extra map[string]string) map[string]string {
	return kafkaproc.With(kafkaproc.ServerProps(port, controllerPort, dataDir), kafkaproc.TuningTests(), extra)
}

// formatProps renders p as a Java properties file, keys sorted.
func formatProps(p map[string]string) []byte {
	return kafkaproc.FormatProps("Written by kmirror's test/kafkatest.", p)
}

// writeFile writes data to path, readable only by the owner.
func writeFile(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
