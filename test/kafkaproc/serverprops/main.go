// Command serverprops writes the server.properties and log4j2.properties of
// a single-node KRaft broker, the same settings the test harness uses, for
// scripts/kafka/kafka.sh.
//
//	go run ./test/kafkaproc/serverprops -port 9092 -controller-port 9093 -dir DIR
//
// writes DIR/server.properties (log in DIR/data) and DIR/log4j2.properties.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/kmirror/kmirror/test/kafkaproc"
)

func main() {
	port := flag.Int("port", 0, "client port on 127.0.0.1")
	controllerPort := flag.Int("controller-port", 0, "controller port on 127.0.0.1")
	dir := flag.String("dir", "", "the cluster's directory")
	flag.Parse()
	if *port <= 0 || *controllerPort <= 0 || *dir == "" {
		fmt.Fprintln(os.Stderr, "serverprops: -port, -controller-port and -dir are required")
		os.Exit(2)
	}
	props := kafkaproc.With(kafkaproc.ServerProps(*port, *controllerPort, filepath.Join(*dir, "data")), kafkaproc.TuningTests())
	files := map[string][]byte{
		"server.properties": kafkaproc.FormatProps("Written by scripts/kafka/kafka.sh; rewritten on every start.", props),
		"log4j2.properties": []byte("# Written by scripts/kafka/kafka.sh: INFO to stdout, which goes to kafka.log.\n" + kafkaproc.Log4jConfig),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(*dir, name), data, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "serverprops:", err)
			os.Exit(1)
		}
	}
}
