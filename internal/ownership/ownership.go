// Package ownership gives a flow one writer at a time.
//
// Every process that runs a flow joins one group on the flow's target
// cluster with Kafka's group protocol (JoinGroup, SyncGroup, Heartbeat,
// LeaveGroup; a protocol type of kmirror's own, no offsets). The group's
// leader assigns the flow to one member: the member that already holds it,
// else the longest-running one. Every member learns from the assignment
// who holds the flow; the group generation is the holder's epoch.
//
// A holder may write while it holds a Lease, which it measures on its own
// boot clock (CLOCK_BOOTTIME on Linux, which counts time suspended),
// cross-checked against the wall clock: the lease lasts until two thirds
// of the session timeout after the sending of the last heartbeat (or
// join) the coordinator accepted. The coordinator cannot give the flow to another
// member before a full session timeout has passed since then (the
// rebalance timeout equals the session timeout), so a holder that was
// paused, cut off or too slow to heartbeat has stopped writing before a
// successor can start. The lease is enforced where the bytes leave the
// process: the flow's target clients check Lease.Allow before every chunk
// they write to a broker and abort their connections when the lease ends
// (see kafka.NewGatedClient), so records already buffered in a paused
// holder's producer are never sent once it resumes.
//
// A holder that stops leaves the group, and a waiting member takes over
// at its next heartbeat. A holder that dies is removed by the coordinator
// after the session timeout.
package ownership

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmirror/kmirror/internal/retry"
)

// ProtocolType is the group protocol type of ownership groups.
const ProtocolType = "kmirror-owner"

// protocolName names the assignment of this version: the whole flow to
// one member. Scale-out adds a protocol that splits partitions.
const protocolName = "whole-flow-v1"

// ErrLeaseLost is returned by Lease.Allow once the lease has ended.
var ErrLeaseLost = errors.New("this process no longer holds the flow")

// Identity says who a member is, for logs and the API.
type Identity struct {
	Instance string    `json:"instance"`
	Host     string    `json:"host"`
	PID      int       `json:"pid"`
	Since    time.Time `json:"since"`
	MemberID string    `json:"member_id,omitempty"`
}

func (id Identity) String() string {
	return fmt.Sprintf("%s (host %s, pid %d)", id.Instance, id.Host, id.PID)
}

// Self returns the identity of this process.
func Self(start time.Time) Identity {
	host, _ := os.Hostname()
	pid := os.Getpid()
	return Identity{Instance: host + ":" + strconv.Itoa(pid), Host: host, PID: pid, Since: start}
}

// Options configure a Member.
type Options struct {
	// Client reaches the target cluster. Only group requests are sent
	// with it.
	Client *kgo.Client
	// Group is the ownership group's name.
	Group string
	// Timeout is the group session timeout: how long a holder that died
	// keeps the flow. The broker bounds it
	// (group.min.session.timeout.ms, 6 s by default).
	Timeout time.Duration
	Self    Identity
	Logger  *slog.Logger
	// OnChange, if set, is called after the holder changed.
	OnChange func(State)
	// Clock measures the lease; nil means SystemClock.
	Clock Clock
	// Partitions selects ProtocolPartitions: the flow's source partitions
	// are split over the members instead of the whole flow going to one.
	Partitions bool
}

// State is what a member knows about the flow's holder.
type State struct {
	Holding    bool      `json:"holding"`
	Holder     *Identity `json:"holder,omitempty"`
	Generation int32     `json:"generation"`
	// Scale-out only (ProtocolPartitions): Elected says whether this
	// member runs the flow-wide work (Holder is then the elected member),
	// Owned how many partitions it owns, and Members every member with
	// what it owns.
	Protocol string  `json:"protocol,omitempty"`
	Elected  bool    `json:"elected,omitempty"`
	Owned    int     `json:"owned_partitions,omitempty"`
	Members  []Share `json:"members,omitempty"`
}

