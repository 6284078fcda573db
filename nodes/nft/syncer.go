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
// difference (map elements, chains, sets) as one atomic batch. The first
// Sync, and the first after a failed batch, rebuilds the whole table in one
// batch instead. A Syncer is safe for concurrent use; Syncs are serialized.
type Syncer struct {
	log   *slog.Logger
	conn  *nftables.Conn
	table *nftables.Table

	mu       sync.Mutex
	synced   bool // the kernel holds exactly the mirror
	global   *fragment
	opts     svcOptions
	services map[serviceKey]*svcState
	order    []*svcState           // the services of the last Sync, in its order
	owners   map[string]serviceKey // service element (set + key) -> its service
	sets     map[string]*nftables.Set
	gen      uint64
	last     SyncStats
}

type svcState struct {
	in   Service
	frag *fragment
	gen  uint64 // the last Sync that saw this service
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
		conn:     conn,
		table:    &nftables.Table{Name: o.Table, Family: nftables.TableFamilyIPv4},
		services: map[serviceKey]*svcState{},
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

	global, err := compileGlobal(d)
	if err != nil {
		return err
	}
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
		k := in.key()
		var old *svcState
		if i < len(s.order) && s.order[i].in.Name == in.Name && s.order[i].in.Namespace == in.Namespace {
			old = s.order[i]
		} else {
			old = s.services[k]
		}
		order[i] = old
		if old != nil && old.gen == gen || fresh[k] {
			return fmt.Errorf("service %s given twice", k)
		}
		if old != nil {
			old.gen = gen
			if !recompileAll && old.in.equal(in) {
				continue
			}
		} else {
			fresh[k] = true
		}
		frag, err := compileService(in, opts)
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
		p, claimed, err := s.planIncremental(global, changes)
		if err != nil {
			return err
		}
		if !p.full {
			st.Compile = time.Since(start)
			kstart := time.Now()
			err = s.apply(p, &st)
			st.Kernel = time.Since(kstart)
			if err == nil {
				s.commit(global, opts, changes, claimed)
				s.order = order
				s.finish(st)
				return nil
			}
			s.log.Warn("incremental nftables batch failed; rebuilding the table", "err", err)
			st = SyncStats{Services: st.Services, ServicesChanged: st.ServicesChanged, IncrementalError: err}
		}
	}
	return s.rebuild(global, opts, changes, st, start)
}

// finish records the stats of a successful Sync.
func (s *Syncer) finish(st SyncStats) {
	s.last = st
	s.log.Debug("nftables synced", "full", st.Full, "services", st.Services, "changed", st.ServicesChanged,
		"chainsAdded", st.ChainsAdded, "chainsRewritten", st.ChainsRewritten, "chainsDeleted", st.ChainsDeleted,
		"elementsAdded", st.ElementsAdded, "elementsDeleted", st.ElementsDeleted,
		"compile", st.Compile, "kernel", st.Kernel)
}

// commit makes the mirror what was just written: the changed Services'
// old elements are released, their new ones claimed.
func (s *Syncer) commit(global *fragment, opts svcOptions, changes []change, claimed map[string]serviceKey) {
	s.global, s.opts, s.synced = global, opts, true
	for _, c := range changes {
		if c.old != nil {
			for _, e := range c.old.frag.elems {
				if id := elemID(e.set, e.Text); s.owners[id] == c.key {
					delete(s.owners, id)
				}
			}
		}
		if c.new == nil {
			delete(s.services, c.key)
		} else {
			s.services[c.key] = c.new
		}
	}
	for id, k := range claimed {
		s.owners[id] = k
	}
}

func elemID(set, text string) string { return set + "\x00" + text }

// planIncremental diffs the mirror against the changes. It also returns the
// elements the changed Services claim, and fails if two Services claim one
// element (one address, protocol and port).
func (s *Syncer) planIncremental(global *fragment, changes []change) (*plan, map[string]serviceKey, error) {
	owners := s.owners
	p := newPlan(global)
	p.diff(s.global, global)
	released := map[serviceKey]bool{}
	for _, c := range changes {
		released[c.key] = true
	}
	claimed := map[string]serviceKey{}
	for _, c := range changes {
		var oldF, newF *fragment
		if c.old != nil {
			oldF = c.old.frag
		}
		if c.new != nil {
			newF = c.new.frag
			for _, e := range newF.elems {
				id := elemID(e.set, e.Text)
				if o, ok := claimed[id]; ok {
					return nil, nil, fmt.Errorf("services %s and %s both claim %s in %s", o, c.key, e.Text, e.set)
				}
				if o, ok := owners[id]; ok && !released[o] {
					return nil, nil, fmt.Errorf("services %s and %s both claim %s in %s", o, c.key, e.Text, e.set)
				}
				claimed[id] = c.key
			}
		}
		p.diff(oldF, newF)
	}
	return p, claimed, nil
}

// rebuild deletes and recreates the whole table in one batch.
func (s *Syncer) rebuild(global *fragment, opts svcOptions, changes []change, st SyncStats, start time.Time) error {
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
	owners := map[string]serviceKey{}
	p := newPlan(global)
	p.diff(nil, global)
	for k, v := range all {
		for _, e := range v.frag.elems {
			id := elemID(e.set, e.Text)
			if o, ok := owners[id]; ok {
				return fmt.Errorf("services %s and %s both claim %s in %s", o, k, e.Text, e.set)
			}
			owners[id] = k
		}
		p.diff(nil, v.frag)
	}
	st.Compile = time.Since(start)
	kstart := time.Now()
	s.synced = false
	s.sets = map[string]*nftables.Set{}
	s.conn.AddTable(s.table)
	s.conn.DelTable(s.table)
	s.conn.AddTable(s.table)
	err := s.apply(p, &st)
	st.Kernel = time.Since(kstart)
	if err != nil {
		return fmt.Errorf("rebuild table %s: %w", s.table.Name, err)
	}
	s.services, s.order = all, nil
	s.global, s.opts, s.owners, s.synced = global, opts, owners, true
	s.finish(st)
	return nil
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
	// 2. Elements that go, which may be the last references to chains
	// deleted below.
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
	// 5. New elements, pointing at chains that now exist.
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
