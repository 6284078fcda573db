package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/agent/probe"
	"berth.dev/berth/nodes/api"
)

// Termination defaults, as the kubelet's.
const (
	defaultGrace = 30 * time.Second
	minGrace     = 2 * time.Second
	// retryLater is when a failed step that has no backoff of its own
	// (a mount, a sandbox) is tried again.
	retryLater = 10 * time.Second
)

// podWorker owns one pod key: every change, exit, probe result or timer
// only pokes it, and each sync compares what is desired with what the
// runtime has, and acts. It handles the pod's incarnations in turn: one
// that is no longer desired (removed, or replaced by a new UID or hash) is
// stopped and removed before the desired one starts.
type podWorker struct {
	m    *Manager
	key  string
	poke chan struct{}

	// Owned by the worker goroutine.
	crash    *backoff // by uid/container: restarts
	pull     *backoff // by uid/image: image pulls
	startErr *backoff // by uid/container: create and start errors
	pullMsg  map[string]string
	requeue  Timer
	failures int               // consecutive runtime failures
	acted    bool              // this sync changed something: observe again before reporting
	backOff  map[string]string // container -> exited instance a BackOff event was sent for
	lastErr  map[string]string // event dedup: what -> last message

	mu         sync.Mutex // guards what status reads
	desired    *api.Pod
	accepted   map[string]bool
	specs      map[string]*api.Pod // by uid: the last spec seen (preStop and grace of a replaced pod)
	ctrs       []ContainerState    // last observed, every incarnation
	sandboxes  map[string]Sandbox  // by uid
	known      map[string]bool     // container ids to look at even before a relist lists them
	waiting    map[string]waitInfo // by container name, desired incarnation
	podReason  string
	podMsg     string
	startedAt  map[string]time.Time // by uid
	oldSandbox map[string]bool      // container ids that ran in an earlier sandbox of the pod
}

func newPodWorker(m *Manager, key string) *podWorker {
	return &podWorker{
		m:          m,
		key:        key,
		poke:       make(chan struct{}, 1),
		crash:      newBackoff(),
		pull:       newBackoff(),
		startErr:   newBackoff(),
		pullMsg:    map[string]string{},
		backOff:    map[string]string{},
		lastErr:    map[string]string{},
		specs:      map[string]*api.Pod{},
		sandboxes:  map[string]Sandbox{},
		known:      map[string]bool{},
		waiting:    map[string]waitInfo{},
		startedAt:  map[string]time.Time{},
		oldSandbox: map[string]bool{},
	}
}

func (w *podWorker) kick() { w.m.kick(w.poke) }

func (w *podWorker) setDesired(p *api.Pod, accepted map[string]bool) {
	w.mu.Lock()
	w.desired, w.accepted = p, accepted
	if p != nil {
		w.specs[p.UID] = p
	}
	w.mu.Unlock()
	w.kick()
}

func (w *podWorker) getDesired() (*api.Pod, map[string]bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.desired, w.accepted
}

// idle: not desired, nothing observed (m.mu held by the caller).
func (w *podWorker) idle() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.desired == nil && len(w.ctrs) == 0 && len(w.sandboxes) == 0 && len(w.poke) == 0
}

func (w *podWorker) run(ctx context.Context) {
	defer func() {
		if w.requeue != nil {
			w.requeue.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.poke:
		}
		start := time.Now()
		next := w.sync(ctx)
		w.m.metrics.syncDuration.Observe(time.Since(start).Seconds())
		if w.requeue != nil {
			w.requeue.Stop()
			w.requeue = nil
		}
		if !next.IsZero() {
			w.requeue = w.m.clock.AfterFunc(max(next.Sub(w.m.clock.Now()), 0), w.kick)
		}
		retired := ctx.Err() == nil && w.m.retire(w)
		w.m.busy.Add(-1)
		if retired {
			w.m.prober.syncPod(w.key, nil)
			return
		}
	}
}

// fits: the container belongs to the desired incarnation.
func fits(desired *api.Pod, accepted map[string]bool, c ContainerState) bool {
	return desired != nil && c.Labels[api.LabelPodUID] == desired.UID && accepted[c.Labels[api.LabelPodHash]]
}

// observe asks the runtime for the state of every container of this pod
// (those the last relist listed, and those this worker made since).
func (w *podWorker) observe(ctx context.Context) ([]ContainerState, map[string]Sandbox, error) {
	ids, sbs := w.m.cached(w.key)
	w.mu.Lock()
	for id := range w.known {
		ids = append(ids, id)
	}
	for uid, sb := range w.sandboxes {
		if _, ok := sbs[uid]; !ok {
			sbs[uid] = sb
		}
	}
	w.mu.Unlock()
	slices.Sort(ids)
	ids = slices.Compact(ids)

	var ctrs []ContainerState
	var gone []string
	for _, id := range ids {
		c, err := w.m.rt.ContainerStatus(ctx, id)
		if errors.Is(err, api.ErrNotFound) {
			gone = append(gone, id)
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("container %s status: %w", id, err)
		}
		if c.Labels[api.LabelManaged] != "true" || c.Labels[api.LabelPodName] != w.key {
			continue
		}
		ctrs = append(ctrs, c)
	}
	w.mu.Lock()
	for _, id := range gone {
		delete(w.known, id)
	}
	for _, c := range ctrs {
		w.known[c.ID] = true
	}
	w.ctrs = ctrs
	w.sandboxes = sbs
	w.mu.Unlock()
	if len(gone) > 0 {
		w.m.forget(gone, nil)
	}
	return ctrs, sbs, nil
}

