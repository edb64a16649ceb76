package kafkatest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// KafkaVersion is the Apache Kafka release that scripts/kafka/fetch.sh pins
// and downloads into <repo root>/.cache/kafka/<KafkaVersion>/libs.
const KafkaVersion = "4.3.1"

const (
	// EnvLibs names a directory of Kafka jars to use instead of the
	// repository cache (scripts/test.sh sets it to fetch.sh's output).
	EnvLibs = "KMIRROR_KAFKA_LIBS"

	// EnvRequire, set to "1", turns "no Kafka jars" from a skipped test
	// into a failed one, so that CI cannot pass without running Kafka.
	EnvRequire = "KMIRROR_REQUIRE_KAFKA"
)

// LibsDir returns the directory holding the Kafka jars: $KMIRROR_KAFKA_LIBS
// if set, else <repo root>/.cache/kafka/<KafkaVersion>/libs, found by walking
// up from the working directory. It returns an error telling how to get the
// jars if neither is usable.
func LibsDir() (string, error) {
	return findLibs(EnvLibs, KafkaVersion, "scripts/kafka/fetch.sh")
}

// findLibs returns $env if set, else <repo root>/.cache/kafka/<version>/libs
// found by walking up from the working directory; fetch is the command
// that downloads the jars, for the error.
func findLibs(env, version, fetch string) (string, error) {
	if dir := os.Getenv(env); dir != "" {
		if err := checkLibs(dir); err != nil {
			return "", fmt.Errorf("%s=%s: %w", env, dir, err)
		}
		return dir, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the repository root: %w", err)
	}
	rel := filepath.Join(".cache", "kafka", version, "libs")
	for dir := wd; ; {
		libs := filepath.Join(dir, rel)
		if checkLibs(libs) == nil {
			return libs, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", fmt.Errorf("no Apache Kafka %s jars in %s of %s or its parents: "+
		"run %s (or set %s)", version, rel, wd, fetch, env)
}

// checkLibs reports whether dir looks like a Kafka libs directory: it must
// hold the broker's jar (kafka_2.13-<version>.jar, any version).
func checkLibs(dir string) error {
	matches, err := filepath.Glob(filepath.Join(dir, "kafka_2.13-*.jar"))
	if err != nil {
		return fmt.Errorf("looking for the Kafka jar: %w", err)
	}
	if len(matches) == 0 {
		return errors.New("no kafka_2.13-*.jar in it")
	}
	return nil
}

// RequireLibs returns LibsDir, or ends the test when the jars are missing:
// with t.Fatal if $KMIRROR_REQUIRE_KAFKA is "1" (as in CI), else with t.Skip.
// Start calls it; tests that need the jars without a cluster may too.
//
// `go test -short` is the fast tier: it skips every real-Kafka test, even
// with $KMIRROR_REQUIRE_KAFKA set, because the person asked for it.
func RequireLibs(t testing.TB) string {
	t.Helper()
	return requireLibs(t, LibsDir)
}

// requireLibs returns find's directory, or ends the test as RequireLibs
// says.
func requireLibs(t testing.TB, find func() (string, error)) string {
	t.Helper()
	if testing.Short() {
		t.Skip("kafkatest: real-Kafka test; -short runs the fast tier only")
	}
	dir, err := find()
	if err == nil {
		return dir
	}
	if os.Getenv(EnvRequire) == "1" {
		t.Fatalf("kafkatest: %v (and %s=1 forbids skipping)", err, EnvRequire)
	}
	t.Skipf("kafkatest: skipping, no real Kafka: %v", err)
	return ""
}
