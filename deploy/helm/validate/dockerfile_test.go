package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

const dockerfile = "../../Dockerfile"

// checkDockerfile parses a Dockerfile with BuildKit's parser, the one
// `docker build` uses, and runs BuildKit's lint rules (`docker build
// --check`). It returns every problem, and the stages it found.
func checkDockerfile(data []byte) (problems []string, stages []instructions.Stage) {
	res, err := parser.Parse(bytes.NewReader(data))
	if err != nil {
		return []string{"parse: " + err.Error()}, nil
	}
	for _, w := range res.Warnings {
		problems = append(problems, fmt.Sprintf("parser warning: %s", w.Short))
	}
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		problems = append(problems, fmt.Sprintf("line %d: %s: %s", line, rule, msg))
	}})
	stages, _, err = instructions.Parse(res.AST, lint)
	if err != nil {
		return append(problems, err.Error()), nil
	}
	same := func(w string) (string, error) { return w, nil }
	for _, s := range stages {
		for _, c := range s.Commands {
			if run, ok := c.(*instructions.RunCommand); ok {
				// Parses the --mount options.
				if err := run.Expand(same); err != nil {
					problems = append(problems, fmt.Sprintf("line %d: %v", run.Location()[0].Start.Line, err))
				}
			}
		}
	}
	return problems, stages
}

// TestDockerfileParses: deploy/Dockerfile parses and passes BuildKit's lint
// rules, and each kind of mistake would be caught.
func TestDockerfileParses(t *testing.T) {
	data, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	problems, stages := checkDockerfile(data)
	if len(problems) > 0 {
		t.Fatalf("%s:\n%s", dockerfile, strings.Join(problems, "\n"))
	}
	var names []string
	for _, s := range stages {
		names = append(names, fmt.Sprintf("%s (%s, %d instructions)", s.BaseName, s.Name, len(s.Commands)))
	}
	t.Logf("deploy/Dockerfile: BuildKit parser and lint rules clean; stages: %s", strings.Join(names, ", "))

	tests := []struct{ name, old, new, want string }{
		{"misspelled instruction", "EXPOSE 9780", "EXPOS 9780", "unknown instruction: EXPOS"},
		{"misspelled flag", "COPY --from=build", "COPY --frm=build", "unknown flag: --frm"},
		{"bad mount type", "--mount=type=cache,target=/go/pkg/mod go mod", "--mount=type=cahce,target=/go/pkg/mod go mod", "unsupported mount type"},
		{"keyword casing", "AS build", "as build", "FromAsCasing"},
		{"unknown stage option", "FROM gcr.io", "FROM --platfrom=linux/amd64 gcr.io", "unknown flag: --platfrom"}, //nolint:misspell // the mistake under test
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !bytes.Contains(data, []byte(tc.old)) {
				t.Fatalf("the Dockerfile does not contain %q", tc.old)
			}
			problems, _ := checkDockerfile(bytes.Replace(data, []byte(tc.old), []byte(tc.new), 1))
			if !strings.Contains(strings.Join(problems, "\n"), tc.want) {
				t.Fatalf("problems %q, want one containing %q", problems, tc.want)
			}
		})
	}
}