// sync is one look at the pod: it acts and returns when it wants to look
// again (zero: only when poked).
func (w *podWorker) sync(ctx context.Context) time.Time {
	now := w.m.clock.Now()
	desired, accepted := w.getDesired()
	ctrs, sbs, err := w.observe(ctx)
	if err != nil {
		return w.runtimeFailed("observe", err, now)
	}

	// 1. Whatever is not the desired incarnation goes first.
	var stale []ContainerState
	staleUIDs := map[string]bool{}
	for _, c := range ctrs {
		if !fits(desired, accepted, c) {
			stale = append(stale, c)
			staleUIDs[c.Labels[api.LabelPodUID]] = true
		}
	}
	for uid := range sbs {
		if desired == nil || uid != desired.UID {
			staleUIDs[uid] = true
		}
	}
	if len(staleUIDs) > 0 {
		if err := w.killStale(ctx, stale, staleUIDs); err != nil {
			return w.runtimeFailed("stop pod", err, now)
		}
		if ctrs, sbs, err = w.observe(ctx); err != nil {
			return w.runtimeFailed("observe", err, now)
		}
	}
	if desired == nil {
		w.failures = 0
		return time.Time{}
	}
	ctrs = slices.DeleteFunc(ctrs, func(c ContainerState) bool { return !fits(desired, accepted, c) })
	w.noteStarted(desired.UID, ctrs, now)

	// 2. A terminal pod only has its leftovers stopped.
	st := w.status(desired, now)
	if terminal(st.Phase) {
		reason := "pod completed"
		if st.Reason == reasonDeadlineExceeded {
			reason = st.Message
		}
		if err := w.stopRunning(ctx, desired, ctrs, reason); err != nil {
			return w.runtimeFailed("stop containers", err, now)
		}
		w.m.prober.syncPod(w.key, nil)
		w.failures = 0
		return time.Time{}
	}
	next := time.Time{}
	if d := desired.Spec.ActiveDeadlineSeconds; d != nil {
		next = w.startedAtOf(desired.UID).Add(time.Duration(*d) * time.Second)
	}

	// 3. The sandbox; a lost network namespace (a reboot) means a new one.
	sb, ok := sbs[desired.UID]
	if ok && netnsGone(sb) {
		w.m.log.Info("pod sandbox lost; recreating", "pod", w.key, "netns", sb.NetNS)
		if err := w.stopRunning(ctx, desired, ctrs, "pod sandbox lost"); err != nil {
			return w.runtimeFailed("stop containers", err, now)
		}
		if desired.Spec.RestartPolicy == corev1.RestartPolicyNever && len(ctrs) > 0 {
			w.m.prober.syncPod(w.key, nil)
			return time.Time{}
		}
		if err := w.m.rt.RemoveSandbox(ctx, desired.UID); err != nil {
			return w.runtimeFailed("remove sandbox", err, now)
		}
		ok = false
	}
	if !ok {
		if desired.Spec.RestartPolicy == corev1.RestartPolicyNever && anyRan(ctrs) {
			// Never: containers that ran are not run again in a new sandbox.
			return next
		}
		nsb, err := w.m.rt.CreateSandbox(ctx, desired)
		if err != nil {
			w.setPodError("FailedCreatePodSandBox", err.Error())
			return w.runtimeFailed("create sandbox", err, now)
		}
		sb = nsb
		w.mu.Lock()
		w.sandboxes[desired.UID] = sb
		for _, c := range ctrs {
			w.oldSandbox[c.ID] = true // init containers run again in the new one
		}
		w.mu.Unlock()
	}

	// 4. Volumes, idempotently (files content is swapped in place).
	mounts, err := prepareVolumes(desired, w.podDir(desired.UID, sb))
	if err != nil {
		w.setPodError("FailedMount", err.Error())
		return earliest(next, now.Add(retryLater))
	}
	w.setPodError("", "")

	// 5. Containers.
	w.acted = false
	n := w.syncContainers(ctx, desired, sb, mounts, ctrs, now)
	if w.acted {
		// What the status shows is what is there now, not what was there
		// before acting.
		w.observe(ctx)
	}
	w.failures = 0
	return earliest(next, n)
}

func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero():
		return a
	case a.Before(b):
		return a
	}
	return b
}

func anyRan(ctrs []ContainerState) bool {
	for _, c := range ctrs {
		if c.State != StateCreated {
			return true
		}
	}
	return false
}