// Member is this process's membership of a flow's ownership group.
type Member struct {
	opts   Options
	clock  Clock
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	memberID string
	state    State
	lease    *Lease
	pending  bool          // assigned the flow; the next accepted heartbeat grants the lease
	granted  chan struct{} // closed and replaced when a lease is granted
	logged   string        // holder member id last logged

	// Scale-out (ProtocolPartitions).
	rejoin        chan struct{}      // wakes the heartbeat loop to rejoin
	changed       chan struct{}      // closed and replaced when the share changed
	owned         map[Partition]bool // partitions this member may write
	revoking      []Partition        // to release before rejoining
	released      chan struct{}      // closed by Released
	elected       bool               // runs the flow-wide work
	universe      []Partition        // from the elected member's topic sync
	authoritative bool               // universe is set
	known         []Partition        // every partition of the last assignment

	// calm is when (on the boot clock) the newest request the
	// coordinator answered without a rebalance in progress was sent: a
	// rebalance started after it, so it cannot end without this member
	// before calm + Timeout.
	calm time.Duration
}

// Join starts the membership in the background. Leave ends it.
func Join(opts Options) *Member {
	ctx, cancel := context.WithCancel(context.Background())
	clock := opts.Clock
	if clock == nil {
		clock = SystemClock()
	}
	m := &Member{opts: opts, clock: clock, cancel: cancel, done: make(chan struct{}), granted: make(chan struct{}),
		rejoin: make(chan struct{}, 1), changed: make(chan struct{}), owned: map[Partition]bool{}}
	go m.run(ctx)
	return m
}

// State returns what the member knows about the holder.
func (m *Member) State() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.state
	if s.Holder != nil {
		h := *s.Holder
		s.Holder = &h
	}
	return s
}

// Wait blocks until this member holds the flow and returns its lease, or
// returns ctx's error.
func (m *Member) Wait(ctx context.Context) (*Lease, error) {
	for {
		m.mu.Lock()
		l, granted := m.lease, m.granted
		m.mu.Unlock()
		if l != nil && l.Allow() == nil {
			return l, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-granted:
		case <-time.After(time.Second):
		}
	}
}

// Leave ends the lease, stops heartbeating and leaves the group, so a
// waiting member takes over at once. Call it after the flow's writes
// have stopped.
func (m *Member) Leave() {
	m.cancel()
	<-m.done
}

func (m *Member) run(ctx context.Context) {
	defer close(m.done)
	defer m.leave()
	var failures int
	var loggedAt time.Time
	for ctx.Err() == nil {
		err := m.joinAndSync(ctx)
		if errors.Is(err, errRejoin) {
			failures = 0
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			if time.Since(loggedAt) > 30*time.Second {
				loggedAt = time.Now()
				m.opts.Logger.Warn("cannot join the flow's ownership group on the target; retrying",
					"group", m.opts.Group, "err", err)
			}
			m.checkLease()
			retry.Sleep(ctx, min(time.Duration(failures)*m.heartbeatInterval(), m.opts.Timeout/2))
			continue
		}
		failures = 0
		m.heartbeat(ctx)
	}
}

// errRejoin means: join again at once.
var errRejoin = errors.New("rejoin")

func (m *Member) heartbeatInterval() time.Duration {
	return max(m.opts.Timeout/10, 100*time.Millisecond)
}

// window is how long a lease lasts after the sending of a request the
// coordinator accepted.
func (m *Member) window() time.Duration { return m.opts.Timeout * 2 / 3 }

// slack is how far the lease's boot and wall clocks may disagree between
// two looks at the lease before it ends.
func (m *Member) slack() time.Duration { return m.opts.Timeout / 20 }

type memberMeta struct {
	Identity
	// Holding is true when the member holds a valid lease of generation
	// LeaseGeneration.
	Holding         bool  `json:"holding"`
	LeaseGeneration int32 `json:"lease_generation"`
}

type assignment struct {
	Holder Identity `json:"holder"`
}

