package status

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kmirror/kmirror/internal/config"
)

// States of a flow in a Report.
const (
	// StateNotRunning: no instance runs the flow (it stopped cleanly,
	// or its status record stopped being written).
	StateNotRunning = "not running"
	// StateUnknown: the target cluster, which holds the flow's state,
	// could not be read.
	StateUnknown = "unknown"
)

// Report is the document `kmirror status --json` prints.
type Report struct {
	TimeMs int64  `json:"time_ms"` // when it was read, Unix milliseconds
	Config string `json:"config"`  // the configuration file
	Flows  []Flow `json:"flows"`
	// Routes are the ways records travel between the clusters of the
	// configuration.
	Routes []Route `json:"routes"`
}

// Flow is the status of one flow. Pointers are null when unknown (a
// cluster could not be read).
type Flow struct {
	Name   string `json:"name"`
	Source string `json:"source"`
	Target string `json:"target"`
	// State is StateRunning, StateNotRunning or StateUnknown;
	// StateDetail says more in words.
	State       string `json:"state"`
	StateDetail string `json:"state_detail"`
	// Owner is the instance running the flow ("host:pid").
	Owner string `json:"owner,omitempty"`
	// Instances are the instances sharing the flow with scale_out and
	// the partitions each owns, as the elected one last stored them.
	Instances []Instance `json:"instances,omitempty"`
	// StatusUpdatedMs is when the flow last stored its status record.
	StatusUpdatedMs int64 `json:"status_updated_ms,omitempty"`
	// Topics and Partitions count the source topics the flow's filters
	// match now, the heartbeat topic included.
	Topics     *int `json:"topics"`
	Partitions *int `json:"partitions"`
	// LagRecords is the sum over those partitions (the heartbeat
	// topic's excepted) of the source end offset minus the stored
	// position, or minus the partition's start when nothing was copied
	// yet. LagSeconds is the age of the oldest source record not yet
	// copied, from its timestamp; 0 without lag.
	LagRecords *int64   `json:"lag_records"`
	LagSeconds *float64 `json:"lag_seconds"`
	// RecoveryPointBytes and RecoveryPointSeconds are what the target
	// would miss if the source died now, as the running flow reports it
	// (see Record); null when the flow does not run.
	RecoveryPointBytes   *int64   `json:"recovery_point_bytes"`
	RecoveryPointSeconds *float64 `json:"recovery_point_seconds"`
	// LatencyP50Ms and LatencyP99Ms are the running flow's replication
	// latency over the last minute (see Record).
	LatencyP50Ms *float64 `json:"latency_p50_ms"`
	LatencyP99Ms *float64 `json:"latency_p99_ms"`
	// Heartbeat and GroupSync are null when the target was not read;
	// LastError is null when there was none (or the target was not
	// read: State is then StateUnknown).
	Heartbeat *Heartbeat `json:"heartbeat"`
	LastError *LastError `json:"last_error"`
	GroupSync *GroupSync `json:"group_sync"`
	// Errors are what could not be read, one line each.
	Errors []string `json:"errors,omitempty"`
}

// Heartbeat is what the target shows of a flow's heartbeats.
type Heartbeat struct {
	Enabled bool `json:"enabled"`
	// Topic is the copy of the heartbeat topic on the target.
	Topic string `json:"topic,omitempty"`
	// LastMs is when the newest heartbeat of the flow found on the
	// target was written on the source; AgeSeconds is the time since.
	LastMs     int64    `json:"last_ms,omitempty"`
	AgeSeconds *float64 `json:"age_seconds"`
	// LatencyMs is the time the newest heartbeat took from the source to
	// the target, as the running flow measured it.
	LatencyMs *float64 `json:"latency_ms"`
}

// GroupSync is how a flow's consumer group offset sync stands.
type GroupSync struct {
	Enabled bool `json:"enabled"`
	// Groups counts the groups with checkpoints stored on the target.
	Groups int `json:"groups"`
	// LastCheckpointMs is when the newest checkpoint stored was taken.
	LastCheckpointMs int64 `json:"last_checkpoint_ms,omitempty"`
	// AgeSeconds is the time since the last sync pass that checkpointed
	// a group, as the running flow reports it, or else since the newest
	// checkpoint stored (checkpoints are stored when they change).
	AgeSeconds *float64 `json:"age_seconds"`
}

// Route is how the records first written to cluster Origin reach cluster
// Target: through the clusters Hops (Origin first, Target last), copied by
// Flows: one per hop on a route over provenance flows, every flow from
// Origin to Target on a direct one.
type Route struct {
	Origin string   `json:"origin"`
	Target string   `json:"target"`
	Hops   []string `json:"hops"`
	Flows  []string `json:"flows"`
}

// Routes returns the routes between the clusters of cfg: for every origin
// and target, the route records take over provenance flows in a mesh
// (topology.Graph.Route), or else the flows that copy origin to target
// directly. With a subset of the flows, only the routes they are on.
func Routes(cfg *config.Config, flows []*config.Flow) []Route {
	g := cfg.Topology()
	edges := g.Edges()
	keep := map[string]bool{}
	for _, f := range flows {
		keep[f.Name] = true
	}
	out := []Route{}
	clusters := g.Clusters()
	for _, origin := range clusters {
		for _, target := range clusters {
			if origin == target {
				continue
			}
			r := Route{Origin: origin, Target: target}
			if hops := g.Route(origin, target); hops != nil {
				r.Hops = hops
				for i := 0; i+1 < len(hops); i++ {
					for _, e := range edges {
						if e.Provenance && e.Source == hops[i] && e.Target == hops[i+1] {
							r.Flows = append(r.Flows, e.Flow)
							break
						}
					}
				}
			} else {
				for _, e := range edges {
					if e.Source == origin && e.Target == target {
						r.Hops = []string{origin, target}
						r.Flows = append(r.Flows, e.Flow)
					}
				}
			}
			if r.Hops == nil || !slices.ContainsFunc(r.Flows, func(f string) bool { return keep[f] }) {
				continue
			}
			out = append(out, r)
		}
	}
	return out
}

