package ownership

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// ProtocolPartitions names the assignment that splits a flow's source
// partitions over the members (scale-out). Members keep what they own
// unless it must move; a partition that moves is first revoked from its
// owner (assigned to nobody for one generation) and given to its new owner
// in the next generation, once the old owner stopped it and stored its
// position and rejoined. So no partition is ever written by two members.
const ProtocolPartitions = "partitions-v1"

// Partition is one source partition of a flow.
type Partition struct {
	Topic     string `json:"t"`
	Partition int32  `json:"p"`
}

func comparePartitions(a, b Partition) int {
	if c := cmp.Compare(a.Topic, b.Topic); c != 0 {
		return c
	}
	return cmp.Compare(a.Partition, b.Partition)
}

// partMeta is a member's JoinGroup metadata under ProtocolPartitions.
type partMeta struct {
	Identity
	// Lease is true when the member holds a valid lease, of generation
	// LeaseGeneration; Owned (partitions it may write) and Elected are
	// reported only then.
	Lease           bool        `json:"lease"`
	LeaseGeneration int32       `json:"lease_generation"`
	Elected         bool        `json:"elected"`
	Owned           []Partition `json:"owned,omitempty"`
	// Universe is every partition of the flow as the member knows it;
	// Authoritative says it comes from the flow's topic sync (run by the
	// elected member), else from the last assignment.
	Universe      []Partition `json:"universe,omitempty"`
	Authoritative bool        `json:"authoritative,omitempty"`
}

// Share is what one member is assigned in a generation.
type Share struct {
	Identity
	Partitions []Partition `json:"partitions"`
	// Revoking are partitions the member must stop, store and release;
	// another member gets them in the next generation. Until then they
	// are listed here, so that every partition of a generation is under
	// exactly one member.
	Revoking []Partition `json:"revoking,omitempty"`
	// Released is set, in a member's own view only, once it stopped the
	// Revoking partitions and stored their positions: it writes them no
	// more and waits for the next generation to hand them over.
	Released bool `json:"released,omitempty"`
}

// Assignment is a generation's assignment under ProtocolPartitions. The
// leader sends all of it to every member, so every member knows who runs
// the flow-wide work and who owns what.
type Assignment struct {
	Elected Identity `json:"elected"`
	Members []Share  `json:"members"`
}

// assignPartitions computes a sticky, cooperative assignment balanced by
// partition count over the members whose metadata is metas.
func assignPartitions(metas []partMeta) Assignment {
	metas = slices.Clone(metas)
	slices.SortFunc(metas, func(a, b partMeta) int {
		if c := a.Since.Compare(b.Since); c != 0 {
			return c
		}
		return cmp.Compare(a.MemberID, b.MemberID)
	})
	if len(metas) == 0 {
		return Assignment{}
	}
	// The elected member: the one that is elected now (the newest lease,
	// should two claim it), else the longest-running.
	elected := -1
	for i, m := range metas {
		if m.Lease && m.Elected && (elected < 0 || m.LeaseGeneration > metas[elected].LeaseGeneration) {
			elected = i
		}
	}
	if elected < 0 {
		elected = 0
	}
	// The universe: the elected member's topic sync, else what any member
	// knows.
	inU := map[Partition]bool{}
	if e := metas[elected]; e.Authoritative {
		for _, p := range e.Universe {
			inU[p] = true
		}
	} else {
		for _, m := range metas {
			for _, p := range m.Universe {
				inU[p] = true
			}
			if m.Lease {
				for _, p := range m.Owned {
					inU[p] = true
				}
			}
		}
	}
	claims := map[Partition]int{}
	for _, m := range metas {
		if m.Lease {
			for _, p := range m.Owned {
				claims[p]++
			}
		}
	}
	n := len(metas)
	shares := make([]Share, n)
	current := make([][]Partition, n)
	for i, m := range metas {
		shares[i].Identity = m.Identity
		shares[i].Partitions = []Partition{}
		if !m.Lease {
			continue
		}
		owned := slices.Clone(m.Owned)
		slices.SortFunc(owned, comparePartitions)
		for _, p := range owned {
			if inU[p] && claims[p] == 1 {
				current[i] = append(current[i], p)
			} else {
				shares[i].Revoking = append(shares[i].Revoking, p)
			}
		}
	}
	// Quotas: base each, one more for the first extra members by what
	// they hold now, so that as little as possible moves.
	base, extra := len(inU)/n, len(inU)%n
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(len(current[b]), len(current[a])) })
	quota := make([]int, n)
	for k, i := range order {
		quota[i] = base
		if k < extra {
			quota[i]++
		}
	}
	for i := range metas {
		keep := min(len(current[i]), quota[i])
		shares[i].Partitions = append(shares[i].Partitions, current[i][:keep]...)
		shares[i].Revoking = append(shares[i].Revoking, current[i][keep:]...)
	}
	// Free partitions (claimed by nobody) go to the members below quota,
	// the emptiest first.
	var free []Partition
	for p := range inU {
		if claims[p] == 0 {
			free = append(free, p)
		}
	}
	slices.SortFunc(free, comparePartitions)
	for _, p := range free {
		best := -1
		for i := range shares {
			if len(shares[i].Partitions) >= quota[i] {
				continue
			}
			if best < 0 || len(shares[i].Partitions) < len(shares[best].Partitions) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		shares[best].Partitions = append(shares[best].Partitions, p)
	}
	for i := range shares {
		slices.SortFunc(shares[i].Partitions, comparePartitions)
		slices.SortFunc(shares[i].Revoking, comparePartitions)
	}
	return Assignment{Elected: metas[elected].Identity, Members: shares}
}