func (m *Member) joinAndSync(ctx context.Context) error {
	m.mu.Lock()
	memberID := m.memberID
	var meta any
	protocol := protocolName
	if m.opts.Partitions {
		protocol = ProtocolPartitions
		meta = m.partMetaLocked()
	} else {
		mm := memberMeta{Identity: m.opts.Self}
		if m.lease != nil && m.lease.Allow() == nil {
			mm.Holding, mm.LeaseGeneration = true, m.lease.Generation()
		}
		meta = mm
	}
	m.mu.Unlock()
	metaBytes, err := json.Marshal(meta)
	if err != nil {
		return err
	}
	timeoutMs := int32(m.opts.Timeout.Milliseconds())
	join := kmsg.NewPtrJoinGroupRequest()
	join.Group = m.opts.Group
	join.SessionTimeoutMillis = timeoutMs
	join.RebalanceTimeoutMillis = timeoutMs
	join.MemberID = memberID
	join.ProtocolType = ProtocolType
	proto := kmsg.NewJoinGroupRequestProtocol()
	proto.Name, proto.Metadata = protocol, metaBytes
	join.Protocols = []kmsg.JoinGroupRequestProtocol{proto}
	sent := m.clock.Boottime()
	stopKeepAlive := m.keepAliveWhileJoining(ctx, memberID)
	jresp, err := join.RequestWith(ctx, m.opts.Client)
	stopKeepAlive()
	if err != nil {
		return fmt.Errorf("join group %q: %w", m.opts.Group, err)
	}
	switch err := kerr.ErrorForCode(jresp.ErrorCode); {
	case err == nil:
	case errors.Is(err, kerr.MemberIDRequired):
		m.setMemberID(jresp.MemberID)
		return errRejoin
	case errors.Is(err, kerr.UnknownMemberID), errors.Is(err, kerr.IllegalGeneration):
		m.setMemberID("")
		m.endLease("removed from the ownership group")
		return errRejoin
	case errors.Is(err, kerr.RebalanceInProgress):
		return errRejoin
	default:
		return fmt.Errorf("join group %q: %w", m.opts.Group, err)
	}
	m.setMemberID(jresp.MemberID)
	// The coordinator restarted our session when the join completed.
	m.renew(sent)
	m.setCalm(sent)

	sync := kmsg.NewPtrSyncGroupRequest()
	sync.Group = m.opts.Group
	sync.Generation = jresp.Generation
	sync.MemberID = jresp.MemberID
	sync.ProtocolType = kmsg.StringPtr(ProtocolType)
	sync.Protocol = kmsg.StringPtr(protocol)
	if jresp.LeaderID == jresp.MemberID {
		var a []byte
		var err error
		if m.opts.Partitions {
			a, err = assignBytes(jresp.Members)
		} else {
			a, err = assign(jresp.Members)
		}
		if err != nil {
			return err
		}
		for _, mem := range jresp.Members {
			sa := kmsg.NewSyncGroupRequestGroupAssignment()
			sa.MemberID, sa.MemberAssignment = mem.MemberID, a
			sync.GroupAssignment = append(sync.GroupAssignment, sa)
		}
	}
	sresp, err := sync.RequestWith(ctx, m.opts.Client)
	if err != nil {
		return fmt.Errorf("sync group %q: %w", m.opts.Group, err)
	}
	switch err := kerr.ErrorForCode(sresp.ErrorCode); {
	case err == nil:
	case errors.Is(err, kerr.RebalanceInProgress):
		return errRejoin
	case errors.Is(err, kerr.UnknownMemberID), errors.Is(err, kerr.IllegalGeneration):
		m.setMemberID("")
		m.endLease("removed from the ownership group")
		return errRejoin
	default:
		return fmt.Errorf("sync group %q: %w", m.opts.Group, err)
	}
	if m.opts.Partitions {
		var pa Assignment
		if err := json.Unmarshal(sresp.MemberAssignment, &pa); err != nil || pa.Elected.MemberID == "" {
			return fmt.Errorf("sync group %q: unreadable assignment %q", m.opts.Group, sresp.MemberAssignment)
		}
		return m.applyPartitions(ctx, jresp.Generation, jresp.MemberID, pa)
	}
	var a assignment
	if err := json.Unmarshal(sresp.MemberAssignment, &a); err != nil || a.Holder.MemberID == "" {
		return fmt.Errorf("sync group %q: unreadable assignment %q", m.opts.Group, sresp.MemberAssignment)
	}
	m.apply(jresp.Generation, jresp.MemberID, a.Holder)
	return nil
}

// assign picks the holder among the members of a generation: a member
// holding a valid lease (the newest, should two claim one), else the
// longest-running member.
func assign(members []kmsg.JoinGroupResponseMember) ([]byte, error) {
	var metas []memberMeta
	for _, mem := range members {
		var meta memberMeta
		if err := json.Unmarshal(mem.ProtocolMetadata, &meta); err != nil {
			continue // not one of ours; never chosen
		}
		meta.MemberID = mem.MemberID
		metas = append(metas, meta)
	}
	if len(metas) == 0 {
		return nil, errors.New("no member of the ownership group has readable metadata")
	}
	holder := slices.MinFunc(metas, func(a, b memberMeta) int {
		if a.Holding != b.Holding {
			if a.Holding {
				return -1
			}
			return 1
		}
		if a.Holding && a.LeaseGeneration != b.LeaseGeneration {
			return cmp.Compare(b.LeaseGeneration, a.LeaseGeneration)
		}
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return cmp.Compare(a.MemberID, b.MemberID)
	})
	return json.Marshal(assignment{Holder: holder.Identity})
}

