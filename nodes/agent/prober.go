package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/agent/probe"
	"berth.dev/berth/nodes/api"
)

// probeFunc runs one probe attempt.
type probeFunc func(ctx context.Context, h *corev1.ProbeHandler, t probe.Target, timeout time.Duration) (bool, string)

func defaultRunProbe(ctx context.Context, h *corev1.ProbeHandler, t probe.Target, timeout time.Duration) (bool, string) {
	return probe.Run(ctx, h, t, timeout)
}

// runHook runs a lifecycle hook (preStop).
func (m *Manager) runHook(ctx context.Context, h *corev1.LifecycleHandler, t probe.Target, timeout time.Duration) (bool, string) {
	if h.Sleep != nil {
		// Sleep on the manager's clock, so that tests need not wait.
		d := time.Duration(h.Sleep.Seconds) * time.Second
		done := make(chan struct{})
		tm := m.clock.AfterFunc(d, func() { close(done) })
		defer tm.Stop()
		select {
		case <-done:
			return true, ""
		case <-ctx.Done():
			return false, "sleep interrupted: " + ctx.Err().Error()
		}
	}
	return probe.RunLifecycle(ctx, h, t, timeout)
}

type probeKind int

const (
	startupProbe probeKind = iota
	livenessProbe
	readinessProbe
)

func (k probeKind) String() string {
	return [...]string{"Startup", "Liveness", "Readiness"}[k]
}

type probeKey struct {
	id   string
	kind probeKind
}

// probeTarget is a running container instance to probe.
type probeTarget struct {
	pod       *api.Pod
	c         *corev1.Container
	id        string
	startedAt time.Time
	target    probe.Target
}

// prober runs the probes of running containers, one worker per container
// instance and probe kind, on the manager's clock, and keeps their
// results. A changed result pokes the pod's worker; it never acts itself.
type prober struct {
	m       *Manager
	mu      sync.Mutex
	workers map[probeKey]*probeWorker
	byPod   map[string]map[probeKey]bool
	results map[probeKey]bool // absent: no result yet (the kind's initial value)
}

type probeWorker struct {
	key    probeKey
	podKey string
	spec   corev1.Probe // with defaults
	t      probeTarget

	// Guarded by prober.mu.
	timer   Timer
	stopped bool
	last    bool
	run     int
	hasLast bool
	// eager: the attempt scheduled next is an early retry (see eagerDelay).
	eager bool
	// eagerUntil ends the early retries: the end of the first period.
	eagerUntil time.Time
	// eagerStep is the delay of the next early retry.
	eagerStep time.Duration
}

// Early retries. A readiness or startup probe of a fresh container that
// fails its first attempt is retried from eagerFirst, doubling up to
// eagerMax, until its first period has passed: a server that listens 30 ms
// after starting is Ready then, not a whole period later as with kubelet.
// These attempts only ever bring a success forward: their failures count
// toward no threshold and raise no event, so failureThreshold x period
// still bounds a startup exactly as in Kubernetes.
const (
	eagerFirst = 25 * time.Millisecond
	eagerMax   = 100 * time.Millisecond
)

// eagerNext is the delay of the next early retry of w after a failure at
// now, or false when the early retries are over.
func (w *probeWorker) eagerNext(now time.Time) (time.Duration, bool) {
	if w.key.kind == livenessProbe || w.spec.SuccessThreshold != 1 || w.hasLast && w.last {
		return 0, false
	}
	d := w.eagerStep
	if d == 0 {
		d = eagerFirst
	}
	if !now.Add(d).Before(w.eagerUntil) {
		return 0, false
	}
	w.eagerStep = min(2*d, eagerMax)
	return d, true
}

func newProber(m *Manager) *prober {
	return &prober{m: m, workers: map[probeKey]*probeWorker{}, byPod: map[string]map[probeKey]bool{}, results: map[probeKey]bool{}}
}

func withDefaults(p corev1.Probe) corev1.Probe {
	if p.PeriodSeconds == 0 {
		p.PeriodSeconds = 10
	}
	if p.TimeoutSeconds == 0 {
		p.TimeoutSeconds = 1
	}
	if p.SuccessThreshold == 0 {
		p.SuccessThreshold = 1
	}
	if p.FailureThreshold == 0 {
		p.FailureThreshold = 3
	}
	return p
}