// assignBytes is the leader's assignment under ProtocolPartitions, the
// same bytes for every member.
func assignBytes(members []kmsg.JoinGroupResponseMember) ([]byte, error) {
	var metas []partMeta
	for _, mem := range members {
		var meta partMeta
		if err := json.Unmarshal(mem.ProtocolMetadata, &meta); err != nil {
			continue // not one of ours; assigned nothing
		}
		meta.MemberID = mem.MemberID
		metas = append(metas, meta)
	}
	if len(metas) == 0 {
		return nil, errors.New("no member of the ownership group has readable metadata")
	}
	return json.Marshal(assignPartitions(metas))
}

func (m *Member) partMetaLocked() partMeta {
	meta := partMeta{Identity: m.opts.Self}
	if m.lease != nil && m.lease.Allow() == nil {
		meta.Lease, meta.LeaseGeneration = true, m.lease.Generation()
		meta.Elected = m.elected
		for p := range m.owned {
			meta.Owned = append(meta.Owned, p)
		}
		slices.SortFunc(meta.Owned, comparePartitions)
	}
	if m.authoritative && m.elected {
		meta.Universe, meta.Authoritative = m.universe, true
	} else {
		meta.Universe = m.known
	}
	return meta
}

// clearShareLocked forgets what the member owns: its lease ended.
func (m *Member) clearShareLocked() {
	if len(m.owned) == 0 && !m.elected && m.revoking == nil {
		return
	}
	m.owned = map[Partition]bool{}
	m.elected, m.authoritative, m.universe = false, false, nil
	m.revoking = nil
	if m.released != nil {
		close(m.released)
		m.released = nil
	}
	m.state.Elected, m.state.Owned = false, 0
	m.notifyLocked()
}

func (m *Member) notifyLocked() {
	close(m.changed)
	m.changed = make(chan struct{})
}

// MyShare is what this member is to do now under ProtocolPartitions.
type MyShare struct {
	Generation int32
	// Elected says this member runs the flow-wide work.
	Elected bool
	// Owned are the partitions it replicates; Revoking those it must
	// stop, store and release (then call Released).
	Owned, Revoking []Partition
}

// Share returns what this member is to do now. It owns nothing without a
// valid lease.
func (m *Member) Share() MyShare {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := MyShare{Generation: m.state.Generation, Elected: m.elected, Revoking: slices.Clone(m.revoking)}
	revoking := map[Partition]bool{}
	for _, p := range m.revoking {
		revoking[p] = true
	}
	for p := range m.owned {
		if !revoking[p] {
			s.Owned = append(s.Owned, p)
		}
	}
	slices.SortFunc(s.Owned, comparePartitions)
	return s
}