func (m *Member) setMemberID(id string) {
	m.mu.Lock()
	m.memberID = id
	m.mu.Unlock()
}

// apply records the holder of a generation. A member assigned the flow
// keeps its valid lease; without one, it is granted a lease by its next
// accepted heartbeat (a join can wait long for other members, so its
// sending time gives too short a lease).
func (m *Member) apply(gen int32, self string, holder Identity) {
	m.mu.Lock()
	mine := holder.MemberID == self
	var ended *Lease
	switch {
	case mine && m.lease != nil && m.lease.Allow() == nil:
		m.lease.setGeneration(gen, self)
	case mine:
		m.lease, m.pending = nil, true
	case m.lease != nil:
		ended, m.lease = m.lease, nil
	}
	if !mine {
		m.pending = false
	}
	m.state = State{Holding: m.lease != nil, Holder: &holder, Generation: gen}
	changed := !mine && m.logged != holder.MemberID
	if changed {
		m.logged = holder.MemberID
	}
	state := m.state
	m.mu.Unlock()
	if ended != nil {
		ended.end("assigned to another instance")
		m.opts.Logger.Warn("the flow was assigned to another instance; writes stopped", "holder", holder.String(), "generation", gen)
	}
	if !changed {
		return
	}
	m.opts.Logger.Info("the flow is held by another instance; waiting to take over",
		"holder", holder.Instance, "holder_host", holder.Host, "holder_pid", holder.PID,
		"holder_since", holder.Since.Format(time.RFC3339), "generation", gen, "group", m.opts.Group)
	if m.opts.OnChange != nil {
		m.opts.OnChange(state)
	}
}

func (m *Member) heartbeat(ctx context.Context) {
	t := time.NewTicker(m.heartbeatInterval())
	defer t.Stop()
	var loggedAt time.Time
	for first := true; ; first = false {
		if !first {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-m.rejoin:
				return // the universe changed: rebalance
			}
		}
		if m.checkLease() {
			return // rejoin: the group must learn we no longer hold it
		}
		m.mu.Lock()
		memberID, gen := m.memberID, m.state.Generation
		m.mu.Unlock()
		sent, err := m.sendHeartbeat(ctx, memberID, gen)
		switch {
		case err == nil:
			m.renew(sent)
			m.setCalm(sent)
		case ctx.Err() != nil:
			return
		case errors.Is(err, kerr.RebalanceInProgress):
			return
		case errors.Is(err, kerr.UnknownMemberID), errors.Is(err, kerr.IllegalGeneration),
			errors.Is(err, kerr.FencedInstanceID):
			m.setMemberID("")
			m.endLease("removed from the ownership group")
			return
		default:
			if time.Since(loggedAt) > 30*time.Second {
				loggedAt = time.Now()
				m.opts.Logger.Warn("ownership heartbeat failed; retrying", "group", m.opts.Group, "err", err)
			}
		}
	}
}

// sendHeartbeat sends one heartbeat of memberID in generation gen and
// returns when it was sent (on the boot clock) and the coordinator's
// answer as an error.
func (m *Member) sendHeartbeat(ctx context.Context, memberID string, gen int32) (time.Duration, error) {
	hb := kmsg.NewPtrHeartbeatRequest()
	hb.Group, hb.MemberID, hb.Generation = m.opts.Group, memberID, gen
	sent := m.clock.Boottime()
	ctx, cancel := context.WithTimeout(ctx, m.window()/2)
	defer cancel()
	resp, err := hb.RequestWith(ctx, m.opts.Client)
	if err == nil {
		err = kerr.ErrorForCode(resp.ErrorCode)
	}
	return sent, err
}

func (m *Member) setCalm(sent time.Duration) {
	m.mu.Lock()
	if sent > m.calm {
		m.calm = sent
	}
	m.mu.Unlock()
}

