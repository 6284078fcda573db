package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"berth.dev/berth/nodes/api"
)

// Defaults of Options.
const (
	DefaultRelistInterval = time.Second
	DefaultResyncInterval = 10 * time.Second
	// maxRuntimeRetry bounds the wait between attempts while the runtime
	// fails (containerd restarting).
	maxRuntimeRetry = 30 * time.Second
)

// Options configure a Manager.
type Options struct {
	// Runtime runs the containers. Required.
	Runtime Runtime
	// StateDir holds the persisted desired set and, unless the runtime's
	// sandbox names one, each pod's directory. Required.
	StateDir string
	// LogDir holds container logs, as the kubelet lays them out:
	// <namespace>_<name>_<uid>/<container>/<attempt>.log. Required.
	LogDir string
	// NodeName names the machine in NodeInfo.
	NodeName string
	// Clock is the source of time; the wall clock when nil.
	Clock Clock
	// Logger; discarded when nil.
	Logger *slog.Logger
	// RelistInterval is how often the runtime is listed to notice exits
	// (DefaultRelistInterval when zero).
	RelistInterval time.Duration
	// ResyncInterval is how often every pod is looked at again even when
	// nothing was noticed (DefaultResyncInterval when zero).
	ResyncInterval time.Duration
	// Reserved is kept back from capacity for the system: allocatable is
	// capacity minus Reserved (cpu 100m, memory 256Mi when nil).
	Reserved corev1.ResourceList
	// MaxPods is the pod capacity reported (110 when zero).
	MaxPods int
	// AgentVersion and RuncVersion are reported in NodeInfo.
	AgentVersion string
	RuncVersion  string
	// EventBuffer bounds the events kept (1024 when zero).
	EventBuffer int
	// MaxImportSize bounds an image archive that ImportImages receives,
	// in bytes (DefaultMaxImportSize when zero or less).
	MaxImportSize int64
	// Network applies the Network the controller sets (PUT /v1/network);
	// nil keeps and reports it without applying anything.
	Network NetworkApplier
}

// Validate checks the options.
func (o *Options) Validate() error {
	switch {
	case o.Runtime == nil:
		return errors.New("agent options: Runtime is required")
	case o.StateDir == "":
		return errors.New("agent options: StateDir is required")
	case o.LogDir == "":
		return errors.New("agent options: LogDir is required")
	case o.RelistInterval < 0, o.ResyncInterval < 0, o.MaxPods < 0, o.EventBuffer < 0:
		return errors.New("agent options: intervals and sizes must not be negative")
	}
	for name, q := range o.Reserved {
		if q.Sign() < 0 {
			return fmt.Errorf("agent options: reserved %s must not be negative", name)
		}
	}
	return nil
}

func (o *Options) defaults() {
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.RelistInterval == 0 {
		o.RelistInterval = DefaultRelistInterval
	}
	if o.ResyncInterval == 0 {
		o.ResyncInterval = DefaultResyncInterval
	}
	if o.Reserved == nil {
		o.Reserved = corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("100m"),
			corev1.ResourceMemory: resource.MustParse("256Mi"),
		}
	}
	if o.MaxPods == 0 {
		o.MaxPods = 110
	}
	if o.AgentVersion == "" {
		o.AgentVersion = "dev"
	}
	if o.MaxImportSize <= 0 {
		o.MaxImportSize = DefaultMaxImportSize
	}
}

// Manager runs the node's pods: it keeps the desired set, drives the
// runtime towards it with one worker per pod, probes containers and
// reports what it observes. It implements httpapi.Backend.
type Manager struct {
	opts    Options
	rt      Runtime
	clock   Clock
	log     *slog.Logger
	events  *eventLog
	metrics *Metrics
	prober  *prober
	usage   usageMeter
	started time.Time

	// setMu serializes SetPods (validate, compare, persist, apply).
	setMu sync.Mutex
	// netSetMu serializes SetNetwork and its retries.
	netSetMu sync.Mutex

	mu      sync.Mutex
	state   persisted
	net     netState
	workers map[string]*podWorker // by pod key
	pending []*podWorker          // created, not yet started by Run
	running bool
	cache   relistCache
	// runtimeVersion is containerd's version, as last seen by Node.
	runtimeVersion string
	// desiredDigest is state.Desired.Digest(), kept with it.
	desiredDigest string

	wake   chan struct{} // Run: start pending workers
	relist chan struct{} // Run: list the runtime now
	done   chan struct{} // closed when Run returns

	// nodeIP is the first of the Network's NodeIPs ("" for none): the
	// address of hostNetwork pods, as the kubelet reports it. Atomic, as
	// statuses are computed under the workers' locks.
	nodeIP atomic.Pointer[string]

	// busy counts work queued or in progress (pokes, relists, probes),
	// so that tests can wait until the manager has settled.
	busy atomic.Int64

	// runProbe runs one probe or hook handler; tests replace it.
	runProbe probeFunc
}