// Changed returns a channel closed when the share changes.
func (m *Member) Changed() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.changed
}

// Released reports that the partitions being revoked are stopped and
// their positions stored: the member rejoins at once so that their new
// owners get them.
func (m *Member) Released() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.released != nil {
		close(m.released)
		m.released = nil
	}
}

// SetUniverse sets every partition of the flow, as the elected member's
// topic sync found them; a change triggers a rebalance.
func (m *Member) SetUniverse(ps []Partition) {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, comparePartitions)
	m.mu.Lock()
	same := m.authoritative && slices.Equal(ps, m.universe)
	m.universe, m.authoritative = ps, true
	m.mu.Unlock()
	if same {
		return
	}
	select {
	case m.rejoin <- struct{}{}:
	default:
	}
}

// applyPartitions records the assignment of a generation. Partitions
// revoked from this member are released by the flow (bounded by half the
// session timeout; past it the lease ends, which stops every write) before
// the member rejoins, so that their new owners can take them.
func (m *Member) applyPartitions(ctx context.Context, gen int32, self string, a Assignment) error {
	var mine Share
	var known []Partition
	for _, s := range a.Members {
		if s.MemberID == self {
			mine = s
		}
		known = append(known, s.Partitions...)
		known = append(known, s.Revoking...)
	}
	slices.SortFunc(known, comparePartitions)
	m.mu.Lock()
	valid := m.lease != nil && m.lease.Allow() == nil
	switch {
	case valid:
		m.lease.setGeneration(gen, self)
	case m.lease == nil:
		m.pending = true
	}
	wasElected := m.elected
	m.elected = a.Elected.MemberID == self
	if !m.elected {
		m.authoritative, m.universe = false, nil
	}
	m.known = known
	owned := map[Partition]bool{}
	for _, p := range mine.Partitions {
		owned[p] = true
	}
	var revoking []Partition
	if valid {
		for p := range m.owned {
			if !owned[p] {
				revoking = append(revoking, p)
				owned[p] = true // still ours until released
			}
		}
	}
	slices.SortFunc(revoking, comparePartitions)
	m.owned = owned
	m.revoking = revoking
	var released chan struct{}
	if len(revoking) > 0 {
		m.released = make(chan struct{})
		released = m.released
	}
	elected := a.Elected
	m.state = State{Holding: m.lease != nil, Holder: &elected, Generation: gen, Protocol: ProtocolPartitions,
		Elected: m.elected, Owned: len(mine.Partitions), Members: a.Members}
	m.notifyLocked()
	state := m.state
	m.mu.Unlock()
	if m.elected != wasElected {
		if m.elected {
			m.opts.Logger.Info("this instance runs the flow-wide work (topic, ACL and group sync)", "generation", gen, "group", m.opts.Group)
		} else {
			m.opts.Logger.Info("another instance runs the flow-wide work", "elected", elected.Instance, "generation", gen)
		}
	}
	m.opts.Logger.Info("partitions assigned", "owned", len(mine.Partitions), "revoking", len(revoking),
		"members", len(a.Members), "generation", gen)
	if m.opts.OnChange != nil {
		m.opts.OnChange(state)
	}
	if released == nil {
		return nil
	}
	t := time.NewTimer(m.opts.Timeout / 2)
	defer t.Stop()
	select {
	case <-released:
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		m.endLease("revoked partitions not released in time")
	}
	m.mu.Lock()
	for _, p := range revoking {
		delete(m.owned, p)
	}
	m.revoking = nil
	// What the API shows: they stay listed under this member, released,
	// until the next generation names their new owner.
	members := slices.Clone(m.state.Members)
	for i := range members {
		if members[i].MemberID == self {
			members[i].Released = true
		}
	}
	m.state.Members = members
	m.notifyLocked()
	state = m.state
	m.mu.Unlock()
	// Before the rejoin, so that no new owner of these partitions is
	// assigned them while this member still says it may write them.
	if m.opts.OnChange != nil {
		m.opts.OnChange(state)
	}
	return errRejoin
}
