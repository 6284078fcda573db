package nft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
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
	nl    *netlink.Conn   // batches
	conn  *nftables.Conn  // reading the affinity map
	table *nftables.Table // for conn
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
	gen      uint64
	last     SyncStats
	buf      []byte // the last batch's buffer, reused
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
	nl, err := dialNetlink(o.NetNS)
	if err != nil {
		return nil, fmt.Errorf("nftables syncer: %w", err)
	}
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(sizeBuffers)}
	if o.NetNS != 0 {
		opts = append(opts, nftables.WithNetNSFd(o.NetNS))
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		nl.Close()
		return nil, fmt.Errorf("nftables syncer: open netlink: %w", err)
	}
	return &Syncer{
		log:      o.Logger.With("component", "nft", "table", o.Table),
		netns:    o.NetNS,
		nl:       nl,
		conn:     conn,
		table:    &nftables.Table{Name: o.Table, Family: nftables.TableFamilyIPv4},
		services: map[serviceKey]*svcState{},
		owners:   map[string]serviceKey{},
		shared:   map[string]*sharedElem{},
		refs:     map[feature]int{},
	}, nil
}

// dialNetlink opens a netfilter netlink socket in the network namespace
// (0: ours) with buffers sized for big batches.
func dialNetlink(netns int) (*netlink.Conn, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netns})
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	if err := sizeBuffers(c); err != nil {
		c.Close()
		return nil, err
	}
	// Errors without a copy of the failed message (a 500-element message
	// is tens of kilobytes), with the kernel's explanation when it has one.
	for _, o := range []netlink.ConnOption{netlink.CapAcknowledge, netlink.ExtendedAcknowledge} {
		if err := c.SetOption(o, true); err != nil {
			c.Close()
			return nil, fmt.Errorf("netlink socket: %w", err)
		}
	}
	return c, nil
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
	return errors.Join(s.nl.Close(), s.conn.CloseLasting())
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
	b := newBatch(s.table.Name, nil)
	b.addTable() // so that deleting it cannot fail
	b.delTable()
	if err := s.send(b); err != nil {
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
	fresh := make(map[serviceKey]bool, max(len(d.Services)-len(s.services), 0))
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
			err = s.apply(newBatch(s.table.Name, s.buf), inc.p, &st)
			st.Kernel = time.Since(kstart)
			if err == nil {
				s.commit(inc, opts, changes)
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
	inc.global = global
	p := newPlan(global)
	p.diff(s.global, global)
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
	owners := make(map[string]serviceKey, 2*len(all))
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
	b := newBatch(s.table.Name, s.buf)
	b.addTable()
	b.delTable()
	b.addTable()
	err = s.apply(b, p, &st)
	st.Kernel = time.Since(kstart)
	if err != nil {
		return fmt.Errorf("rebuild table %s: %w", s.table.Name, err)
	}
	s.services, s.order = all, order
	s.global, s.opts, s.owners, s.shared, s.refs, s.synced = global, opts, owners, shared, refs, true
	s.sizes, s.counts = ft.sizes, counts
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
	kt, _, _ := datatype([]SetType{TypeIPv4Addr, TypeIPv4Addr, TypeInetProto, TypeInetService})
	dt, _, _ := datatype([]SetType{TypeIPv4Addr, TypeInetService})
	set := &nftables.Set{Table: s.table, Name: mapAffinity, KeyType: kt, DataType: dt, IsMap: true, Concatenation: true}
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
		b := newBatch(s.table.Name, nil)
		b.elements(mapAffinity, del, true)
		err = s.send(b)
		if err == nil {
			return len(del)
		}
		// An entry expired between reading and deleting: read again.
		if attempt == 1 {
			s.log.Warn("delete stale affinity entries", "err", err)
			return 0
		}
	}
}

// apply puts the plan in the batch, in an order the kernel accepts within
// one transaction, and sends it.
func (s *Syncer) apply(b *batch, p *plan, st *SyncStats) error {
	n := 0
	for _, m := range []map[string][]Element{p.addElems, p.delElems, p.refill} {
		for _, es := range m {
			n += len(es)
		}
	}
	b.grow(n)
	// 1. New sets and chains, empty, so that anything may refer to them.
	for _, set := range p.addSets {
		if err := b.addSet(set); err != nil {
			return err
		}
	}
	for _, c := range p.addChains {
		b.addChain(c)
	}
	// 2. Elements that go, before the sets deleted below.
	for _, set := range sortedKeys(p.delElems) {
		b.elements(set, p.delElems[set], true)
	}
	// 3. Interval sets are refilled whole.
	for _, set := range sortedKeys(p.refill) {
		if !p.newSet[set] {
			b.flushSet(set)
		}
		b.elements(set, p.refill[set], false)
	}
	// 4. Rules: changed chains are flushed and refilled, new ones filled.
	for _, c := range p.rewrite {
		b.chainOp(unix.NFT_MSG_DELRULE, c.Name, "flush chain")
	}
	for _, cs := range [][]*Chain{p.rewrite, p.addChains} {
		for _, c := range cs {
			if err := b.addRules(c); err != nil {
				return err
			}
		}
	}
	// 5. New elements.
	for _, set := range sortedKeys(p.addElems) {
		b.elements(set, p.addElems[set], false)
	}
	// 6. Chains that go: emptied first (they may refer to each other), then
	// deleted; then the sets only they used.
	for _, c := range p.delChains {
		b.chainOp(unix.NFT_MSG_DELRULE, c.Name, "flush chain")
	}
	for _, c := range p.delChains {
		b.chainOp(unix.NFT_MSG_DELCHAIN, c.Name, "delete chain")
	}
	for _, set := range p.delSets {
		b.delSet(set.Name)
	}
	st.SetsAdded, st.SetsDeleted = len(p.addSets), len(p.delSets)
	st.ChainsAdded, st.ChainsRewritten, st.ChainsDeleted = len(p.addChains), len(p.rewrite), len(p.delChains)
	for _, cs := range [][]*Chain{p.rewrite, p.addChains} {
		for _, c := range cs {
			st.RulesAdded += len(c.Rules)
		}
	}
	for _, m := range []map[string][]Element{p.addElems, p.refill} {
		for _, es := range m {
			st.ElementsAdded += len(es)
		}
	}
	for _, es := range p.delElems {
		st.ElementsDeleted += len(es)
	}
	err := s.send(b)
	s.buf = b.buf
	if err != nil {
		return fmt.Errorf("send batch: %w", err)
	}
	return nil
}

// send sends a batch; after a failure the socket is replaced, so that no
// acknowledgement of it is read as one of the next batch.
func (s *Syncer) send(b *batch) error {
	err := b.send(s.nl)
	if err != nil {
		if nl, derr := dialNetlink(s.netns); derr != nil {
			s.log.Error("reopen netlink connection", "err", derr)
		} else {
			s.nl.Close()
			s.nl = nl
		}
	}
	return err
}

// firstError shortens the kernel's answer to a failed batch: one error per
// message that failed, joined (and maybe nested), usually one cause
// repeated.
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
