package agent

import (
	"sort"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"berth.dev/berth/nodes/api"
)

// Waiting reasons, as the kubelet reports them.
const (
	reasonContainerCreating          = "ContainerCreating"
	reasonPodInitializing            = "PodInitializing"
	reasonCrashLoopBackOff           = "CrashLoopBackOff"
	reasonErrImagePull               = "ErrImagePull"
	reasonImagePullBackOff           = "ImagePullBackOff"
	reasonErrImageNeverPull          = "ErrImageNeverPull"
	reasonCreateContainerError       = "CreateContainerError"
	reasonCreateContainerConfigError = "CreateContainerConfigError"
	reasonRunContainerError          = "RunContainerError"
	reasonDeadlineExceeded           = "DeadlineExceeded"
)

// waitInfo is why a container is not running, as the last sync found it
// (the kubelet's reason cache): the outcome of a step, which the status
// function reads.
type waitInfo struct {
	Reason, Message string
}

// probeView is what the probes say of one running container instance.
type probeView struct {
	// Started: the startup probe has succeeded (or there is none).
	Started bool
	// Ready: the readiness probe has succeeded last (or there is none).
	Ready bool
}

// podView is everything the status of one pod incarnation is computed
// from. computeStatus is the only place a status is made.
type podView struct {
	Pod  *api.Pod // spec; for an incarnation no longer desired, what is known of it
	UID  string
	Hash string
	// Containers are this incarnation's container instances.
	Containers []ContainerState
	Waiting    map[string]waitInfo
	// Reason and Message are pod-level (FailedMount, FailedCreatePodSandBox).
	Reason, Message string
	StartedAt       time.Time
	// OldSandbox holds the ids of instances that ran in an earlier sandbox
	// (before a reboot): init containers that completed there run again.
	OldSandbox  map[string]bool
	Terminating bool
	// PodIP is the sandbox's first pod network address ("" for none).
	PodIP  string
	Probes func(id string, c *corev1.Container) probeView
	Now    time.Time
}

// instancesByName groups container instances by container name, newest
// attempt first.
func instancesByName(ctrs []ContainerState) map[string][]ContainerState {
	out := map[string][]ContainerState{}
	for _, c := range ctrs {
		n := c.Labels[api.LabelContainer]
		out[n] = append(out[n], c)
	}
	for _, l := range out {
		sort.SliceStable(l, func(i, j int) bool {
			ai, aj := attemptOf(l[i]), attemptOf(l[j])
			if ai != aj {
				return ai > aj
			}
			return l[i].CreatedAt.After(l[j].CreatedAt)
		})
	}
	return out
}

func attemptOf(c ContainerState) int32 {
	n, _ := strconv.Atoi(c.Labels[api.LabelAttempt])
	return int32(n)
}

// exited: the instance has run and ended (an unknown state after a
// reboot counts as ended).
func exited(c ContainerState) bool { return c.State == StateExited || c.State == StateUnknown }

func terminatedState(c ContainerState) *corev1.ContainerStateTerminated {
	reason := c.Reason
	if reason == "" {
		switch {
		case c.State == StateUnknown:
			reason = "Unknown"
		case c.ExitCode == 0:
			reason = "Completed"
		default:
			reason = "Error"
		}
	}
	return &corev1.ContainerStateTerminated{
		ExitCode:    c.ExitCode,
		Reason:      reason,
		StartedAt:   metav1.NewTime(c.StartedAt),
		FinishedAt:  metav1.NewTime(c.FinishedAt),
		ContainerID: c.ID,
	}
}

// initDone reports whether a regular init container has completed in the
// current sandbox.
func (v *podView) initDone(insts []ContainerState) bool {
	if len(insts) == 0 {
		return false
	}
	c := insts[0]
	return exited(c) && c.ExitCode == 0 && c.State != StateUnknown && !v.OldSandbox[c.ID]
}

func (v *podView) probes(id string, c *corev1.Container) probeView {
	if v.Probes == nil {
		return probeView{Started: true, Ready: true}
	}
	return v.Probes(id, c)
}

// sidecarStarted: running, and past its startup probe.
func (v *podView) sidecarStarted(c *corev1.Container, insts []ContainerState) bool {
	return len(insts) > 0 && insts[0].State == StateRunning && v.probes(insts[0].ID, c).Started
}

func containerStatus(c *corev1.Container, insts []ContainerState, w waitInfo, hasWait bool, defaultWaiting string, pv func(string, *corev1.Container) probeView) api.ContainerStatus {
	cs := api.ContainerStatus{Name: c.Name, Image: c.Image}
	if len(insts) == 0 {
		st := &corev1.ContainerStateWaiting{Reason: defaultWaiting}
		if hasWait {
			st = &corev1.ContainerStateWaiting{Reason: w.Reason, Message: w.Message}
		}
		cs.State.Waiting = st
		return cs
	}
	cur := insts[0]
	cs.ContainerID = cur.ID
	cs.ImageID = cur.ImageID
	cs.RestartCount = attemptOf(cur)
	if len(insts) > 1 && exited(insts[1]) {
		cs.LastState.Terminated = terminatedState(insts[1])
	}
	switch {
	case cur.State == StateRunning:
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(cur.StartedAt)}
		p := pv(cur.ID, c)
		cs.Started = p.Started
		cs.Ready = p.Started && p.Ready
	case cur.State == StateCreated:
		st := &corev1.ContainerStateWaiting{Reason: reasonContainerCreating}
		if hasWait {
			st = &corev1.ContainerStateWaiting{Reason: w.Reason, Message: w.Message}
		}
		cs.State.Waiting = st
	case hasWait:
		// Exited, and the next instance is waiting (backoff, pull).
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: w.Reason, Message: w.Message}
		cs.LastState = corev1.ContainerState{Terminated: terminatedState(cur)}
	default:
		cs.State.Terminated = terminatedState(cur)
	}
	return cs
}