// runtimeFailed logs a failed runtime call and asks to look again after a
// growing delay (containerd restarting).
func (w *podWorker) runtimeFailed(what string, err error, now time.Time) time.Time {
	w.failures++
	if w.failures == 1 || w.failures%10 == 0 {
		w.m.log.Warn("pod sync failed", "pod", w.key, "step", what, "err", err, "failures", w.failures)
	}
	w.m.metrics.runtimeErrors.Inc()
	return now.Add(min(time.Second<<min(w.failures-1, 5), maxRuntimeRetry))
}

func (w *podWorker) setPodError(reason, msg string) {
	w.mu.Lock()
	changed := w.podReason != reason || w.podMsg != msg
	w.podReason, w.podMsg = reason, msg
	w.mu.Unlock()
	if changed && reason != "" {
		w.m.event(api.EventWarning, reason, w.key, "", msg)
	}
}

func (w *podWorker) setWaiting(name, reason, msg string) {
	w.mu.Lock()
	if reason == "" {
		delete(w.waiting, name)
	} else {
		w.waiting[name] = waitInfo{Reason: reason, Message: msg}
	}
	w.mu.Unlock()
}

func (w *podWorker) noteStarted(uid string, ctrs []ContainerState, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.startedAt[uid]
	if !ok {
		t = now
	}
	for _, c := range ctrs {
		if !c.CreatedAt.IsZero() && c.CreatedAt.Before(t) {
			t = c.CreatedAt
		}
	}
	w.startedAt[uid] = t
}

func (w *podWorker) startedAtOf(uid string) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.startedAt[uid]
}

// podDir is where the pod's volumes live: the sandbox's directory, or one
// under StateDir.
func (w *podWorker) podDir(uid string, sb Sandbox) string {
	if sb.Dir != "" {
		return sb.Dir
	}
	return filepath.Join(w.m.opts.StateDir, "pods", uid)
}

func netnsGone(sb Sandbox) bool {
	if sb.NetNS == "" {
		return false
	}
	_, err := os.Stat(sb.NetNS)
	return errors.Is(err, os.ErrNotExist)
}

// logDir is the kubelet's /var/log/pods/<namespace>_<name>_<uid>.
func (m *Manager) logDir(key, uid string) string {
	ns, name, _ := strings.Cut(key, "/")
	return filepath.Join(m.opts.LogDir, ns+"_"+name+"_"+uid)
}

func (m *Manager) logPath(key, uid, container string, attempt int32) string {
	return filepath.Join(m.logDir(key, uid), container, strconv.Itoa(int(attempt))+".log")
}

// syncContainers runs init containers in order, then app containers and
// sidecars, restarting per policy with backoff.
func (w *podWorker) syncContainers(ctx context.Context, pod *api.Pod, sb Sandbox, mounts map[string]string, ctrs []ContainerState, now time.Time) time.Time {
	by := instancesByName(ctrs)
	old := w.oldSandboxSet()
	next := time.Time{}
	var probed []probeTarget
	defer func() { w.m.prober.syncPod(w.key, probed) }()
	target := func(c *corev1.Container, inst ContainerState) {
		if inst.State == StateRunning && (c.LivenessProbe != nil || c.ReadinessProbe != nil || c.StartupProbe != nil) {
			probed = append(probed, probeTarget{pod: pod, c: c, id: inst.ID, startedAt: inst.StartedAt, target: w.target(pod, sb, c, inst.ID)})
		}
	}

	rp := pod.Spec.RestartPolicy
	if rp == "" {
		rp = corev1.RestartPolicyAlways
	}
	anyAppStarted := false // in the current sandbox
	for _, c := range pod.Spec.Containers {
		if l := by[c.Name]; len(l) > 0 && !old[l[0].ID] {
			anyAppStarted = true
		}
	}

	// Init containers, each to success (sidecars: to started), in order.
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		insts := by[c.Name]
		if isSidecar(c) {
			n, inst, ok := w.ensureRunning(ctx, pod, sb, mounts, c, insts, corev1.RestartPolicyAlways, now)
			next = earliest(next, n)
			if ok {
				target(c, inst)
			}
			if !ok || !w.m.prober.view(inst.ID, c).Started {
				if anyAppStarted {
					continue
				}
				return next
			}
			continue
		}
		if anyAppStarted {
			continue // initialized once: init containers are not run again
		}
		var cur []ContainerState
		if len(insts) > 0 && !old[insts[0].ID] {
			cur = insts
		}
		switch {
		case len(cur) > 0 && exited(cur[0]) && cur[0].ExitCode == 0 && cur[0].State != StateUnknown:
			continue // done
		case len(cur) > 0 && cur[0].State == StateRunning:
			return next // wait for it
		case len(cur) > 0 && exited(cur[0]) && rp == corev1.RestartPolicyNever:
			return next // failed: the pod fails
		}
		// Not run in this sandbox yet, or failed and to be run again.
		n := w.start(ctx, pod, sb, mounts, c, insts, cur, now)
		return earliest(next, n)
	}

	// App containers and sidecars, together.
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		n, inst, ok := w.ensureRunning(ctx, pod, sb, mounts, c, by[c.Name], rp, now)
		next = earliest(next, n)
		if ok {
			target(c, inst)
		}
	}
	return next
}

