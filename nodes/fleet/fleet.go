// Package fleet is the controller's live view of its machines: one SSH
// connection per machine, kept and reused, with the machine's agent API
// spoken over it. Observe asks every agent at once what its machine runs;
// SetPods hands one machine its whole desired pod set. The reconciler
// decides what to send; this package only carries it, and says plainly
// which machines could not be reached and why.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"berth.dev/berth/nodes/agentclient"
	"berth.dev/berth/nodes/api"
	"berth.dev/berth/nodes/sshx"
	"berth.dev/berth/render/api/v1alpha1"
)

// DefaultObserveTimeout bounds how long Observe waits for one machine.
const DefaultObserveTimeout = 10 * time.Second

// Options configure a Fleet.
type Options struct {
	// SSH says how machines are reached (key, known hosts, timeouts).
	SSH sshx.Config
	// ObserveTimeout bounds one machine's answer to Observe
	// (DefaultObserveTimeout when zero).
	ObserveTimeout time.Duration
	// Logger receives connection events; nil discards them.
	Logger *slog.Logger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Observation is what one machine's agent reported.
type Observation struct {
	Machine string
	// Reachable: the agent answered. When false, Err says why (the
	// machine did not answer SSH, its host key was refused, the agent is
	// not running, ...), and Node and Pods are empty.
	Reachable bool
	Err       error
	Node      api.NodeInfo
	Pods      []api.PodStatus
	// At is when the answer arrived.
	At time.Time
}

// Fleet holds a connection to each machine. It is safe for concurrent use.
type Fleet struct {
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	machines map[string]*member // by name
	closed   bool
}

type member struct {
	m      *v1alpha1.Machine
	conn   *sshx.Conn
	client *agentclient.Client
}

// New makes a Fleet of machines. Nothing is dialled until the first call.
func New(machines []*v1alpha1.Machine, opts Options) (*Fleet, error) {
	if err := opts.SSH.Validate(); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	if opts.ObserveTimeout == 0 {
		opts.ObserveTimeout = DefaultObserveTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Fleet{opts: opts, log: log, machines: map[string]*member{}}
	if err := f.Update(machines); err != nil {
		return nil, err
	}
	return f, nil
}

// Update makes the fleet these machines: new ones are added, removed ones
// closed, and a machine whose address, SSH settings, host key or agent
// socket changed is reconnected.
func (f *Fleet) Update(machines []*v1alpha1.Machine) error {
	next := map[string]*v1alpha1.Machine{}
	for _, m := range machines {
		if _, dup := next[m.Name]; dup {
			return fmt.Errorf("fleet: machine %s listed twice", m.Name)
		}
		next[m.Name] = m
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errors.New("fleet: closed")
	}
	for name, mb := range f.machines {
		if m, ok := next[name]; !ok || !sameConnection(mb.m, m) {
			mb.close()
			delete(f.machines, name)
		}
	}
	for name, m := range next {
		if mb, ok := f.machines[name]; ok {
			mb.m = m
			continue
		}
		conn, err := sshx.New(m, f.opts.SSH)
		if err != nil {
			return fmt.Errorf("fleet: machine %s: %w", name, err)
		}
		f.machines[name] = &member{
			m:    m,
			conn: conn,
			// Fewer than the connection's channels: leave room for exec
			// and log streams.
			client: agentclient.New(conn.UnixDialer(socketOf(m)), agentclient.Options{MaxConns: 4}),
		}
	}
	return nil
}

func sameConnection(a, b *v1alpha1.Machine) bool {
	return a.Spec.Address == b.Spec.Address && a.Spec.SSH == b.Spec.SSH && socketOf(a) == socketOf(b)
}

func socketOf(m *v1alpha1.Machine) string {
	if s := m.Spec.Agent.Socket; s != "" {
		return s
	}
	return v1alpha1.DefaultSocket
}

func (mb *member) close() {
	mb.client.Close()
	mb.conn.Close()
}

// Names are the fleet's machines, sorted.
func (f *Fleet) Names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.machines))
	for n := range f.machines {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (f *Fleet) member(name string) (*member, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, errors.New("fleet: closed")
	}
	mb, ok := f.machines[name]
	if !ok {
		return nil, fmt.Errorf("fleet: no machine %s", name)
	}
	return mb, nil
}

// Observe asks every machine's agent, all at once, for its node info and
// pod statuses. It returns one Observation per machine, sorted by name,
// whatever each answered; it fails only when ctx ends.
func (f *Fleet) Observe(ctx context.Context) ([]Observation, error) {
	names := f.Names()
	out := make([]Observation, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() { out[i] = f.observe(ctx, name) })
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("observe fleet: %w", err)
	}
	return out, nil
}

func (f *Fleet) observe(ctx context.Context, name string) Observation {
	o := Observation{Machine: name}
	mb, err := f.member(name)
	if err != nil {
		o.Err = err
		return o
	}
	ctx, cancel := context.WithTimeout(ctx, f.opts.ObserveTimeout)
	defer cancel()
	node, err := mb.client.Node(ctx)
	if err == nil {
		o.Pods, err = mb.client.Pods(ctx)
	}
	if err != nil {
		o.Err = fmt.Errorf("machine %s: %w", name, err)
		f.log.Debug("machine unreachable", "machine", name, "err", err)
		return o
	}
	o.Reachable, o.Node, o.At = true, node, f.opts.Now()
	return o
}

// SetPods hands machine its whole desired pod set. The agent ignores an
// older generation than the one it has (api.ErrConflict).
func (f *Fleet) SetPods(ctx context.Context, machine string, pods api.DesiredPods) error {
	mb, err := f.member(machine)
	if err != nil {
		return err
	}
	if err := mb.client.SetPods(ctx, pods); err != nil {
		return fmt.Errorf("machine %s: %w", machine, err)
	}
	return nil
}

// SetNetwork hands machine its Network (PUT /v1/network); the agent has
// applied it (routes, Service rules, DNS) when this returns nil.
func (f *Fleet) SetNetwork(ctx context.Context, machine string, n api.Network) error {
	mb, err := f.member(machine)
	if err != nil {
		return err
	}
	if err := mb.client.SetNetwork(ctx, n); err != nil {
		return fmt.Errorf("machine %s: set network: %w", machine, err)
	}
	return nil
}

// Client is the agent client of machine, for logs, exec and events.
func (f *Fleet) Client(machine string) (*agentclient.Client, error) {
	mb, err := f.member(machine)
	if err != nil {
		return nil, err
	}
	return mb.client, nil
}

// Close closes every connection.
func (f *Fleet) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	for _, mb := range f.machines {
		mb.close()
	}
	clear(f.machines)
	return nil
}
