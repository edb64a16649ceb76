// Command validate checks Kubernetes manifests, such as the output of
// `helm template`, offline: it needs no cluster and no schema download.
//
//	helm template kmirror deploy/helm/kmirror -f values.yaml > out.yaml
//	go run . out.yaml
//
// Each document is decoded strictly into the Go type of its apiVersion and
// kind, from k8s.io/api and the Prometheus Operator's API module, the way
// the API server decodes with strict field validation: an unknown or
// misspelled field, a field of the wrong type, a wrong letter case or a
// duplicated field is an error. The objects are then checked for what the
// API server would refuse (names, labels, ports, probes, env, volumes,
// selectors, resources) and for what ties them together (the Service,
// PodDisruptionBudget and ServiceMonitor select the Deployment's pods and
// name its ports; every volume and mount matches; the pods meet the
// "restricted" Pod Security Standard).
//
// It prints one line per object and exits 1 if anything is wrong.
//
// The package's tests render the chart in its other cases (chart_test.go),
// show that each kind of mistake is caught (validate_test.go), and parse
// deploy/Dockerfile with BuildKit's parser and lint rules (dockerfile_test.go).
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "validate:", err)
		os.Exit(1)
	}
}

func run(files []string, stdin io.Reader, stdout io.Writer) error {
	if len(files) == 0 {
		files = []string{"-"}
	}
	var objs []*Object
	for _, f := range files {
		var data []byte
		var err error
		if f == "-" {
			data, err = io.ReadAll(stdin)
		} else {
			data, err = os.ReadFile(f)
		}
		if err != nil {
			return err
		}
		o, err := Decode(f, data)
		if err != nil {
			return err
		}
		objs = append(objs, o...)
	}
	if len(objs) == 0 {
		return fmt.Errorf("no Kubernetes objects in %v", files)
	}
	report, err := Check(objs)
	for _, l := range report {
		fmt.Fprintln(stdout, l)
	}
	return err
}