// New makes a Manager and loads the persisted desired set. Nothing runs
// until Run.
func New(opts Options) (*Manager, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts.defaults()
	st, err := loadState(opts.StateDir)
	if err != nil {
		return nil, err
	}
	pn, err := loadNetwork(opts.StateDir)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		opts:    opts,
		rt:      opts.Runtime,
		clock:   opts.Clock,
		log:     opts.Logger.With("component", "agent"),
		events:  newEventLog(opts.EventBuffer),
		metrics: newMetrics(),
		state:   st,
		net:     netState{persisted: pn, digest: pn.Network.Digest()},
		workers: map[string]*podWorker{},
		// Of the loaded set; with no set yet, the digest of none.
		desiredDigest: st.Desired.Digest(),
		wake:          make(chan struct{}, 1),
		relist:        make(chan struct{}, 1),
		done:          make(chan struct{}),
	}
	m.started = m.clock.Now()
	m.setNodeIP(pn.Network)
	m.runProbe = defaultRunProbe
	m.prober = newProber(m)
	m.metrics.pods = m.podPhases
	for i := range st.Desired.Pods {
		p := &st.Desired.Pods[i]
		m.workerLocked(p.Key()).setDesired(p, acceptedHashes(st, p))
	}
	return m, nil
}

// Metrics returns the manager's metrics, for the HTTP layer to register.
func (m *Manager) Metrics() *Metrics { return m.metrics }

// kick delivers a "look again" on ch unless one is already waiting there,
// counting it as pending work until the receiver has dealt with it.
func (m *Manager) kick(ch chan struct{}) {
	m.busy.Add(1)
	select {
	case ch <- struct{}{}:
	default:
		m.busy.Add(-1)
	}
}

// Run drives the pods until ctx ends. Pods keep running when it returns:
// the next agent adopts them.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.running {
		m.mu.Unlock()
		return errors.New("agent: Run called twice")
	}
	m.running = true
	m.mu.Unlock()
	defer close(m.done)

	// After the workers have returned (deferred calls run last first):
	// they may start probes until then.
	defer m.prober.stopAll()
	var wg sync.WaitGroup
	defer wg.Wait()
	timers := &runTimers{}
	defer timers.stop()

	m.log.Info("agent starting", "pods", len(m.state.Desired.Pods), "generation", m.state.Desired.Generation)
	// The persisted Network first: pods made from here on join the pod
	// network, and the Services they serve are routed.
	m.retryNetwork(ctx)
	m.kick(m.relist)
	m.scheduleResync(ctx, timers)
	failures := 0
	listed := false // workers start once the runtime has been listed: they adopt what is there
	for {
		if listed {
			m.startPending(ctx, &wg)
		}
		select {
		case <-ctx.Done():
			m.log.Info("agent stopping; pods keep running")
			return nil
		case <-m.wake:
			m.busy.Add(-1)
		case <-m.relist:
			err := m.relistOnce(ctx)
			next := m.opts.RelistInterval
			if err != nil {
				failures++
				next = min(m.opts.RelistInterval<<min(failures, 5), maxRuntimeRetry)
				if failures == 1 {
					m.log.Warn("runtime unavailable; retrying", "err", err)
				}
			} else {
				listed = true
				if failures > 0 {
					m.log.Info("runtime available again; reconciling every pod", "after_failures", failures)
					failures = 0
					m.pokeAll()
				}
			}
			timers.setRelist(m.clock.AfterFunc(next, func() { m.kick(m.relist) }))
			m.busy.Add(-1)
		}
	}
}

type runTimers struct {
	mu             sync.Mutex
	relist, resync Timer
	stopped        bool
}

