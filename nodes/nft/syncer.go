package nft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Options configure a Syncer.
type Options struct {
	// Table is the table the Syncer owns; DefaultTable when empty.
	Table string
	// NetNS is an open file descriptor of the network namespace to work
	// in; 0 is the caller's own.
	NetNS int
	// Logger receives a line per sync; slog.Default() when nil.
	Logger *slog.Logger
}

// Validate reports options that cannot work.
func (o Options) Validate() error {
	if len(o.Table) > 255 {
		return errors.New("table name longer than 255 bytes")
	}
	if o.NetNS < 0 {
		return errors.New("negative network namespace descriptor")
	}
	return nil
}

// Syncer writes rule sets into its table. It keeps a mirror of what it last
// wrote: each Sync compiles only the Services that changed and sends the
// difference (map and set elements; table-wide rules only when the set of
// endpoint counts in use changes) as one atomic batch. The first Sync, and
// the first after a failed batch, rebuilds the whole table in one batch
// instead. A Syncer is safe for concurrent use; Syncs are serialized.
type Syncer struct {
	log   *slog.Logger
	conn  *nftables.Conn
	table *nftables.Table
	netns int

	mu       sync.Mutex
	synced   bool // the kernel holds exactly the mirror
	global   *fragment
	opts     svcOptions
	services map[serviceKey]*svcState
	order    []*svcState           // the services of the last Sync, in its order
	owners   map[string]serviceKey // claimed address (or address . proto . port) -> its service
	shared   map[string]*sharedElem
	refs     map[feature]int // Services needing each table-wide feature
	sizes    map[string]uint32
	counts   map[string]int // elements in each sized set
	// record is what the kernel's affinity-record chain holds (nil when
	// unknown), written apart from the main batch (see rawrule.go).
	record []Rule
	sets   map[string]*nftables.Set
	gen    uint64
	last   SyncStats
}

type svcState struct {
	in   Service
	frag *fragment
	gen  uint64 // the last Sync that saw this service
}

// sharedElem is an element several Services may need (a hairpin address),
// present while n > 0.
type sharedElem struct {
	setElem
	n int
}

// SyncStats says what one Sync did.
type SyncStats struct {
	Full             bool // the table was rebuilt
	Services         int  // services in the desired state
	ServicesChanged  int  // services compiled again
	SetsAdded        int
	SetsDeleted      int
	ChainsAdded      int
	ChainsRewritten  int
	ChainsDeleted    int
	RulesAdded       int
	ElementsAdded    int
	ElementsDeleted  int
	AffinityDeleted  int           // affinity entries naming endpoints that are gone
	Compile, Kernel  time.Duration // compiling and diffing; building and sending the batch
	IncrementalError error         // the failed batch that caused this rebuild, if any
}

// Socket buffer sizes for the netlink socket. The whole batch goes out in
// one sendmsg and the kernel answers every message with an ack that must fit
// in the receive buffer until read; the defaults (~208 KiB) give "message too
// long" above a few thousand elements and lose acks (ENOBUFS) on big
// rebuilds. SO_*BUFFORCE (root, which writing nftables needs anyway) lifts
// the limit of net.core.[rw]mem_max.
const (
	sendBuffer    = 256 << 20
	receiveBuffer = 512 << 20
)

// NewSyncer opens a netlink connection for the table. Nothing is written
// until the first Sync.
func NewSyncer(o Options) (*Syncer, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("nftables syncer: %w", err)
	}
	if o.Table == "" {
		o.Table = DefaultTable
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(sizeBuffers)}
	if o.NetNS != 0 {
		opts = append(opts, nftables.WithNetNSFd(o.NetNS))
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables syncer: open netlink: %w", err)
	}
	return &Syncer{
		log:      o.Logger.With("component", "nft", "table", o.Table),
		netns:    o.NetNS,
		conn:     conn,
		table:    &nftables.Table{Name: o.Table, Family: nftables.TableFamilyIPv4},
		services: map[serviceKey]*svcState{},
		owners:   map[string]serviceKey{},
		shared:   map[string]*sharedElem{},
		refs:     map[feature]int{},
	}, nil
}