func (w *podWorker) oldSandboxSet() map[string]bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.oldSandbox)
}

// ensureRunning keeps one container running per policy: it restarts one
// that failed its liveness or startup probe, or exited, subject to
// backoff. It returns the running instance, if there is one.
func (w *podWorker) ensureRunning(ctx context.Context, pod *api.Pod, sb Sandbox, mounts map[string]string, c *corev1.Container, insts []ContainerState, rp corev1.RestartPolicy, now time.Time) (time.Time, ContainerState, bool) {
	if len(insts) == 0 {
		n := w.start(ctx, pod, sb, mounts, c, insts, nil, now)
		return n, w.runningInstance(c.Name), w.hasRunning(c.Name)
	}
	cur := insts[0]
	if cur.State == StateRunning {
		if failed, why := w.m.prober.failed(cur.ID); failed {
			w.m.event(api.EventNormal, "Killing", w.key, c.Name, fmt.Sprintf("Container %s %s, will be restarted", c.Name, why))
			w.acted = true
			if err := w.stopContainer(ctx, pod, c, cur, probeGrace(pod, c)); err != nil {
				return w.runtimeFailed("stop container", err, now), ContainerState{}, false
			}
			st, err := w.m.rt.ContainerStatus(ctx, cur.ID)
			if err != nil {
				return w.runtimeFailed("container status", err, now), ContainerState{}, false
			}
			cur = st
			insts = append([]ContainerState{st}, insts[1:]...)
		} else {
			w.setWaiting(c.Name, "", "")
			return time.Time{}, cur, true
		}
	}
	if cur.State == StateCreated {
		// Created but never started (the agent stopped in between).
		if err := w.m.rt.StartContainer(ctx, cur.ID); err != nil {
			w.m.rt.RemoveContainer(ctx, cur.ID)
			w.m.forget([]string{cur.ID}, nil)
			w.setWaiting(c.Name, reasonRunContainerError, err.Error())
			return now.Add(retryLater), ContainerState{}, false
		}
		w.m.event(api.EventNormal, "Started", w.key, c.Name, "Started container "+c.Name)
		w.kick()
		return time.Time{}, ContainerState{}, false
	}
	restart := rp == corev1.RestartPolicyAlways || (rp == corev1.RestartPolicyOnFailure && (cur.ExitCode != 0 || cur.State == StateUnknown))
	if !restart {
		w.setWaiting(c.Name, "", "")
		return time.Time{}, ContainerState{}, false
	}
	n := w.start(ctx, pod, sb, mounts, c, insts, insts, now)
	return n, w.runningInstance(c.Name), w.hasRunning(c.Name)
}

func (w *podWorker) runningInstance(name string) ContainerState {
	c, _ := w.current(name)
	return c
}

func (w *podWorker) hasRunning(name string) bool {
	c, ok := w.current(name)
	return ok && c.State == StateRunning
}

// start makes and starts the next instance of c. prev, when set, holds the
// exited instances this restarts (the newest first): the restart waits out
// the crash backoff.
func (w *podWorker) start(ctx context.Context, pod *api.Pod, sb Sandbox, mounts map[string]string, c *corev1.Container, insts, prev []ContainerState, now time.Time) time.Time {
	key := pod.UID + "/" + c.Name
	attempt := int32(0)
	if len(insts) > 0 {
		attempt = attemptOf(insts[0]) + 1
	}
	if len(prev) > 0 {
		last := prev[0]
		if in, until := w.crash.InBackOffSince(key, last.FinishedAt, now); in {
			msg := fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", w.crash.Get(key), c.Name, w.key)
			w.setWaiting(c.Name, reasonCrashLoopBackOff, msg)
			if w.backOff[c.Name] != last.ID {
				w.backOff[c.Name] = last.ID
				w.m.event(api.EventWarning, "BackOff", w.key, c.Name, "Back-off restarting failed container "+c.Name)
			}
			return until
		}
	}
	if in, until := w.startErr.InBackOffSinceUpdate(key, now); in {
		return until
	}

	img, next, ok := w.ensureImage(ctx, pod, c, now)
	if !ok {
		return next
	}
	if msg := checkNonRoot(pod, c, img); msg != "" {
		w.setWaiting(c.Name, reasonCreateContainerConfigError, msg)
		w.eventOnce(c.Name+"/config", api.EventWarning, "Failed", c.Name, "Error: "+msg)
		return now.Add(retryLater)
	}
	logPath := w.m.logPath(w.key, pod.UID, c.Name, attempt)
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		w.setWaiting(c.Name, reasonCreateContainerError, err.Error())
		return now.Add(retryLater)
	}
	if len(prev) > 0 {
		w.crash.Next(key, prev[0].FinishedAt, now)
	}
	w.acted = true
	id, err := w.m.rt.CreateContainer(ctx, ContainerConfig{
		Pod: pod, Sandbox: sb, Container: c, Image: img, Attempt: attempt, Mounts: mounts, LogPath: logPath,
	})
	if err != nil {
		w.setWaiting(c.Name, reasonCreateContainerError, err.Error())
		w.eventOnce(c.Name+"/create", api.EventWarning, "Failed", c.Name, "Error: "+err.Error())
		w.startErr.Next(key, now, now)
		_, until := w.startErr.InBackOffSinceUpdate(key, now)
		return until
	}
	w.mu.Lock()
	w.known[id] = true
	w.mu.Unlock()
	w.m.event(api.EventNormal, "Created", w.key, c.Name, "Created container "+c.Name)
	if err := w.m.rt.StartContainer(ctx, id); err != nil {
		w.m.rt.RemoveContainer(ctx, id)
		w.m.forget([]string{id}, nil)
		w.setWaiting(c.Name, reasonRunContainerError, err.Error())
		w.eventOnce(c.Name+"/start", api.EventWarning, "Failed", c.Name, "Error: "+err.Error())
		w.startErr.Next(key, now, now)
		_, until := w.startErr.InBackOffSinceUpdate(key, now)
		return until
	}
	w.startErr.Reset(key)
	delete(w.lastErr, c.Name+"/create")
	delete(w.lastErr, c.Name+"/start")
	delete(w.lastErr, c.Name+"/config")
	w.m.event(api.EventNormal, "Started", w.key, c.Name, "Started container "+c.Name)
	if attempt > 0 {
		w.m.metrics.restarts.WithLabelValues(w.key, c.Name).Inc()
	}
	w.setWaiting(c.Name, "", "")

	// Keep the instance before this one (lastState, logs --previous);
	// remove older ones and their logs.
	for _, old := range insts {
		if a := attemptOf(old); a < attempt-1 && old.State != StateRunning {
			if err := w.m.rt.RemoveContainer(ctx, old.ID); err == nil {
				w.m.forget([]string{old.ID}, nil)
				os.Remove(w.m.logPath(w.key, pod.UID, c.Name, a))
			}
		}
	}
	// Look again at once: the new instance's state belongs in the status.
	st, err := w.m.rt.ContainerStatus(ctx, id)
	if err == nil {
		w.mu.Lock()
		w.ctrs = append(w.ctrs, st)
		w.mu.Unlock()
		if exited(st) {
			w.kick() // done already (a quick init container): go on
		}
	}
	return time.Time{}
}