// WriteText prints rep for people: a block per flow, then the routes.
func WriteText(w io.Writer, rep Report) error {
	now := time.UnixMilli(rep.TimeMs)
	for i, f := range rep.Flows {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "Flow %s: %s → %s\n", f.Name, f.Source, f.Target)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		row := func(k, v string) { fmt.Fprintf(tw, "  %s\t%s\n", k, v) }
		st := f.State
		if f.StateDetail != "" {
			st += " (" + f.StateDetail + ")"
		}
		row("state", st)
		row("topics", topicsText(f))
		row("lag", lagText(f))
		row("recovery point", recoveryPointText(f))
		row("latency", latencyText(f))
		row("last heartbeat", heartbeatText(f.Heartbeat))
		if f.State == StateUnknown { // the target, which holds it, was not read
			row("last error", "?")
		} else {
			row("last error", errorText(f.LastError, now))
		}
		row("group sync", groupSyncText(f.GroupSync))
		if len(f.Instances) > 0 {
			row("instances", instancesText(f.Instances))
		}
		for _, e := range f.Errors {
			row("error", e)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(rep.Routes) > 0 {
		fmt.Fprintln(w, "\nRoutes")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, r := range rep.Routes {
			fmt.Fprintf(tw, "  %s\t%s\n", strings.Join(r.Hops, " → "), strings.Join(r.Flows, ", "))
		}
		return tw.Flush()
	}
	return nil
}

func topicsText(f Flow) string {
	if f.Topics == nil || f.Partitions == nil {
		return "?"
	}
	return fmt.Sprintf("%s, %s", plural(*f.Topics, "topic"), plural(*f.Partitions, "partition"))
}

func lagText(f Flow) string {
	if f.LagRecords == nil {
		return "?"
	}
	s := plural64(*f.LagRecords, "record")
	switch {
	case f.LagSeconds == nil:
		s += ", ? behind"
	case *f.LagRecords > 0:
		s += ", " + formatAge(secondsDuration(*f.LagSeconds)) + " behind"
	}
	return s
}

func recoveryPointText(f Flow) string {
	if f.RecoveryPointBytes == nil || f.RecoveryPointSeconds == nil {
		return "-"
	}
	return fmt.Sprintf("%s, %s not yet on the target", formatBytes(*f.RecoveryPointBytes), formatAge(secondsDuration(*f.RecoveryPointSeconds)))
}

// formatBytes shows n bytes in B, KiB, MiB or GiB.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, suffix := float64(n)/unit, "KiB"
	for _, s := range []string{"MiB", "GiB", "TiB"} {
		if v < unit {
			break
		}
		v, suffix = v/unit, s
	}
	return fmt.Sprintf("%.1f %s", v, suffix)
}

func latencyText(f Flow) string {
	switch {
	case f.LatencyP50Ms != nil && f.LatencyP99Ms != nil:
		return fmt.Sprintf("p50 ≤ %s, p99 ≤ %s (last minute)", formatMs(*f.LatencyP50Ms), formatMs(*f.LatencyP99Ms))
	case f.State == StateRunning:
		return "- (nothing copied in the last minute)"
	default:
		return "-"
	}
}

func heartbeatText(h *Heartbeat) string {
	switch {
	case h == nil:
		return "?"
	case !h.Enabled:
		return "off"
	case h.AgeSeconds == nil:
		return "none on the target"
	}
	s := formatAge(secondsDuration(*h.AgeSeconds)) + " ago"
	if h.LatencyMs != nil {
		s += " (latency " + formatMs(*h.LatencyMs) + ")"
	}
	return s
}

func errorText(e *LastError, now time.Time) string {
	if e == nil {
		return "none"
	}
	msg := e.Message
	if msg == "" {
		msg = "details in the log"
	}
	return fmt.Sprintf("%s ago: %s: %s", formatAge(now.Sub(time.UnixMilli(e.AtMs))), e.Kind, msg)
}

func groupSyncText(g *GroupSync) string {
	switch {
	case g == nil:
		return "?"
	case !g.Enabled:
		return "off"
	case g.AgeSeconds == nil:
		return "no group checkpointed"
	}
	return fmt.Sprintf("%s ago (%s)", formatAge(secondsDuration(*g.AgeSeconds)), plural(g.Groups, "group"))
}

func plural(n int, word string) string { return plural64(int64(n), word) }

func plural64(n int64, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.FormatInt(n, 10) + " " + word + "s"
}

// formatAge prints a duration for people: tenths of a second below 10 s,
// seconds below an hour, minutes above.
func formatAge(d time.Duration) string {
	d = max(d, 0)
	switch {
	case d < 10*time.Second:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return d.Round(time.Minute).String()
	}
}

// formatMs prints milliseconds as a duration.
func formatMs(ms float64) string {
	d := time.Duration(ms * float64(time.Millisecond))
	if d >= time.Millisecond {
		d = d.Round(time.Millisecond)
	}
	return d.String()
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func seconds(d time.Duration) *float64 {
	s := max(d, 0).Seconds()
	return &s
}

func secondsDuration(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func instancesText(is []Instance) string {
	parts := make([]string, len(is))
	for i, in := range is {
		parts[i] = fmt.Sprintf("%s (%s", in.Instance, plural(in.Partitions, "partition"))
		if in.Elected {
			parts[i] += ", elected"
		}
		parts[i] += ")"
	}
	return strconv.Itoa(len(is)) + ": " + strings.Join(parts, ", ")
}