func sizeBuffers(c *netlink.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sendBuffer)
		if serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, receiveBuffer)
		}
	}); err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	if serr != nil {
		// Without CAP_NET_ADMIN: as much as net.core.[rw]mem_max allows.
		if err := c.SetWriteBuffer(sendBuffer); err != nil {
			return fmt.Errorf("netlink socket: send buffer: %w", err)
		}
		if err := c.SetReadBuffer(receiveBuffer); err != nil {
			return fmt.Errorf("netlink socket: receive buffer: %w", err)
		}
	}
	return nil
}

// Close closes the netlink connection; the table stays as it is.
func (s *Syncer) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn.CloseLasting()
}

// LastSync reports what the last Sync did.
func (s *Syncer) LastSync() SyncStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Delete removes the table (if it exists) and forgets the mirror.
func (s *Syncer) Delete(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.synced = false
	s.conn.AddTable(s.table)
	s.conn.DelTable(s.table)
	if err := s.conn.Flush(); err != nil {
		return fmt.Errorf("delete table %s: %w", s.table.Name, err)
	}
	return nil
}

// change is one Service whose fragment is replaced (old or new may be nil).
type change struct {
	key      serviceKey
	old, new *svcState
}

// Sync makes the table hold the rule set of d. It may be called with the
// same d any number of times; unchanged Services cost a comparison each.
func (s *Syncer) Sync(ctx context.Context, d *Desired) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	st := SyncStats{Services: len(d.Services)}

	opts := optionsOf(d)
	recompileAll := opts != s.opts || !s.synced && s.global == nil
	s.gen++
	gen := s.gen
	var changes []change
	fresh := map[serviceKey]bool{}
	// The caller usually passes its services in the same order each time:
	// look at the same position of the last Sync first, and only then in
	// the map.
	order := make([]*svcState, len(d.Services))
	for i := range d.Services {
		in := &d.Services[i]
		var old *svcState
		if i < len(s.order) && s.order[i].in.Name == in.Name && s.order[i].in.Namespace == in.Namespace {
			old = s.order[i]
		} else {
			old = s.services[in.key()]
		}
		order[i] = old
		var prev *fragment
		if old != nil {
			if old.gen == gen {
				return fmt.Errorf("service %s given twice", in.key())
			}
			old.gen = gen
			if !recompileAll && old.in.equal(in) {
				continue
			}
			prev = old.frag
		} else {
			if fresh[in.key()] {
				return fmt.Errorf("service %s given twice", in.key())
			}
			fresh[in.key()] = true
		}
		k := in.key()
		frag, err := compileService(in, opts, prev)
		if err != nil {
			return err
		}
		order[i] = &svcState{in: in.clone(), frag: frag, gen: gen}
		changes = append(changes, change{key: k, old: old, new: order[i]})
	}
	// Every service of the mirror was seen unless some are new or the
	// counts differ.
	if len(fresh) > 0 || len(d.Services) != len(s.services) {
		for k, old := range s.services {
			if old.gen != gen {
				changes = append(changes, change{key: k, old: old})
			}
		}
	}
	st.ServicesChanged = len(changes)

	if s.synced {
		inc, err := s.planIncremental(d, changes)
		if err != nil {
			return err
		}
		if !inc.p.full {
			st.Compile = time.Since(start)
			kstart := time.Now()
			err = s.apply(inc.p, &st)
			st.Kernel = time.Since(kstart)
			if err == nil {
				s.commit(inc, opts, changes)
				if s.record == nil || !rulesEqual(s.record, inc.record) {
					s.writeRecord(inc.record)
				}
				s.order = order
				st.AffinityDeleted = s.forgetAffinity(changes)
				s.finish(st)
				return nil
			}
			s.log.Warn("incremental nftables batch failed; rebuilding the table", "err", err)
			st = SyncStats{Services: st.Services, ServicesChanged: st.ServicesChanged, IncrementalError: err}
		}
	}
	return s.rebuild(d, opts, changes, order, st, start)
}