func (t *runTimers) setRelist(x Timer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		x.Stop()
		return
	}
	t.relist = x
}

func (t *runTimers) setResync(x Timer) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		x.Stop()
		return false
	}
	t.resync = x
	return true
}

func (t *runTimers) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopped = true
	for _, x := range []Timer{t.relist, t.resync} {
		if x != nil {
			x.Stop()
		}
	}
}

func (m *Manager) scheduleResync(ctx context.Context, timers *runTimers) {
	timers.setResync(m.clock.AfterFunc(m.opts.ResyncInterval, func() {
		m.retryNetwork(ctx)
		m.pokeAll()
		m.scheduleResync(ctx, timers)
	}))
}

func (m *Manager) pokeAll() {
	m.mu.Lock()
	ws := make([]*podWorker, 0, len(m.workers))
	for _, w := range m.workers {
		ws = append(ws, w)
	}
	m.mu.Unlock()
	for _, w := range ws {
		w.kick()
	}
}

func (m *Manager) startPending(ctx context.Context, wg *sync.WaitGroup) {
	m.mu.Lock()
	pending := m.pending
	m.pending = nil
	m.mu.Unlock()
	for _, w := range pending {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(ctx)
		}()
	}
}

// workerLocked returns the worker of key, creating it (m.mu held).
func (m *Manager) workerLocked(key string) *podWorker {
	if w, ok := m.workers[key]; ok {
		return w
	}
	w := newPodWorker(m, key)
	m.workers[key] = w
	m.pending = append(m.pending, w)
	w.kick()
	m.kick(m.wake)
	return w
}

// retire removes w when it has nothing left to do: not desired and nothing
// of it observed. It reports whether the worker should end.
func (m *Manager) retire(w *podWorker) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !w.idle() {
		return false
	}
	if m.workers[w.key] == w {
		delete(m.workers, w.key)
	}
	m.metrics.forgetPod(w.key)
	return true
}

// SetPods replaces the desired pod set: see httpapi.Backend.
func (m *Manager) SetPods(ctx context.Context, d api.DesiredPods) error {
	if err := validateDesired(d); err != nil {
		return err
	}
	m.setMu.Lock()
	defer m.setMu.Unlock()

	m.mu.Lock()
	cur := m.state
	m.mu.Unlock()
	if cur.Set {
		if d.Generation < cur.Desired.Generation {
			return fmt.Errorf("%w: generation %d is older than the current %d", api.ErrConflict, d.Generation, cur.Desired.Generation)
		}
		if d.Generation == cur.Desired.Generation {
			if samePods(d.Pods, cur.Desired.Pods) {
				return nil
			}
			return fmt.Errorf("%w: generation %d is already set, with other pods", api.ErrConflict, d.Generation)
		}
	}
	next := persisted{Set: true, Desired: cloneDesired(d), InPlace: inPlaceHashes(cur, d)}
	if err := saveState(m.opts.StateDir, next); err != nil {
		return err
	}
	m.log.Info("desired pods set", "generation", d.Generation, "pods", len(d.Pods))
	m.event(api.EventNormal, "DesiredPods", "", "", fmt.Sprintf("generation %d: %d pods", d.Generation, len(d.Pods)))

	m.mu.Lock()
	m.state, m.desiredDigest = next, next.Desired.Digest()
	want := map[string]bool{}
	for i := range next.Desired.Pods {
		p := &next.Desired.Pods[i]
		want[p.Key()] = true
		m.workerLocked(p.Key()).setDesired(p, acceptedHashes(next, p))
	}
	for key, w := range m.workers {
		if !want[key] {
			w.setDesired(nil, nil)
		}
	}
	m.mu.Unlock()
	return nil
}

func cloneDesired(d api.DesiredPods) api.DesiredPods {
	b, err := json.Marshal(d)
	if err != nil {
		return d
	}
	var out api.DesiredPods
	if json.Unmarshal(b, &out) != nil {
		return d
	}
	return out
}

func samePods(a, b []api.Pod) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

