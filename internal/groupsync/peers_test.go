package groupsync

import (
	"fmt"
	"strings"
	"testing"

	"github.com/kmirror/kmirror/internal/config"
	"github.com/kmirror/kmirror/internal/offsets"
	"github.com/kmirror/kmirror/internal/progress"
)

func parse(t *testing.T, flows ...[2]string) *config.Config {
	t.Helper()
	var b strings.Builder
	b.WriteString("clusters:\n")
	seen := map[string]bool{}
	for _, f := range flows {
		for _, c := range f {
			if !seen[c] {
				seen[c] = true
				fmt.Fprintf(&b, "  %s: {bootstrap_servers: [\"%s:9092\"]}\n", c, c)
			}
		}
	}
	b.WriteString("flows:\n")
	for _, f := range flows {
		fmt.Fprintf(&b, "  - {source: %s, target: %s, topics: [t], topic_naming: identity}\n", f[0], f[1])
	}
	cfg, err := config.Parse("kmirror.yaml", []byte(b.String()), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func flowOf(t *testing.T, cfg *config.Config, name string) *config.Flow {
	t.Helper()
	fc, err := cfg.Flow(name)
	if err != nil {
		t.Fatal(err)
	}
	return fc
}

var t0 = progress.Partition{Topic: "t"}

func TestPeersLimitActiveActive(t *testing.T) {
	cfg := parse(t, [2]string{"east", "west"}, [2]string{"west", "east"})
	if p := NewPeers(parse(t, [2]string{"east", "west"}), flowOf(t, parse(t, [2]string{"east", "west"}), "east-to-west"), nil, nil); p != nil {
		t.Fatalf("active-passive has peers: %+v", p)
	}
	p := NewPeers(cfg, flowOf(t, cfg, "east-to-west"), nil, nil)
	if p == nil {
		t.Fatal("no peers in active-active")
	}
	// west: w0@0, e0'@1, w1@2, e1'@3; east: e0@0, w0'@1, e1@2, w1'@3.
	own := []offsets.Run{{Source: 0, Target: 1, Len: 1, Tail: 1}, {Source: 2, Target: 3, Len: 1, Tail: 1}}
	p.loaded = map[string]progress.Loaded{"west-to-east": {
		Positions: map[progress.Partition]progress.Position{t0: {SourceNext: 4, TargetNext: 4}},
		Runs:      map[progress.Partition][]offsets.Run{t0: {{Source: 0, Target: 1, Len: 1, Tail: 1}, {Source: 2, Target: 3, Len: 1, Tail: 1}}},
	}}
	for src, want := range map[int64]int64{0: 0, 1: 0, 2: 2, 3: 2, 4: 4} {
		if got, ok := p.Limit("t", 0, src, own); !ok || got.At != want || !got.Tight {
			t.Errorf("Limit(%d) = %+v, %t; want %d, tight", src, got, ok, want)
		}
	}
	// The reverse flow has read only w0 so far: w1 (west 2) is unread
	// whatever the group read; our copies before it are passed.
	p.loaded["west-to-east"] = progress.Loaded{
		Positions: map[progress.Partition]progress.Position{t0: {SourceNext: 2, TargetNext: 2}},
		Runs:      map[progress.Partition][]offsets.Run{t0: {{Source: 0, Target: 1, Len: 1, Tail: 1}}},
	}
	if got, _ := p.Limit("t", 0, 4, own); got.At != 2 || !got.Tight {
		t.Errorf("reverse flow behind: Limit = %+v, want 2, tight", got)
	}
	// Its progress unreadable: the first record not ours.
	delete(p.loaded, "west-to-east")
	if got, ok := p.Limit("t", 0, 4, own); !ok || got.At != 0 || got.Tight {
		t.Errorf("progress unknown: Limit = %+v, %t; want 0, not tight", got, ok)
	}
	// A topic the reverse flow does not copy back is not bounded.
	if _, ok := p.Limit("other", 0, 4, own); ok {
		t.Error("a topic the reverse flow does not copy is bounded")
	}
}

func TestPeersLimitMesh(t *testing.T) {
	cfg := parse(t, [2]string{"a", "b"}, [2]string{"b", "a"}, [2]string{"a", "c"}, [2]string{"c", "a"}, [2]string{"b", "c"}, [2]string{"c", "b"})
	p := NewPeers(cfg, flowOf(t, cfg, "a-to-b"), nil, nil)
	// b: a0'@0, c0'@1, a1'@2. a: a0@0, c0'@1 (by c-to-a), a1@2.
	own := []offsets.Run{{Source: 0, Target: 0, Len: 1, Tail: 1}, {Source: 2, Target: 2, Len: 1}}
	empty := progress.Loaded{Positions: map[progress.Partition]progress.Position{t0: {SourceNext: 3, TargetNext: 0}}}
	p.loaded = map[string]progress.Loaded{
		"b-to-a": empty, // b's own records: none
		"c-to-a": {Positions: map[progress.Partition]progress.Position{t0: {SourceNext: 1, TargetNext: 2}},
			Runs: map[progress.Partition][]offsets.Run{t0: {{Source: 0, Target: 1, Len: 1}}}},
		"c-to-b": {Positions: map[progress.Partition]progress.Position{t0: {SourceNext: 1, TargetNext: 2}},
			Runs: map[progress.Partition][]offsets.Run{t0: {{Source: 0, Target: 1, Len: 1}}}},
	}
	for src, want := range map[int64]int64{0: 1, 1: 1, 2: 3, 3: 3} {
		got, ok := p.Limit("t", 0, src, own)
		if !ok {
			t.Fatal("mesh not bounded")
		}
		// The translation itself (own map) answers the rest: only c0'
		// bounds it.
		if got.Tight {
			t.Errorf("src %d: a limit from two writers is tight", src)
		}
		res := offsets.NewMap(own).Translate(src, 3).Below(got, own)
		if wantRes := offsets.NewMap(own).Translate(src, 3).Below(offsets.Limit{At: want}, own); res != wantRes {
			t.Errorf("src %d: limit %d → %+v, want limit %d → %+v", src, got.At, res, want, wantRes)
		}
	}
	if got, _ := p.Limit("t", 0, 1, own); got.At != 1 {
		t.Errorf("group before c0's copy on a: Limit = %+v, want 1 (c0' on b)", got)
	}
	delete(p.loaded, "c-to-b")
	if got, _ := p.Limit("t", 0, 3, own); got.At != 1 {
		t.Errorf("c-to-b unknown: Limit = %+v, want 1 (the first record not ours)", got)
	}
}

func TestPeersEcho(t *testing.T) {
	cfg := parse(t, [2]string{"a", "b"}, [2]string{"b", "a"})
	p := NewPeers(cfg, flowOf(t, cfg, "b-to-a"), nil, nil)
	p.written = map[key][]int64{{"g", "t", 0}: {7}}
	if !p.Echo("g", "t", 0, 7) || p.Echo("g", "t", 0, 8) || p.Echo("h", "t", 0, 7) || p.Echo("g", "t", 1, 7) {
		t.Error("Echo must be true for the newest checkpoint's offset only")
	}
	var none *Peers
	if none.Echo("g", "t", 0, 7) {
		t.Error("nil peers echo")
	}
}