// finish records the stats of a successful Sync.
func (s *Syncer) finish(st SyncStats) {
	s.last = st
	s.log.Debug("nftables synced", "full", st.Full, "services", st.Services, "changed", st.ServicesChanged,
		"chainsAdded", st.ChainsAdded, "chainsRewritten", st.ChainsRewritten, "chainsDeleted", st.ChainsDeleted,
		"elementsAdded", st.ElementsAdded, "elementsDeleted", st.ElementsDeleted, "affinityDeleted", st.AffinityDeleted,
		"compile", st.Compile, "kernel", st.Kernel)
}

// incremental is a planned incremental batch and the mirror it leads to.
type incremental struct {
	p       *plan
	global  *fragment
	claimed map[string]serviceKey
	refs    map[feature]int
	shared  map[string]int // changed shared elements: their new counts
	counts  map[string]int // elements in each sized set
	record  []Rule
}

// splitRecord takes the affinity-record chain's rules out of a compiled
// table-wide fragment: they go in a batch of their own.
func splitRecord(g *fragment) (*fragment, []Rule) {
	c := *g
	c.chains = make([]*Chain, len(g.chains))
	var record []Rule
	for i, ch := range g.chains {
		if ch.Name == chainAffinityRecord {
			record = ch.Rules
			ch = &Chain{Name: ch.Name, Base: ch.Base}
		}
		c.chains[i] = ch
	}
	if record == nil {
		record = []Rule{}
	}
	return &c, record
}

// writeRecord fills the affinity-record chain, after a successful batch
// that left it empty.
func (s *Syncer) writeRecord(record []Rule) {
	if len(record) == 0 {
		s.record = record
		return
	}
	if err := s.writeChainRules(chainAffinityRecord, record); err != nil {
		// The next Sync tries again.
		s.log.Warn("write affinity-record rules; sessionAffinity is not recorded", "err", firstError(err))
		s.record = nil
		return
	}
	s.record = record
}

// planIncremental diffs the mirror against the changes. It fails if two
// Services claim one address.
func (s *Syncer) planIncremental(d *Desired, changes []change) (*incremental, error) {
	inc := &incremental{claimed: map[string]serviceKey{}, refs: make(map[feature]int, len(s.refs)), shared: map[string]int{}}
	for k, n := range s.refs {
		inc.refs[k] = n
	}
	released := map[serviceKey]bool{}
	for _, c := range changes {
		released[c.key] = true
	}
	sharedElems := map[string]setElem{}
	for _, c := range changes {
		if c.old != nil {
			for _, f := range c.old.frag.features {
				inc.refs[f]--
			}
			for _, e := range c.old.frag.shared {
				id := elemID(e.set, e.Key)
				if _, ok := inc.shared[id]; !ok {
					inc.shared[id] = s.sharedCount(id)
				}
				inc.shared[id]--
				sharedElems[id] = e
			}
		}
		if c.new == nil {
			continue
		}
		for _, cl := range c.new.frag.claims {
			if o, ok := inc.claimed[cl]; ok {
				return nil, fmt.Errorf("services %s and %s both claim %s", o, c.key, claimText(cl))
			}
			if o, ok := s.owners[cl]; ok && !released[o] {
				return nil, fmt.Errorf("services %s and %s both claim %s", o, c.key, claimText(cl))
			}
			inc.claimed[cl] = c.key
		}
		for _, f := range c.new.frag.features {
			inc.refs[f]++
		}
		for _, e := range c.new.frag.shared {
			id := elemID(e.set, e.Key)
			if _, ok := inc.shared[id]; !ok {
				inc.shared[id] = s.sharedCount(id)
			}
			inc.shared[id]++
			sharedElems[id] = e
		}
	}
	ft := featuresOf(inc.refs)
	ft.sizes = s.sizes
	global, err := compileGlobal(d, ft)
	if err != nil {
		return nil, err
	}
	global, inc.record = splitRecord(global)
	inc.global = global
	p := newPlan(global)
	p.diff(s.global, global)
	if s.record == nil || !rulesEqual(s.record, inc.record) {
		// Empty it in this batch (its rules may name sets that go);
		// writeChainRules fills it after.
		p.rewrite = append(p.rewrite, &Chain{Name: chainAffinityRecord})
	}
	for _, c := range changes {
		var oldF, newF *fragment
		if c.old != nil {
			oldF = c.old.frag
		}
		if c.new != nil {
			newF = c.new.frag
		}
		p.diffElems(elemsOf(oldF), elemsOf(newF))
	}
	for id, n := range inc.shared {
		was := s.sharedCount(id)
		e := sharedElems[id]
		switch {
		case was == 0 && n > 0:
			p.addElems[e.set] = append(p.addElems[e.set], e.Element)
		case was > 0 && n <= 0:
			p.delElems[e.set] = append(p.delElems[e.set], e.Element)
		}
	}
	inc.counts = make(map[string]int, len(sizedSets))
	for _, set := range sizedSets {
		n := s.counts[set] + len(p.addElems[set]) - len(p.delElems[set])
		inc.counts[set] = n
		if n > int(s.sizes[set]) {
			p.full = true // outgrown: rebuild with bigger sets
		}
	}
	inc.p = p
	return inc, nil
}

