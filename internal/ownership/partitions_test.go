package ownership

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmirror/kmirror/internal/kfaketest"
)

func parts(topic string, ns ...int32) []Partition {
	out := make([]Partition, len(ns))
	for i, n := range ns {
		out[i] = Partition{Topic: topic, Partition: n}
	}
	return out
}

func span(n int32) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(i)
	}
	return out
}

func TestAssignPartitions(t *testing.T) {
	t0 := time.Unix(1000, 0)
	member := func(id string, age int, lease bool, owned []Partition) partMeta {
		return partMeta{Identity: Identity{Instance: id, MemberID: id, Since: t0.Add(time.Duration(age) * time.Second)},
			Lease: lease, Owned: owned}
	}
	universe := parts("a", span(12)...)
	tests := []struct {
		name               string
		metas              []partMeta
		wantOwned, wantRev map[string]int
		wantElected        string
	}{
		{
			name:        "first start: all free, spread evenly",
			metas:       []partMeta{member("m1", 0, false, nil), member("m2", 1, false, nil), member("m3", 2, false, nil)},
			wantOwned:   map[string]int{"m1": 4, "m2": 4, "m3": 4},
			wantRev:     map[string]int{},
			wantElected: "m1",
		},
		{
			name:        "two join one holding all: it keeps 4, revokes 8, nothing moves in this generation",
			metas:       []partMeta{member("m1", 0, true, universe), member("m2", 1, false, nil), member("m3", 2, false, nil)},
			wantOwned:   map[string]int{"m1": 4, "m2": 0, "m3": 0},
			wantRev:     map[string]int{"m1": 8},
			wantElected: "m1",
		},
		{
			name:        "next generation: the revoked partitions are free",
			metas:       []partMeta{member("m1", 0, true, universe[:4]), member("m2", 1, true, nil), member("m3", 2, true, nil)},
			wantOwned:   map[string]int{"m1": 4, "m2": 4, "m3": 4},
			wantRev:     map[string]int{},
			wantElected: "m1",
		},
		{
			name:        "a member without a lease claims nothing",
			metas:       []partMeta{member("m1", 0, true, universe[:6]), member("m2", 1, false, universe[6:])},
			wantOwned:   map[string]int{"m1": 6, "m2": 6},
			wantRev:     map[string]int{},
			wantElected: "m1",
		},
		{
			name:        "a partition claimed twice is revoked from both",
			metas:       []partMeta{member("m1", 0, true, universe[:7]), member("m2", 1, true, universe[6:])},
			wantOwned:   map[string]int{"m1": 6, "m2": 5},
			wantRev:     map[string]int{"m1": 1, "m2": 1},
			wantElected: "m1",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The universe comes from the elected member's topic sync.
			for i := range tt.metas {
				tt.metas[i].Universe, tt.metas[i].Authoritative = universe, true
				if i == 0 && tt.metas[i].Lease {
					tt.metas[i].Elected = true
				}
			}
			a := assignPartitions(tt.metas)
			if a.Elected.MemberID != tt.wantElected {
				t.Errorf("elected %s, want %s", a.Elected.MemberID, tt.wantElected)
			}
			seen := map[Partition]string{}
			for _, s := range a.Members {
				if len(s.Partitions) != tt.wantOwned[s.MemberID] || len(s.Revoking) != tt.wantRev[s.MemberID] {
					t.Errorf("%s: %d owned, %d revoking; want %d, %d", s.MemberID, len(s.Partitions), len(s.Revoking),
						tt.wantOwned[s.MemberID], tt.wantRev[s.MemberID])
				}
				for _, p := range append(append([]Partition(nil), s.Partitions...), s.Revoking...) {
					if other, ok := seen[p]; ok && other != s.MemberID {
						if !contains(s.Revoking, p) {
							t.Errorf("%v given to %s while %s has it", p, s.MemberID, other)
						}
					}
					seen[p] = s.MemberID
				}
			}
			// Sticky: a member keeps only partitions it claimed or free ones.
			for _, s := range a.Members {
				for _, p := range s.Partitions {
					for _, m := range tt.metas {
						if m.MemberID != s.MemberID && m.Lease && contains(m.Owned, p) {
							t.Errorf("%v given to %s while %s still owns it", p, s.MemberID, m.MemberID)
						}
					}
				}
			}
		})
	}
}

