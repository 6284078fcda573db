package workload

import (
	"cmp"
	"time"

	"berth.dev/berth/nodes/api"
)

// Observed builds the pass's view of one pod from what was sent to a
// machine's agent (spec: labels, for the owner and template hash; nil if
// unknown) and what the agent reports (status). readySince is when the
// caller first saw the pod ready (zero: unknown, StartedAt is used).
func Observed(machine string, spec *api.Pod, status *api.PodStatus, created, readySince time.Time) Pod {
	p := Pod{
		Namespace:   status.Namespace,
		Name:        status.Name,
		Machine:     machine,
		Phase:       status.Phase,
		Ready:       status.Ready,
		ReadySince:  readySince,
		StartedAt:   status.StartedAt,
		Created:     cmp.Or(created, status.StartedAt),
		Terminating: status.Terminating,
	}
	if spec != nil {
		p.Labels = spec.Labels
	}
	for _, cs := range append(status.InitContainerStatuses, status.ContainerStatuses...) {
		c := ContainerState{Name: cs.Name, RestartCount: cs.RestartCount}
		t := cs.State.Terminated
		if t == nil {
			t = cs.LastState.Terminated
		}
		if t != nil {
			code := t.ExitCode
			c.ExitCode = &code
			c.FinishedAt = t.FinishedAt.Time
		}
		p.Containers = append(p.Containers, c)
	}
	return p
}