// eventOnce records an event unless the same one was the last for what.
func (w *podWorker) eventOnce(what, typ, reason, container, msg string) {
	if w.lastErr[what] == reason+msg {
		return
	}
	w.lastErr[what] = reason + msg
	w.m.event(typ, reason, w.key, container, msg)
}

// pullPolicy defaults as Kubernetes does: Always for :latest or no tag,
// else IfNotPresent.
func pullPolicy(c *corev1.Container) corev1.PullPolicy {
	if c.ImagePullPolicy != "" {
		return c.ImagePullPolicy
	}
	ref := c.Image
	if strings.Contains(ref, "@") {
		return corev1.PullIfNotPresent
	}
	name := ref[strings.LastIndex(ref, "/")+1:]
	tag := ""
	if i := strings.LastIndex(name, ":"); i >= 0 {
		tag = name[i+1:]
	}
	if tag == "" || tag == "latest" {
		return corev1.PullAlways
	}
	return corev1.PullIfNotPresent
}

// ensureImage makes c's image present, with the pull backoff of the
// kubelet: ErrImagePull on a failure, ImagePullBackOff while waiting.
func (w *podWorker) ensureImage(ctx context.Context, pod *api.Pod, c *corev1.Container, now time.Time) (Image, time.Time, bool) {
	key := pod.UID + "/" + c.Image
	if in, until := w.pull.InBackOffSinceUpdate(key, now); in {
		msg := fmt.Sprintf("Back-off pulling image %q", c.Image)
		if last := w.pullMsg[key]; last != "" {
			msg += ": " + last
		}
		w.setWaiting(c.Name, reasonImagePullBackOff, msg)
		w.eventOnce(c.Name+"/pullbackoff", api.EventNormal, "BackOff", c.Name, fmt.Sprintf("Back-off pulling image %q", c.Image))
		return Image{}, until, false
	}
	delete(w.lastErr, c.Name+"/pullbackoff")
	policy := pullPolicy(c)
	announce := policy == corev1.PullAlways || (policy == corev1.PullIfNotPresent && !w.m.imageKnown(c.Image))
	if announce {
		w.m.event(api.EventNormal, "Pulling", w.key, c.Name, fmt.Sprintf("Pulling image %q", c.Image))
	}
	t0 := time.Now()
	img, err := w.m.rt.EnsureImage(ctx, c.Image, policy, pod.Spec.ImagePullSecrets)
	switch {
	case err == nil:
	case errors.Is(err, ErrImageNeverPull):
		msg := fmt.Sprintf("Container image %q is not present with pull policy of Never", c.Image)
		w.setWaiting(c.Name, reasonErrImageNeverPull, msg)
		w.eventOnce(c.Name+"/neverpull", api.EventWarning, reasonErrImageNeverPull, c.Name, msg)
		return Image{}, now.Add(retryLater), false
	case errors.Is(err, ErrImagePull):
		msg := err.Error()
		w.pullMsg[key] = msg
		w.pull.Next(key, now, now)
		w.setWaiting(c.Name, reasonErrImagePull, msg)
		w.m.event(api.EventWarning, "Failed", w.key, c.Name, fmt.Sprintf("Failed to pull image %q: %s", c.Image, msg))
		w.m.metrics.pulls.WithLabelValues("error").Inc()
		// Look again shortly, to report the backoff (ImagePullBackOff),
		// and pull again when it ends.
		return Image{}, now.Add(time.Second), false
	default:
		w.setWaiting(c.Name, reasonContainerCreating, err.Error())
		return Image{}, w.runtimeFailed("ensure image", err, now), false
	}
	w.pull.Reset(key)
	delete(w.pullMsg, key)
	delete(w.lastErr, c.Name+"/neverpull")
	if announce {
		w.m.event(api.EventNormal, "Pulled", w.key, c.Name, fmt.Sprintf("Successfully pulled image %q in %s", c.Image, time.Since(t0).Round(time.Millisecond)))
		w.m.metrics.pulls.WithLabelValues("success").Inc()
	} else {
		w.m.event(api.EventNormal, "Pulled", w.key, c.Name, fmt.Sprintf("Container image %q already present on machine", c.Image))
	}
	w.m.setImageKnown(c.Image)
	return img, time.Time{}, true
}