func elemsOf(f *fragment) []setElem {
	if f == nil {
		return nil
	}
	return f.elems
}

func (s *Syncer) sharedCount(id string) int {
	if e := s.shared[id]; e != nil {
		return e.n
	}
	return 0
}

// commit makes the mirror what was just written.
func (s *Syncer) commit(inc *incremental, opts svcOptions, changes []change) {
	s.global, s.opts, s.synced, s.refs, s.counts = inc.global, opts, true, inc.refs, inc.counts
	for f, n := range s.refs {
		if n <= 0 {
			delete(s.refs, f)
		}
	}
	for _, c := range changes {
		if c.old != nil {
			for _, cl := range c.old.frag.claims {
				if s.owners[cl] == c.key {
					delete(s.owners, cl)
				}
			}
		}
		if c.new == nil {
			delete(s.services, c.key)
		} else {
			s.services[c.key] = c.new
		}
	}
	for cl, k := range inc.claimed {
		s.owners[cl] = k
	}
	for _, c := range changes {
		if c.new == nil {
			continue
		}
		for _, e := range c.new.frag.shared {
			id := elemID(e.set, e.Key)
			if s.shared[id] == nil {
				s.shared[id] = &sharedElem{setElem: e}
			}
		}
	}
	for id, n := range inc.shared {
		if n <= 0 {
			delete(s.shared, id)
		} else if e := s.shared[id]; e != nil {
			e.n = n
		}
	}
}