// keepAliveWhileJoining heartbeats while this member's JoinGroup waits at
// the coordinator, and returns the function that stops it. A join waits
// for every member, up to Timeout for one that died but was not removed
// yet (a crashed instance restarted at once joins while its old self is
// still a member), and without heartbeats the lease would lapse
// meanwhile and stop every write of this member.
//
// The coordinator answers REBALANCE_IN_PROGRESS to the heartbeat of a
// member of the group and restarts its session, so such an answer extends
// the lease as an accepted heartbeat does, with one more bound: a member
// whose JoinGroup never reached the coordinator is removed when the
// rebalance times out, no earlier than Timeout after the rebalance began,
// which was after the last request answered without a rebalance (calm).
// The lease never outlasts calm + Timeout less a twentieth of Timeout
// (room for writes in flight).
func (m *Member) keepAliveWhileJoining(ctx context.Context, memberID string) (stop func()) {
	m.mu.Lock()
	lease, gen := m.lease, m.state.Generation
	m.mu.Unlock()
	if memberID == "" || lease == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(m.heartbeatInterval())
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if lease.Allow() != nil {
				return
			}
			sent, err := m.sendHeartbeat(ctx, memberID, gen)
			switch {
			case err == nil:
				m.setCalm(sent)
			case errors.Is(err, kerr.RebalanceInProgress):
			default:
				return // the join's answer says what happened
			}
			m.mu.Lock()
			bound := m.calm + m.opts.Timeout - m.opts.Timeout/20
			m.mu.Unlock()
			lease.renew(min(sent+m.window(), bound))
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// renew extends a valid lease after the coordinator accepted a request
// sent at sent (on the boot clock), or grants the lease the member was
// assigned.
func (m *Member) renew(sent time.Duration) {
	m.mu.Lock()
	l := m.lease
	if l == nil && m.pending {
		expiry := sent + m.window()
		if m.clock.Boottime() >= expiry {
			m.mu.Unlock()
			return // the heartbeat took too long; the next one grants it
		}
		l = newLease(m.clock, m.slack(), m.state.Generation, m.memberID, expiry)
		m.pending = false
		m.lease = l
		m.state.Holding = true
		m.logged = m.memberID
		close(m.granted)
		m.granted = make(chan struct{})
		state := m.state
		m.mu.Unlock()
		m.opts.Logger.Info("this instance holds the flow", "generation", state.Generation, "group", m.opts.Group)
		if m.opts.OnChange != nil {
			m.opts.OnChange(state)
		}
		return
	}
	m.mu.Unlock()
	if l != nil {
		l.renew(sent + m.window())
	}
}

// checkLease ends an expired lease and reports whether it did.
func (m *Member) checkLease() bool {
	m.mu.Lock()
	l := m.lease
	m.mu.Unlock()
	if l == nil || l.Allow() == nil {
		return false
	}
	reason := l.endReason()
	if reason == "" {
		reason = "no heartbeat accepted in time"
	}
	m.endLease(reason)
	return true
}

func (m *Member) endLease(reason string) {
	m.mu.Lock()
	l := m.lease
	m.lease, m.pending = nil, false
	if l != nil {
		m.state.Holding = false
		m.logged = ""
		m.clearShareLocked()
	}
	state := m.state
	m.mu.Unlock()
	if l == nil {
		return
	}
	l.end(reason)
	m.opts.Logger.Warn("this instance lost the flow; writes stopped", "reason", reason, "generation", l.Generation())
	if m.opts.OnChange != nil {
		m.opts.OnChange(state)
	}
}

// leave ends the lease and leaves the group.
func (m *Member) leave() {
	m.mu.Lock()
	l, memberID := m.lease, m.memberID
	m.lease = nil
	m.state = State{}
	m.clearShareLocked()
	m.mu.Unlock()
	if l != nil {
		l.end("left the ownership group")
	}
	if m.opts.OnChange != nil {
		m.opts.OnChange(State{})
	}
	if memberID == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group, req.MemberID = m.opts.Group, memberID
	lm := kmsg.NewLeaveGroupRequestMember()
	lm.MemberID = memberID
	req.Members = []kmsg.LeaveGroupRequestMember{lm}
	resp, err := req.RequestWith(ctx, m.opts.Client)
	if err == nil {
		err = kerr.ErrorForCode(resp.ErrorCode)
	}
	if err != nil {
		m.opts.Logger.Warn("could not leave the ownership group; another instance takes over after the session timeout",
			"group", m.opts.Group, "timeout", m.opts.Timeout.String(), "err", err)
	}
}