// checkNonRoot enforces runAsNonRoot against the user the container would
// run as (securityContext, else the image's).
func checkNonRoot(pod *api.Pod, c *corev1.Container, img Image) string {
	var nonRoot *bool
	var uid *int64
	if sc := pod.Spec.SecurityContext; sc != nil {
		nonRoot, uid = sc.RunAsNonRoot, sc.RunAsUser
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsNonRoot != nil {
			nonRoot = sc.RunAsNonRoot
		}
		if sc.RunAsUser != nil {
			uid = sc.RunAsUser
		}
	}
	if nonRoot == nil || !*nonRoot {
		return ""
	}
	if uid != nil {
		if *uid == 0 {
			return "container's runAsUser breaks non-root policy"
		}
		return ""
	}
	user, _, _ := strings.Cut(img.User, ":")
	if user == "" || user == "0" || user == "root" {
		return "container has runAsNonRoot and image will run as root"
	}
	if _, err := strconv.Atoi(user); err != nil {
		return fmt.Sprintf("container has runAsNonRoot and image has non-numeric user (%s), cannot verify user is non-root", user)
	}
	return ""
}

func gracePeriod(pod *api.Pod) time.Duration {
	if pod != nil && pod.Spec.TerminationGracePeriodSeconds != nil {
		return time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	return defaultGrace
}

// probeGrace is the grace of a container killed for failing a probe: the
// probe's own terminationGracePeriodSeconds, else the pod's.
func probeGrace(pod *api.Pod, c *corev1.Container) time.Duration {
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.StartupProbe} {
		if p != nil && p.TerminationGracePeriodSeconds != nil {
			return time.Duration(*p.TerminationGracePeriodSeconds) * time.Second
		}
	}
	return gracePeriod(pod)
}

// target is how probes and hooks reach container c.
func (w *podWorker) target(pod *api.Pod, sb Sandbox, c *corev1.Container, id string) probe.Target {
	netns := sb.NetNS
	if pod.Spec.HostNetwork {
		netns = ""
	}
	return probe.Target{
		NetNS: netns,
		Host:  "127.0.0.1",
		Ports: c.Ports,
		Exec: func(ctx context.Context, cmd []string, timeout time.Duration) (int, []byte, error) {
			var out limitedBuffer
			code, err := w.m.rt.Exec(ctx, id, api.ExecRequest{
				Pod: w.key, Container: c.Name, Command: cmd, Stdout: &out, Stderr: &out, Timeout: timeout,
			})
			return code, out.b, err
		},
	}
}

// limitedBuffer keeps the first 10 KiB written to it.
type limitedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := 10<<10 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// stopContainer runs c's preStop hook within the grace period, then stops
// the container with what remains of it.
func (w *podWorker) stopContainer(ctx context.Context, pod *api.Pod, c *corev1.Container, inst ContainerState, grace time.Duration) error {
	if inst.State == StateRunning && c != nil && c.Lifecycle != nil && c.Lifecycle.PreStop != nil && pod != nil {
		t0 := w.m.clock.Now()
		w.mu.Lock()
		sb := w.sandboxes[pod.UID]
		w.mu.Unlock()
		hctx, cancel := context.WithTimeout(ctx, grace)
		ok, msg := w.m.runHook(hctx, c.Lifecycle.PreStop, w.target(pod, sb, c, inst.ID), grace)
		cancel()
		if !ok {
			w.m.event(api.EventWarning, "FailedPreStopHook", w.key, c.Name, "PreStopHook failed: "+msg)
		}
		grace -= w.m.clock.Now().Sub(t0)
		grace = max(grace, minGrace)
	}
	return w.m.rt.StopContainer(ctx, inst.ID, grace)
}