// rebuild deletes and recreates the whole table in one batch.
func (s *Syncer) rebuild(d *Desired, opts svcOptions, changes []change, order []*svcState, st SyncStats, start time.Time) error {
	st.Full = true
	all := make(map[serviceKey]*svcState, len(s.services)+len(changes))
	for k, v := range s.services {
		all[k] = v
	}
	for _, c := range changes {
		if c.new == nil {
			delete(all, c.key)
		} else {
			all[c.key] = c.new
		}
	}
	owners := make(map[string]serviceKey, len(all))
	refs := map[feature]int{}
	shared := map[string]*sharedElem{}
	for k, v := range all {
		for _, cl := range v.frag.claims {
			if o, ok := owners[cl]; ok {
				return fmt.Errorf("services %s and %s both claim %s", o, k, claimText(cl))
			}
			owners[cl] = k
		}
		for _, f := range v.frag.features {
			refs[f]++
		}
		for _, e := range v.frag.shared {
			id := elemID(e.set, e.Key)
			if shared[id] == nil {
				shared[id] = &sharedElem{setElem: e}
			}
			shared[id].n++
		}
	}
	counts := map[string]int{}
	for _, v := range all {
		for i := range v.frag.elems {
			counts[v.frag.elems[i].set]++
		}
	}
	ft := featuresOf(refs)
	ft.sizes = map[string]uint32{}
	for _, set := range sizedSets {
		ft.sizes[set] = sizeFor(counts[set])
	}
	global, err := compileGlobal(d, ft)
	if err != nil {
		return err
	}
	global, record := splitRecord(global)
	p := newPlan(global)
	p.diff(nil, global)
	for set, n := range counts {
		p.addElems[set] = append(make([]Element, 0, n+len(p.addElems[set])), p.addElems[set]...)
	}
	for _, v := range all {
		p.diffElems(nil, v.frag.elems)
	}
	for _, e := range shared {
		p.addElems[e.set] = append(p.addElems[e.set], e.Element)
	}
	st.Compile = time.Since(start)
	kstart := time.Now()
	s.synced = false
	s.sets = map[string]*nftables.Set{}
	s.conn.AddTable(s.table)
	s.conn.DelTable(s.table)
	s.conn.AddTable(s.table)
	err = s.apply(p, &st)
	st.Kernel = time.Since(kstart)
	if err != nil {
		return fmt.Errorf("rebuild table %s: %w", s.table.Name, err)
	}
	s.services, s.order = all, order
	s.global, s.opts, s.owners, s.shared, s.refs, s.synced = global, opts, owners, shared, refs, true
	s.sizes, s.counts = ft.sizes, counts
	s.writeRecord(record)
	s.finish(st)
	return nil
}

// forgetAffinity deletes, after a successful batch, the affinity entries
// that send clients of a changed Service to an endpoint it no longer has
// (the kernel cannot be asked to delete by value, so the affinity map is
// read). Failures are logged: such entries expire with their timeout.
func (s *Syncer) forgetAffinity(changes []change) int {
	// Service address -> the endpoints it may still reach.
	stale := map[tuple]map[string]bool{}
	for _, c := range changes {
		if c.old == nil || !c.old.frag.affinity {
			continue
		}
		valid := map[tuple]map[string]bool{}
		if c.new != nil {
			for _, e := range c.new.frag.elems {
				if e.set == mapServiceEndpoints {
					t := tuple(e.Key[:12])
					if valid[t] == nil {
						valid[t] = map[string]bool{}
					}
					valid[t][string(e.Data)] = true
				}
			}
		}
		for _, e := range c.old.frag.elems {
			if e.set != mapServiceEndpoints {
				continue
			}
			if t := tuple(e.Key[:12]); !valid[t][string(e.Data)] {
				stale[t] = valid[t]
			}
		}
	}
	if len(stale) == 0 {
		return 0
	}
	set := s.sets[mapAffinity]
	if set == nil {
		return 0
	}
	for attempt := 0; ; attempt++ {
		entries, err := s.conn.GetSetElements(set)
		if err != nil {
			s.log.Warn("read affinity map", "err", err)
			return 0
		}
		var del []Element
		for _, e := range entries {
			if len(e.Key) != 16 || len(e.Val) != 8 {
				continue
			}
			if valid, ok := stale[tuple(e.Key[4:16])]; ok && !valid[string(e.Val)] {
				del = append(del, Element{Key: e.Key})
			}
		}
		if len(del) == 0 {
			return 0
		}
		l := &lowerer{table: s.table, conn: s.conn, sets: s.sets}
		_, err = l.elements(mapAffinity, del, true)
		if err == nil {
			err = s.conn.Flush()
		}
		if err == nil {
			return len(del)
		}
		// An entry expired between reading and deleting: read again.
		s.conn = s.reopen()
		if attempt == 1 {
			s.log.Warn("delete stale affinity entries", "err", firstError(err))
			return 0
		}
	}
}

