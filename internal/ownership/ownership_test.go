package ownership

import (
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/kfaketest"
)

func meta(t *testing.T, id string, since int, holding bool, gen int32) kmsg.JoinGroupResponseMember {
	t.Helper()
	b, err := json.Marshal(memberMeta{
		Identity: Identity{Instance: id, Since: time.Unix(int64(since), 0)},
		Holding:  holding, LeaseGeneration: gen,
	})
	if err != nil {
		t.Fatal(err)
	}
	m := kmsg.NewJoinGroupResponseMember()
	m.MemberID, m.ProtocolMetadata = id, b
	return m
}

func TestAssign(t *testing.T) {
	for _, tc := range []struct {
		name    string
		members func(t *testing.T) []kmsg.JoinGroupResponseMember
		want    string
	}{
		{"the oldest when nobody holds", func(t *testing.T) []kmsg.JoinGroupResponseMember {
			return []kmsg.JoinGroupResponseMember{meta(t, "b", 20, false, 0), meta(t, "a", 10, false, 0), meta(t, "c", 30, false, 0)}
		}, "a"},
		{"the holder even if younger", func(t *testing.T) []kmsg.JoinGroupResponseMember {
			return []kmsg.JoinGroupResponseMember{meta(t, "a", 10, false, 0), meta(t, "b", 20, true, 3)}
		}, "b"},
		{"the newest lease if two claim one", func(t *testing.T) []kmsg.JoinGroupResponseMember {
			return []kmsg.JoinGroupResponseMember{meta(t, "a", 10, true, 2), meta(t, "b", 20, true, 5)}
		}, "b"},
		{"member id breaks ties", func(t *testing.T) []kmsg.JoinGroupResponseMember {
			return []kmsg.JoinGroupResponseMember{meta(t, "y", 10, false, 0), meta(t, "x", 10, false, 0)}
		}, "x"},
		{"unreadable metadata is never chosen", func(t *testing.T) []kmsg.JoinGroupResponseMember {
			bad := kmsg.NewJoinGroupResponseMember()
			bad.MemberID, bad.ProtocolMetadata = "0", []byte("junk")
			return []kmsg.JoinGroupResponseMember{bad, meta(t, "z", 99, false, 0)}
		}, "z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := assign(tc.members(t))
			if err != nil {
				t.Fatal(err)
			}
			var a assignment
			if err := json.Unmarshal(b, &a); err != nil {
				t.Fatal(err)
			}
			if a.Holder.MemberID != tc.want {
				t.Fatalf("holder %q, want %q", a.Holder.MemberID, tc.want)
			}
		})
	}
}

// TestOneHolderAndHandOver runs two members on a fake cluster: one holds
// the flow, the other knows who; when the holder leaves, the other takes
// over.
func TestOneHolderAndHandOver(t *testing.T) {
	c := kfaketest.Cluster(t)
	logger := slog.New(slog.DiscardHandler)
	join := func(name string, since time.Time) *Member {
		cl := kfaketest.Client(t, c)
		self := Identity{Instance: name, Host: "h", PID: 1, Since: since}
		return Join(Options{Client: cl, Group: "__kmirror.f.owners", Timeout: 6 * time.Second, Self: self, Logger: logger})
	}
	now := time.Now()
	a := join("a", now)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	la, err := a.Wait(ctx)
	if err != nil {
		t.Fatalf("first member: %v", err)
	}
	b := join("b", now.Add(time.Second))
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := b.State()
		if s.Holder != nil && s.Holder.Instance == "a" && !s.Holding {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("second member's state %+v, want holder a", s)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if la.Allow() != nil || !a.State().Holding {
		t.Fatal("the holder lost the flow when a second member joined")
	}
	shortCtx, cancelShort := context.WithTimeout(ctx, time.Second)
	if _, err := b.Wait(shortCtx); err == nil {
		t.Fatal("second member got a lease while the first holds one")
	}
	cancelShort()

	a.Leave()
	if la.Allow() == nil {
		t.Fatal("the lease is valid after Leave")
	}
	start := time.Now()
	lb, err := b.Wait(ctx)
	if err != nil {
		t.Fatalf("second member after the first left: %v", err)
	}
	if lb.Allow() != nil || !b.State().Holding {
		t.Fatal("second member's lease not valid")
	}
	t.Logf("hand-over after Leave took %s", time.Since(start))
	b.Leave()
}