// stopRunning stops the pod's running containers without restarting them:
// app containers together, then sidecars in reverse order.
func (w *podWorker) stopRunning(ctx context.Context, pod *api.Pod, ctrs []ContainerState, why string) error {
	var app, side []ContainerState
	for _, c := range ctrs {
		if c.State != StateRunning && c.State != StateCreated {
			continue
		}
		cs, sidecar := findContainer(pod, c.Labels[api.LabelContainer])
		if sidecar && cs != nil {
			side = append(side, c)
		} else {
			app = append(app, c)
		}
	}
	if len(app)+len(side) == 0 {
		return nil
	}
	w.acted = true
	grace := gracePeriod(pod)
	stopAll := func(list []ContainerState) error {
		var wg sync.WaitGroup
		errs := make([]error, len(list))
		for i, inst := range list {
			name := inst.Labels[api.LabelContainer]
			cs, _ := findContainer(pod, name)
			if inst.State == StateRunning {
				w.m.event(api.EventNormal, "Killing", w.key, name, fmt.Sprintf("Stopping container %s (%s)", name, why))
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = w.stopContainer(ctx, pod, cs, inst, grace)
			}()
		}
		wg.Wait()
		return errors.Join(errs...)
	}
	if err := stopAll(app); err != nil {
		return err
	}
	if pod != nil {
		order := map[string]int{}
		for i, c := range pod.Spec.InitContainers {
			order[c.Name] = i
		}
		sort.SliceStable(side, func(i, j int) bool {
			return order[side[i].Labels[api.LabelContainer]] > order[side[j].Labels[api.LabelContainer]]
		})
	}
	for _, s := range side {
		if err := stopAll([]ContainerState{s}); err != nil {
			return err
		}
	}
	return nil
}

func findContainer(pod *api.Pod, name string) (c *corev1.Container, sidecar bool) {
	if pod == nil {
		return nil, false
	}
	for i := range pod.Spec.InitContainers {
		if pod.Spec.InitContainers[i].Name == name {
			return &pod.Spec.InitContainers[i], isSidecar(&pod.Spec.InitContainers[i])
		}
	}
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i], false
		}
	}
	return nil, false
}

// killStale stops and removes incarnations that are no longer desired:
// preStop, stop with the grace period, remove the containers, the sandbox,
// the pod's directory, then its logs.
func (w *podWorker) killStale(ctx context.Context, stale []ContainerState, uids map[string]bool) error {
	byUID := map[string][]ContainerState{}
	for _, c := range stale {
		byUID[c.Labels[api.LabelPodUID]] = append(byUID[c.Labels[api.LabelPodUID]], c)
	}
	var wg sync.WaitGroup
	errs := make([]error, 0, len(uids))
	var mu sync.Mutex
	for uid := range uids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.killIncarnation(ctx, uid, byUID[uid]); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (w *podWorker) killIncarnation(ctx context.Context, uid string, ctrs []ContainerState) error {
	w.mu.Lock()
	spec := w.specs[uid]
	sb, hadSandbox := w.sandboxes[uid]
	desired := w.desired
	w.mu.Unlock()
	if err := w.stopRunning(ctx, spec, ctrs, "pod is no longer desired"); err != nil {
		return err
	}
	var ids []string
	for _, c := range ctrs {
		if err := w.m.rt.RemoveContainer(ctx, c.ID); err != nil {
			return fmt.Errorf("remove container %s: %w", c.ID, err)
		}
		ids = append(ids, c.ID)
	}
	w.m.forget(ids, nil)
	w.mu.Lock()
	for _, id := range ids {
		delete(w.known, id)
	}
	w.mu.Unlock()

	// A replaced spec under the same UID keeps nothing of the old one
	// either: its sandbox, volumes and logs go too.
	if err := w.m.rt.RemoveSandbox(ctx, uid); err != nil {
		return fmt.Errorf("remove sandbox: %w", err)
	}
	dir := w.podDir(uid, sb)
	if !hadSandbox {
		dir = w.podDir(uid, Sandbox{})
	}
	if err := removePodDir(dir); err != nil {
		w.m.log.Warn("remove pod directory", "pod", w.key, "dir", dir, "err", err)
	}
	if sb.Dir != "" {
		removePodDir(filepath.Join(w.m.opts.StateDir, "pods", uid))
	}
	if err := os.RemoveAll(w.m.logDir(w.key, uid)); err != nil {
		w.m.log.Warn("remove pod logs", "pod", w.key, "err", err)
	}
	w.m.forget(nil, []string{uid})
	w.mu.Lock()
	delete(w.sandboxes, uid)
	for _, c := range ctrs {
		delete(w.oldSandbox, c.ID)
	}
	delete(w.startedAt, uid)
	if desired == nil || desired.UID != uid {
		delete(w.specs, uid)
	}
	for k := range w.crash.entries {
		if strings.HasPrefix(k, uid+"/") {
			delete(w.crash.entries, k)
		}
	}
	w.mu.Unlock()
	if len(ctrs) > 0 || hadSandbox {
		w.m.log.Info("pod removed", "pod", w.key, "uid", uid, "containers", len(ctrs))
	}
	return nil
}

// status computes the desired incarnation's status (w.mu not held).
func (w *podWorker) status(desired *api.Pod, now time.Time) api.PodStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	return computeStatus(w.viewLocked(desired, now))
}

