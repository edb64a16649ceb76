package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/membudget"
)

// memoryPlan resolves the memory limit of cfg (memory_limit, else
// GOMEMLIMIT, else the cgroup's limit or a share of the RAM found on this
// machine) and splits it among cfg's flows. goLimit is Go's memory limit
// when the GOMEMLIMIT environment variable set it, and false if not. A
// limit that cannot be found is an error: the flows then keep their
// configured sizes.
func memoryPlan(cfg *config.Config) (membudget.Plan, error) {
	var goLimit int64
	if goMemLimitSet() {
		goLimit = debug.SetMemoryLimit(-1) // reads it
	}
	l, _, err := membudget.Resolve(cfg.MemoryLimit, goLimit, detectLimit)
	if err != nil {
		return membudget.Plan{}, err
	}
	return membudget.Split(cfg, l), nil
}

// goMemLimitSet reports whether GOMEMLIMIT sets Go's memory limit: set,
// and not "off".
func goMemLimitSet() bool {
	v, ok := os.LookupEnv("GOMEMLIMIT")
	return ok && v != "" && v != "off"
}

func detectLimit() (membudget.Limit, error) { return membudget.Detect(os.DirFS("/")) }

// applyMemory is memoryPlan for `kmirror run`: it also sets Go's memory
// limit to the limit found, unless GOMEMLIMIT is set (it wins for the Go
// runtime, and memory_limit then only sizes the buffers), and logs the
// limit, each flow's part and the warnings of the split. Without a limit
// (none found) it logs why and returns false: the flows keep their
// configured sizes.
func applyMemory(cfg *config.Config, logger *slog.Logger) (membudget.Plan, bool) {
	p, err := memoryPlan(cfg)
	if err != nil {
		logger.Warn("no memory limit found; the flows use their configured sizes and Go's memory limit is left as it is", "err", err)
		return p, false
	}
	goLimit := "set to it"
	if goMemLimitSet() {
		goLimit = fmt.Sprintf("GOMEMLIMIT (%s) wins", config.FormatSize(debug.SetMemoryLimit(-1)))
	} else {
		debug.SetMemoryLimit(p.Limit.Bytes)
	}
	logger.Info("memory budget", "limit", p.Limit.String(), "go_memory_limit", goLimit,
		"flow_buffers", config.FormatSize(p.Buffers), "flows", len(p.Flows))
	for _, f := range p.Flows {
		logger.Info("flow memory", "flow", f.Name, "sizes", f.String())
	}
	for _, w := range p.Warnings {
		logger.Warn("memory budget: " + w.Error())
	}
	return p, true
}

// memoryWarnings are the warnings of `kmirror check` about memory: the
// settings that take more than their flow's share of the limit, as
// `kmirror run` would find it on this machine.
func memoryWarnings(cfg *config.Config) []string {
	p, err := memoryPlan(cfg)
	if err != nil {
		return []string{"memory: " + err.Error()}
	}
	var out []string
	for _, w := range p.Warnings {
		msg := w.Error()
		if p.Limit.Source != membudget.SourceConfig {
			msg += " (the limit found on this machine; set memory_limit for the machine kmirror runs on)"
		}
		out = append(out, msg)
	}
	return out
}