// apply queues the plan on the connection in an order the kernel accepts
// within one transaction, and sends it as one batch.
func (s *Syncer) apply(p *plan, st *SyncStats) (err error) {
	defer func() {
		if err != nil {
			// Drop whatever is queued: the next batch starts clean.
			s.conn = s.reopen()
		}
	}()
	if s.sets == nil {
		s.sets = map[string]*nftables.Set{}
	}
	l := &lowerer{table: s.table, conn: s.conn, sets: s.sets}
	// 1. New sets and chains, empty, so that anything may refer to them.
	for _, set := range p.addSets {
		if err := l.addSet(set); err != nil {
			return err
		}
	}
	for _, c := range p.addChains {
		s.conn.AddChain(l.chain(c))
	}
	// 2. Elements that go, before the sets deleted below.
	for _, set := range sortedKeys(p.delElems) {
		if _, err := l.elements(set, p.delElems[set], true); err != nil {
			return err
		}
		st.ElementsDeleted += len(p.delElems[set])
	}
	// 3. Interval sets are refilled whole.
	for _, set := range sortedKeys(p.refill) {
		if !p.newSet[set] {
			ns, err := l.set(set)
			if err != nil {
				return err
			}
			s.conn.FlushSet(ns)
		}
		if _, err := l.elements(set, p.refill[set], false); err != nil {
			return err
		}
		st.ElementsAdded += len(p.refill[set])
	}
	// 4. Rules: changed chains are flushed and refilled, new ones filled.
	for _, c := range p.rewrite {
		s.conn.FlushChain(&nftables.Chain{Name: c.Name, Table: s.table})
	}
	for _, cs := range [][]*Chain{p.rewrite, p.addChains} {
		for _, c := range cs {
			if err := l.addRules(c); err != nil {
				return err
			}
			st.RulesAdded += len(c.Rules)
		}
	}
	// 5. New elements.
	for _, set := range sortedKeys(p.addElems) {
		if _, err := l.elements(set, p.addElems[set], false); err != nil {
			return err
		}
		st.ElementsAdded += len(p.addElems[set])
	}
	// 6. Chains that go: emptied first (they may refer to each other), then
	// deleted; then the sets only they used.
	for _, c := range p.delChains {
		s.conn.FlushChain(&nftables.Chain{Name: c.Name, Table: s.table})
	}
	for _, c := range p.delChains {
		s.conn.DelChain(&nftables.Chain{Name: c.Name, Table: s.table})
	}
	for _, set := range p.delSets {
		ns, err := l.set(set.Name)
		if err != nil {
			return err
		}
		s.conn.DelSet(ns)
	}
	st.SetsAdded, st.SetsDeleted = len(p.addSets), len(p.delSets)
	st.ChainsAdded, st.ChainsRewritten, st.ChainsDeleted = len(p.addChains), len(p.rewrite), len(p.delChains)
	if err := s.conn.Flush(); err != nil {
		for _, set := range p.addSets {
			delete(s.sets, set.Name)
		}
		if errors.Is(err, syscall.ENOBUFS) {
			return fmt.Errorf("send batch (acks lost; the batch may have been applied): %w", err)
		}
		return fmt.Errorf("send batch: %w", firstError(err))
	}
	for _, set := range p.delSets {
		delete(s.sets, set.Name)
	}
	return nil
}

// firstError shortens the kernel's answer to a failed batch: the library
// joins (and nests) one error per message that failed, and they are usually
// one cause repeated.
func firstError(err error) error {
	var leaves []error
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		leaves = append(leaves, e)
	}
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) {
		return err
	}
	walk(joined.(error))
	if len(leaves) < 2 {
		return err
	}
	return fmt.Errorf("%w (and %d more errors)", leaves[0], len(leaves)-1)
}

// reopen replaces the connection after a failed batch, so that no half-queued
// message survives into the next one.
func (s *Syncer) reopen() *nftables.Conn {
	old := s.conn
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(sizeBuffers)}
	if old.NetNS != 0 {
		opts = append(opts, nftables.WithNetNSFd(old.NetNS))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		s.log.Error("reopen netlink connection", "err", err)
		return old
	}
	_ = old.CloseLasting()
	return c
}