// syncPod makes the pod's probe workers those of targets: new running
// instances get workers, gone ones lose them and their results.
func (p *prober) syncPod(podKey string, targets []probeTarget) {
	want := map[probeKey]probeTarget{}
	specs := map[probeKey]*corev1.Probe{}
	for _, t := range targets {
		for kind, sp := range []*corev1.Probe{t.c.StartupProbe, t.c.LivenessProbe, t.c.ReadinessProbe} {
			if sp != nil {
				k := probeKey{t.id, probeKind(kind)}
				want[k] = t
				specs[k] = sp
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for k := range p.byPod[podKey] {
		if _, ok := want[k]; !ok {
			if w := p.workers[k]; w != nil {
				w.stopped = true
				if w.timer != nil {
					w.timer.Stop()
				}
			}
			delete(p.workers, k)
			delete(p.results, k)
			delete(p.byPod[podKey], k)
		}
	}
	if len(want) == 0 {
		delete(p.byPod, podKey)
		return
	}
	if p.byPod[podKey] == nil {
		p.byPod[podKey] = map[probeKey]bool{}
	}
	now := p.m.clock.Now()
	for k, t := range want {
		if _, ok := p.workers[k]; ok {
			continue
		}
		w := &probeWorker{key: k, podKey: podKey, spec: withDefaults(*specs[k]), t: t}
		p.workers[k] = w
		p.byPod[podKey][k] = true
		firstAt := t.startedAt.Add(time.Duration(w.spec.InitialDelaySeconds) * time.Second)
		w.eagerUntil = firstAt.Add(time.Duration(w.spec.PeriodSeconds) * time.Second)
		p.scheduleLocked(w, max(firstAt.Sub(now), 0))
	}
}

// stopAll stops every worker: the manager's Run has returned, and no
// probe may run after it.
func (p *prober) stopAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, w := range p.workers {
		w.stopped = true
		if w.timer != nil {
			w.timer.Stop()
		}
	}
	clear(p.workers)
	clear(p.byPod)
	clear(p.results)
}

func (p *prober) scheduleLocked(w *probeWorker, d time.Duration) {
	if w.stopped {
		return
	}
	w.timer = p.m.clock.AfterFunc(d, func() {
		p.m.busy.Add(1)
		go func() {
			defer p.m.busy.Add(-1)
			p.runOnce(w)
		}()
	})
}

// runOnce probes once and records the result with the kubelet's
// thresholds.
func (p *prober) runOnce(w *probeWorker) {
	p.mu.Lock()
	if w.stopped {
		p.mu.Unlock()
		return
	}
	startupKey := probeKey{w.key.id, startupProbe}
	startupDone := p.results[startupKey]
	hasStartup := w.t.c.StartupProbe != nil
	period := time.Duration(w.spec.PeriodSeconds) * time.Second
	switch {
	case w.key.kind == startupProbe && startupDone:
		// Started: the startup probe has done its job.
		p.mu.Unlock()
		return
	case w.key.kind != startupProbe && hasStartup && !startupDone:
		// Startup gates liveness and readiness.
		p.scheduleLocked(w, period)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()

	timeout := time.Duration(w.spec.TimeoutSeconds) * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), timeout+time.Second)
	go func() {
		select {
		case <-p.m.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	ok, msg := p.m.runProbe(ctx, &w.spec.ProbeHandler, w.t.target, timeout)
	cancel()

	p.mu.Lock()
	if w.eager && !ok {
		// An early retry's failure is not counted: retry again soon, or
		// go back to the period once the first one has passed.
		w.eager = false
		if d, more := w.eagerNext(p.m.clock.Now()); more {
			w.eager = true
			p.scheduleLocked(w, d)
		} else {
			p.scheduleLocked(w, max(w.eagerUntil.Sub(p.m.clock.Now()), 0))
		}
		p.mu.Unlock()
		p.m.metrics.probes.WithLabelValues(w.key.kind.String(), "failure").Inc()
		return
	}
	w.eager = false
	p.mu.Unlock()

	result := "success"
	if !ok {
		result = "failure"
		p.m.event(api.EventWarning, "Unhealthy", w.podKey, w.t.c.Name, fmt.Sprintf("%s probe failed: %s", w.key.kind, msg))
	}
	p.m.metrics.probes.WithLabelValues(w.key.kind.String(), result).Inc()

	p.mu.Lock()
	if w.stopped {
		p.mu.Unlock()
		return
	}
	if w.hasLast && w.last == ok {
		w.run++
	} else {
		w.last, w.run, w.hasLast = ok, 1, true
	}
	changed := false
	cur, has := p.results[w.key]
	if (ok && w.run >= int(w.spec.SuccessThreshold)) || (!ok && w.run >= int(w.spec.FailureThreshold)) {
		if !has || cur != ok {
			p.results[w.key] = ok
			changed = true
		}
	}
	// A failed liveness or startup probe holds until the container is
	// restarted (a new instance gets new workers).
	hold := !ok && changed && w.key.kind != readinessProbe
	switch d, eager := w.eagerNext(p.m.clock.Now()); {
	case hold:
	case !ok && eager:
		w.eager = true
		p.scheduleLocked(w, d)
	default:
		p.scheduleLocked(w, period)
	}
	if changed && ok && w.key.kind == startupProbe {
		// Started: liveness and readiness begin now, not a period later.
		for _, kind := range []probeKind{livenessProbe, readinessProbe} {
			o := p.workers[probeKey{w.key.id, kind}]
			if o == nil || o.stopped {
				continue
			}
			if o.timer != nil {
				o.timer.Stop()
			}
			o.eager = false
			o.eagerUntil = p.m.clock.Now().Add(time.Duration(o.spec.PeriodSeconds) * time.Second)
			p.scheduleLocked(o, 0)
		}
	}
	p.mu.Unlock()
	if changed {
		if wk := p.m.worker(w.podKey); wk != nil {
			wk.kick()
		}
	}
}

// view is what the probes say of instance id of container c.
func (p *prober) view(id string, c *corev1.Container) probeView {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.viewLocked(id, c)
}

func (p *prober) viewLocked(id string, c *corev1.Container) probeView {
	v := probeView{Started: true, Ready: true}
	if c == nil {
		return v
	}
	if c.StartupProbe != nil {
		v.Started = p.results[probeKey{id, startupProbe}]
	}
	if c.ReadinessProbe != nil {
		v.Ready = p.results[probeKey{id, readinessProbe}]
	}
	return v
}

// viewFunc answers computeStatus's questions about probes.
func (p *prober) viewFunc() func(id string, c *corev1.Container) probeView {
	return p.view
}

// failed reports whether instance id failed its liveness or startup probe,
// and which.
func (p *prober) failed(id string) (bool, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r, ok := p.results[probeKey{id, livenessProbe}]; ok && !r {
		return true, "failed liveness probe"
	}
	if r, ok := p.results[probeKey{id, startupProbe}]; ok && !r {
		return true, "failed startup probe"
	}
	return false, ""
}