// computeStatus is where every pod status comes from: the kubelet's
// container statuses and getPhase, from what was observed.
func computeStatus(v podView) api.PodStatus {
	pod := v.Pod
	st := api.PodStatus{
		Namespace:   pod.Namespace,
		Name:        pod.Name,
		UID:         v.UID,
		Hash:        v.Hash,
		Labels:      pod.Labels,
		Terminating: v.Terminating,
		PodIP:       v.PodIP,
		Reason:      v.Reason,
		Message:     v.Message,
		StartedAt:   v.StartedAt,
	}
	by := instancesByName(v.Containers)
	waiting := func(name string) (waitInfo, bool) {
		w, ok := v.Waiting[name]
		return w, ok
	}

	// Init containers, in order.
	pendingInit, initFailed := 0, false
	next := true // the first init container not done is the one being worked on
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		insts := by[c.Name]
		def := reasonPodInitializing
		if next {
			def = reasonContainerCreating
		}
		w, ok := waiting(c.Name)
		cs := containerStatus(c, insts, w, ok, def, v.probes)
		if isSidecar(c) {
			if !v.sidecarStarted(c, insts) {
				pendingInit++
				next = false
			}
		} else {
			done := v.initDone(insts)
			cs.Ready = done
			if !done {
				pendingInit++
				if len(insts) > 0 && exited(insts[0]) && insts[0].ExitCode != 0 && !v.OldSandbox[insts[0].ID] &&
					pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
					initFailed = true
				}
				next = false
			}
		}
		st.InitContainerStatuses = append(st.InitContainerStatuses, cs)
	}

	anyAppStarted := false // in the current sandbox
	for i := range pod.Spec.Containers {
		if l := by[pod.Spec.Containers[i].Name]; len(l) > 0 && !v.OldSandbox[l[0].ID] {
			anyAppStarted = true
		}
	}
	initialized := pendingInit == 0 || anyAppStarted

	running, waitingN, stopped, succeeded := 0, 0, 0, 0
	allReady := true
	st.ContainerStatuses = []api.ContainerStatus{}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		def := reasonPodInitializing
		if initialized {
			def = reasonContainerCreating
		}
		w, ok := waiting(c.Name)
		cs := containerStatus(c, by[c.Name], w, ok, def, v.probes)
		switch {
		case cs.State.Running != nil:
			running++
		case cs.State.Terminated != nil:
			stopped++
			if cs.State.Terminated.ExitCode == 0 {
				succeeded++
			}
		case cs.LastState.Terminated != nil:
			stopped++
		default:
			waitingN++
		}
		allReady = allReady && cs.Ready
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	for i, c := range pod.Spec.InitContainers {
		if isSidecar(&c) {
			allReady = allReady && st.InitContainerStatuses[i].Ready
		}
	}

	rp := pod.Spec.RestartPolicy
	if rp == "" {
		rp = corev1.RestartPolicyAlways
	}
	switch {
	case initFailed:
		st.Phase = corev1.PodFailed
	case pendingInit > 0 && !anyAppStarted, waitingN > 0:
		st.Phase = corev1.PodPending
	case running > 0:
		st.Phase = corev1.PodRunning
	case stopped > 0:
		switch {
		case rp == corev1.RestartPolicyAlways:
			st.Phase = corev1.PodRunning
		case stopped == succeeded:
			st.Phase = corev1.PodSucceeded
		case rp == corev1.RestartPolicyNever:
			st.Phase = corev1.PodFailed
		default:
			st.Phase = corev1.PodRunning
		}
	default:
		st.Phase = corev1.PodPending
	}
	if deadlineExceeded(pod, v.StartedAt, v.Now) && st.Phase != corev1.PodSucceeded {
		st.Phase = corev1.PodFailed
		st.Reason = reasonDeadlineExceeded
		st.Message = "Pod was active on the node longer than the specified deadline"
	}
	st.Ready = st.Phase == corev1.PodRunning && initialized && allReady && len(pod.Spec.Containers) > 0
	return st
}

func deadlineExceeded(pod *api.Pod, startedAt, now time.Time) bool {
	d := pod.Spec.ActiveDeadlineSeconds
	return d != nil && !startedAt.IsZero() && !now.Before(startedAt.Add(time.Duration(*d)*time.Second))
}

func terminal(p api.PodPhase) bool { return p == corev1.PodSucceeded || p == corev1.PodFailed }