// inPlaceHashes carries, for each pod of d, the hashes of earlier specs
// that differ from it only in files content (applied in place).
func inPlaceHashes(cur persisted, d api.DesiredPods) map[string][]string {
	old := map[string]*api.Pod{}
	for i := range cur.Desired.Pods {
		p := &cur.Desired.Pods[i]
		old[p.UID] = p
	}
	out := map[string][]string{}
	for i := range d.Pods {
		p := &d.Pods[i]
		o, ok := old[p.UID]
		if !ok || o.Key() != p.Key() {
			continue
		}
		var hs []string
		if o.Hash == p.Hash || onlyFilesDiffer(o, p) {
			hs = append(hs, cur.InPlace[p.UID]...)
			if o.Hash != p.Hash {
				hs = append(hs, o.Hash)
			}
		}
		slices.Sort(hs)
		hs = slices.Compact(hs)
		if len(hs) > 0 {
			out[p.UID] = hs
		}
	}
	return out
}

// onlyFilesDiffer reports whether a and b are the same pod but for their
// hash and the content of their files volumes.
func onlyFilesDiffer(a, b *api.Pod) bool {
	strip := func(p *api.Pod) string {
		c := *p
		c.Hash = ""
		c.Spec.Volumes = slices.Clone(p.Spec.Volumes)
		for i := range c.Spec.Volumes {
			if f := c.Spec.Volumes[i].Files; f != nil {
				c.Spec.Volumes[i].Files = &api.FilesVolume{Secret: f.Secret}
			}
		}
		j, _ := json.Marshal(c)
		return string(j)
	}
	return strip(a) == strip(b)
}

func acceptedHashes(st persisted, p *api.Pod) map[string]bool {
	out := map[string]bool{p.Hash: true}
	for _, h := range st.InPlace[p.UID] {
		out[h] = true
	}
	return out
}

// Pods returns the observed status of every pod, sorted by key; a pod
// being replaced appears twice, the terminating incarnation first.
func (m *Manager) Pods(ctx context.Context) ([]api.PodStatus, error) {
	m.mu.Lock()
	ws := make([]*podWorker, 0, len(m.workers))
	for _, w := range m.workers {
		ws = append(ws, w)
	}
	m.mu.Unlock()
	sort.Slice(ws, func(i, j int) bool { return ws[i].key < ws[j].key })
	now := m.clock.Now()
	out := []api.PodStatus{}
	for _, w := range ws {
		out = append(out, w.statuses(now)...)
	}
	return out, nil
}

// podPhases counts pods by phase, for the metrics.
func (m *Manager) podPhases() map[api.PodPhase]int {
	sts, _ := m.Pods(context.Background())
	out := map[api.PodPhase]int{}
	for _, s := range sts {
		out[s.Phase]++
	}
	return out
}

// Events: see httpapi.Backend.
func (m *Manager) Events(ctx context.Context, since time.Time, follow bool) (<-chan api.Event, error) {
	return m.events.stream(ctx, since, follow), nil
}

// event records an event and logs it.
func (m *Manager) event(typ, reason, pod, container, msg string) {
	m.events.add(api.Event{Time: m.clock.Now(), Type: typ, Reason: reason, Pod: pod, Container: container, Message: msg})
	lvl := slog.LevelInfo
	if typ == api.EventWarning {
		lvl = slog.LevelWarn
	}
	m.log.Log(context.Background(), lvl, "event", "reason", reason, "pod", pod, "container", container, "message", msg)
}

// worker returns the worker of key, or nil.
func (m *Manager) worker(key string) *podWorker {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.workers[key]
}

// Exec: see httpapi.Backend.
func (m *Manager) Exec(ctx context.Context, req api.ExecRequest) (int, error) {
	if len(req.Command) == 0 {
		return 0, fmt.Errorf("%w: exec: command is empty", api.ErrInvalid)
	}
	w := m.worker(req.Pod)
	if w == nil {
		return 0, fmt.Errorf("%w: pod %s", api.ErrNotFound, req.Pod)
	}
	name, err := w.containerName(req.Container)
	if err != nil {
		return 0, err
	}
	inst, ok := w.current(name)
	if !ok || inst.State != StateRunning {
		return 0, fmt.Errorf("%w: container %s of pod %s is not running", api.ErrConflict, name, req.Pod)
	}
	return m.rt.Exec(ctx, inst.ID, req)
}

var _ interface {
	SetPods(context.Context, api.DesiredPods) error
	Pods(context.Context) ([]api.PodStatus, error)
	Node(context.Context) (api.NodeInfo, error)
	Events(context.Context, time.Time, bool) (<-chan api.Event, error)
} = (*Manager)(nil)