func contains(ps []Partition, p Partition) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// TestAssignPartitionsOneOwnerThroughChanges runs members joining and
// leaving through successive generations, each member releasing what it
// is revoked before the next: in every generation each partition is listed
// under exactly one member (owned or being handed over), nothing owned
// moves without being revoked first, and two generations after a change
// the counts are even with nothing left to revoke.
func TestAssignPartitionsOneOwnerThroughChanges(t *testing.T) {
	t0 := time.Unix(1000, 0)
	universe := append(parts("a", span(12)...), parts("b", span(5)...)...)
	type member struct {
		age   int
		owned []Partition
	}
	members := map[string]*member{}
	steps := []struct {
		join, leave []string
	}{
		{join: []string{"m1"}},
		{join: []string{"m2", "m3"}},
		{join: []string{"m4"}},
		{leave: []string{"m1"}},
		{leave: []string{"m3", "m4"}, join: []string{"m5"}},
		{join: []string{"m6", "m7", "m8"}},
		{leave: []string{"m2", "m5", "m6", "m7"}},
	}
	age := 0
	for si, step := range steps {
		for _, id := range step.leave {
			delete(members, id)
		}
		for _, id := range step.join {
			age++
			members[id] = &member{age: age}
		}
		var prev Assignment
		for gen := 0; gen < 3; gen++ {
			var metas []partMeta
			for id, m := range members {
				metas = append(metas, partMeta{
					Identity: Identity{Instance: id, MemberID: id, Since: t0.Add(time.Duration(m.age) * time.Second)},
					Lease:    true, Owned: m.owned, Universe: universe, Authoritative: true,
				})
			}
			a := assignPartitions(metas)
			under := map[Partition][]string{}
			for _, s := range a.Members {
				for _, p := range s.Partitions {
					under[p] = append(under[p], s.MemberID)
					if !contains(members[s.MemberID].owned, p) {
						for _, o := range members {
							if contains(o.owned, p) {
								t.Fatalf("step %d gen %d: %v given to %s before it was released", si, gen, p, s.MemberID)
							}
						}
					}
				}
				for _, p := range s.Revoking {
					under[p] = append(under[p], s.MemberID)
				}
			}
			for _, p := range universe {
				if len(under[p]) != 1 {
					t.Fatalf("step %d gen %d: %v listed under %v, want exactly one member", si, gen, p, under[p])
				}
			}
			// Every member releases its revoked partitions and keeps the rest.
			for _, s := range a.Members {
				members[s.MemberID].owned = slices.Clone(s.Partitions)
			}
			prev = a
		}
		lo, hi := len(universe), 0
		for _, s := range prev.Members {
			if len(s.Revoking) != 0 {
				t.Errorf("step %d: %s still revoking %v after three generations", si, s.MemberID, s.Revoking)
			}
			lo, hi = min(lo, len(s.Partitions)), max(hi, len(s.Partitions))
		}
		if hi-lo > 1 {
			t.Errorf("step %d: partition counts from %d to %d, want even", si, lo, hi)
		}
	}
}

// TestHandOverReportedBeforeNewOwner runs two scale-out members on a fake
// cluster and records every state they report (what the API shows), in
// the order they report it. When the second joins, half the partitions
// move: the first must report them released before the second reports
// owning them, so that no view of the two ever shows a partition writable
// by both.
func TestHandOverReportedBeforeNewOwner(t *testing.T) {
	c := kfaketest.Cluster(t)
	logger := slog.New(slog.DiscardHandler)
	universe := parts("t", span(6)...)
	var mu sync.Mutex
	writable := map[string]map[Partition]bool{} // by member, from its newest report
	var overlaps []string
	report := func(name string) func(State) {
		return func(s State) {
			mu.Lock()
			defer mu.Unlock()
			mine := map[Partition]bool{}
			for _, sh := range s.Members {
				if sh.Instance != name {
					continue
				}
				for _, p := range sh.Partitions {
					mine[p] = true
				}
				if !sh.Released {
					for _, p := range sh.Revoking {
						mine[p] = true
					}
				}
			}
			writable[name] = mine
			for other, theirs := range writable {
				for p := range mine {
					if other != name && theirs[p] {
						overlaps = append(overlaps, fmt.Sprintf("%v reported writable by %s and %s (generation %d)", p, name, other, s.Generation))
					}
				}
			}
		}
	}
	join := func(name string, since time.Time) *Member {
		self := Identity{Instance: name, Host: "h", PID: 1, Since: since}
		return Join(Options{Client: kfaketest.Client(t, c), Group: "__kmirror.f.owners", Timeout: 6 * time.Second,
			Self: self, Logger: logger, Partitions: true, OnChange: report(name)})
	}
	// release plays the flow's part: it releases what is revoked.
	release := func(ctx context.Context, m *Member) {
		for ctx.Err() == nil {
			ch := m.Changed()
			if len(m.Share().Revoking) > 0 {
				m.Released()
			}
			select {
			case <-ctx.Done():
			case <-ch:
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	now := time.Now()
	a := join("a", now)
	defer a.Leave()
	go release(ctx, a)
	if _, err := a.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	a.SetUniverse(universe)
	waitShare := func(m *Member, want int) {
		t.Helper()
		for len(m.Share().Owned) != want || len(m.Share().Revoking) != 0 {
			if ctx.Err() != nil {
				t.Fatalf("share %+v, want %d partitions owned", m.Share(), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitShare(a, 6)
	b := join("b", now.Add(time.Second))
	defer b.Leave()
	go release(ctx, b)
	waitShare(b, 3)
	waitShare(a, 3)
	mu.Lock()
	defer mu.Unlock()
	if len(overlaps) > 0 {
		t.Errorf("hand-over reported out of order:\n%s", strings.Join(overlaps, "\n"))
	}
}