func (w *podWorker) viewLocked(desired *api.Pod, now time.Time) podView {
	var ctrs []ContainerState
	for _, c := range w.ctrs {
		if fits(desired, w.accepted, c) {
			ctrs = append(ctrs, c)
		}
	}
	return podView{
		Pod: desired, UID: desired.UID, Hash: desired.Hash,
		Containers: ctrs,
		Waiting:    w.waiting,
		Reason:     w.podReason, Message: w.podMsg,
		StartedAt:  w.startedAt[desired.UID],
		OldSandbox: w.oldSandbox,
		PodIP:      w.m.podIP(desired, w.sandboxes[desired.UID]),
		Probes:     w.m.prober.viewFunc(),
		Now:        now,
	}
}

// statuses are the statuses of this key: incarnations being stopped
// (Terminating) first, then the desired one.
func (w *podWorker) statuses(now time.Time) []api.PodStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []api.PodStatus
	type inc struct{ uid, hash string }
	seen := map[inc][]ContainerState{}
	var order []inc
	for _, c := range w.ctrs {
		if fits(w.desired, w.accepted, c) {
			continue
		}
		k := inc{c.Labels[api.LabelPodUID], c.Labels[api.LabelPodHash]}
		if _, ok := seen[k]; !ok {
			order = append(order, k)
		}
		seen[k] = append(seen[k], c)
	}
	for uid := range w.sandboxes {
		if w.desired != nil && uid == w.desired.UID {
			continue
		}
		found := false
		for _, k := range order {
			found = found || k.uid == uid
		}
		if !found {
			k := inc{uid: uid}
			if s := w.specs[uid]; s != nil {
				k.hash = s.Hash
			}
			order = append(order, k)
		}
	}
	sort.Slice(order, func(i, j int) bool { return order[i].uid+order[i].hash < order[j].uid+order[j].hash })
	ns, name, _ := strings.Cut(w.key, "/")
	for _, k := range order {
		spec := w.specs[k.uid]
		if spec == nil || spec.Hash != k.hash {
			spec = synthesize(ns, name, k.uid, k.hash, seen[k])
		}
		st := computeStatus(podView{
			Pod: spec, UID: k.uid, Hash: k.hash, Containers: seen[k],
			Terminating: true, StartedAt: w.startedAt[k.uid], Now: now, PodIP: w.m.podIP(spec, w.sandboxes[k.uid]),
			Probes: w.m.prober.viewFunc(),
		})
		st.Ready = false
		out = append(out, st)
	}
	if w.desired != nil {
		out = append(out, computeStatus(w.viewLocked(w.desired, now)))
	}
	return out
}

// synthesize describes a pod whose spec is not known (adopted containers of
// a pod that is no longer desired) from its containers' labels.
func synthesize(ns, name, uid, hash string, ctrs []ContainerState) *api.Pod {
	p := &api.Pod{Namespace: ns, Name: name, UID: uid, Hash: hash}
	seen := map[string]bool{}
	for _, c := range ctrs {
		n := c.Labels[api.LabelContainer]
		if !seen[n] {
			seen[n] = true
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: n, Image: c.Image})
		}
	}
	sort.Slice(p.Spec.Containers, func(i, j int) bool { return p.Spec.Containers[i].Name < p.Spec.Containers[j].Name })
	return p
}

// containerName resolves a requested container name (default: the only app
// container) for logs and exec.
func (w *podWorker) containerName(name string) (string, error) {
	w.mu.Lock()
	pod := w.desired
	if pod == nil {
		for _, s := range w.specs {
			pod = s
		}
	}
	var names []string
	if pod != nil {
		for _, c := range pod.Spec.Containers {
			names = append(names, c.Name)
		}
		for _, c := range pod.Spec.InitContainers {
			if name == c.Name {
				names = append(names, c.Name)
			}
		}
	} else {
		for _, c := range w.ctrs {
			if n := c.Labels[api.LabelContainer]; !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	w.mu.Unlock()
	if name == "" {
		if len(names) == 1 {
			return names[0], nil
		}
		return "", fmt.Errorf("%w: pod %s has several containers; name one of %s", api.ErrInvalid, w.key, strings.Join(names, ", "))
	}
	if !slices.Contains(names, name) {
		return "", fmt.Errorf("%w: container %s in pod %s", api.ErrNotFound, name, w.key)
	}
	return name, nil
}

// current is the newest observed instance of a container, preferring the
// desired incarnation.
func (w *podWorker) current(name string) (ContainerState, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var mine, other []ContainerState
	for _, c := range w.ctrs {
		if c.Labels[api.LabelContainer] != name {
			continue
		}
		if fits(w.desired, w.accepted, c) {
			mine = append(mine, c)
		} else {
			other = append(other, c)
		}
	}
	for _, l := range [][]ContainerState{mine, other} {
		if len(l) > 0 {
			return instancesByName(l)[name][0], true
		}
	}
	return ContainerState{}, false
}
