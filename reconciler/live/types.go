package live

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/reconciler/workload"
	"berth.dev/berth/render"
)

// ErrEmptyRender refuses a pass whose repository yields no workload at all
// while machines run pods: more likely a broken checkout or a wrong path than
// a wish to stop everything (Options.AllowEmpty says it is the wish).
var ErrEmptyRender = errors.New("the repository has no workload while machines run pods (allow an empty render to stop them all)")

// ErrNoDesired is returned when Input.Desired is nil.
var ErrNoDesired = errors.New("no desired state")

// Input is everything one pass looks at.
type Input struct {
	// Desired is the rendered (and admitted) repository.
	Desired *render.Desired
	// Observed holds one entry per machine the caller asked; a machine of
	// the repository without an entry counts as unreachable.
	Observed []Observed
	// Memory is what the previous pass returned (zero on the first run or
	// when lost).
	Memory Memory
	// Last optionally holds, per machine, the set this controller process
	// last sent. It is never persisted (it carries Secret data); it only
	// helps describe pods whose template is neither in git nor in Memory.
	Last map[string]*api.DesiredPods
	// Now is the time of the pass.
	Now time.Time
}

// Observed is what one machine's agent reported (fleet.Observation, with
// the error as text).
type Observed struct {
	Machine string `json:"machine"`
	// Reachable: the agent answered; otherwise Err says why and Node and
	// Pods are empty.
	Reachable bool            `json:"reachable"`
	Err       string          `json:"error,omitempty"`
	Node      api.NodeInfo    `json:"node"`
	Pods      []api.PodStatus `json:"pods,omitempty"`
}

// Options configure a pass.
type Options struct {
	// RescheduleAfter is how long a machine may be unreachable before the
	// pods of its Deployments and Jobs are replaced elsewhere. Zero: never.
	RescheduleAfter time.Duration
	// AllowEmpty lets a repository without any workload stop every pod.
	AllowEmpty bool
}

// Validate checks the options.
func (o Options) Validate() error {
	if o.RescheduleAfter < 0 {
		return fmt.Errorf("live options: negative reschedule grace %s", o.RescheduleAfter)
	}
	return nil
}

// Memory is what the controller keeps between passes (in the status
// branch). It is plain JSON and holds no Secret data: pod templates are as
// written in git, and ConfigMap digests only. Everything in it may be lost
// or stale; a pass then rebuilds what it can from the observed pods.
type Memory struct {
	// Workloads is the workload controllers' memory.
	Workloads workload.Memory `json:"workloads"`
	// Pods are the pods the last pass wanted, by "namespace/name".
	Pods map[string]PodMemory `json:"pods,omitempty"`
	// Templates are the pod templates Pods refer to, by digest.
	Templates map[string]*corev1.PodTemplateSpec `json:"templates,omitempty"`
	// Unreachable holds, per machine, when it was first found unreachable.
	Unreachable map[string]time.Time `json:"unreachable,omitempty"`
	// ConfigMaps holds a digest of each ConfigMap's content, by
	// "namespace/name", to tell which pods see a change.
	ConfigMaps map[string]string `json:"configMaps,omitempty"`
	// Network is the network computation's memory (its allocations:
	// package reconciler/network), kept here as the caller gives it; Plan
	// carries it over unchanged.
	Network json.RawMessage `json:"network,omitempty"`
}

// PodMemory is what a pass remembers of one pod.
type PodMemory struct {
	Machine string         `json:"machine"`
	Owner   workload.Owner `json:"owner"`
	Hash    string         `json:"hash"`
	UID     string         `json:"uid"`
	// Template is the digest of its template in Memory.Templates.
	Template string `json:"template,omitempty"`
	// ReadySince is when the pod was first seen ready (zero: not ready).
	ReadySince time.Time `json:"readySince,omitzero"`
}

// Action is what a pass does to one pod.
type Action string

// Actions.
const (
	Start   Action = "start"   // a new pod on its machine
	Stop    Action = "stop"    // an observed pod that goes
	Replace Action = "replace" // stopped and started again under its name with a new template
	Update  Action = "update"  // files of a changed ConfigMap updated in place
	Keep    Action = "keep"    // unchanged
)

// Pass is the outcome of Plan.
type Pass struct {
	Now time.Time `json:"now"`
	// Machines, sorted by name: every machine of the repository and every
	// observed machine that left it.
	Machines []MachinePlan `json:"machines"`
	// Pods are the pod actions, by machine, namespace and name.
	Pods []PodAction `json:"pods"`
	// Workloads are the workloads' statuses.
	Workloads []WorkloadStatus `json:"workloads"`
	// Unschedulable are new pods no machine can take now.
	Unschedulable []Unschedulable `json:"unschedulable,omitempty"`
	// Pruned are pods whose owner left the repository (also in Pods).
	Pruned []workload.Stop `json:"pruned,omitempty"`
	// Errors are problems that keep a pod from being sent.
	Errors []Error `json:"errors,omitempty"`
	// Warnings are problems that do not.
	Warnings []string `json:"warnings,omitempty"`
	// Memory is for the next pass.
	Memory Memory `json:"memory"`
	// Wake is when to run again if nothing changes (zero: no timer).
	Wake time.Time `json:"wake,omitzero"`
	// Summary counts the pass's actions.
	Summary Summary `json:"summary"`
	// Converged: every machine holds its set and is reachable, every
	// wanted pod is observed ready (or finished), nothing is pending and
	// nothing is left to stop.
	Converged bool `json:"converged"`
}

// MachinePlan is what one machine is told.
type MachinePlan struct {
	Name      string `json:"name"`
	Reachable bool   `json:"reachable"`
	// Err says why the machine could not be reached.
	Err string `json:"error,omitempty"`
	// UnreachableSince is when it was first found unreachable.
	UnreachableSince time.Time `json:"unreachableSince,omitzero"`
	// RescheduleAt is when the pods of its Deployments and Jobs are given
	// up and replaced elsewhere (zero: never; Options.RescheduleAfter).
	RescheduleAt time.Time `json:"rescheduleAt,omitzero"`
	// InRepository is false for an observed machine that left git: it is
	// not told anything.
	InRepository bool `json:"inRepository"`
	// Send is the whole pod set to hand the agent; nil when the machine
	// already has it, is unreachable, or is held. It carries resolved
	// Secret data and is never encoded with the pass.
	Send *api.DesiredPods `json:"-"`
	// Generation and Digest of Send (or of what the agent holds when there
	// is nothing to send).
	Generation int64  `json:"generation"`
	Digest     string `json:"digest,omitempty"`
	// Pods counts the pods of the set.
	Pods int `json:"pods"`
	// Held says why a set that would change is not sent.
	Held string `json:"held,omitempty"`
	// Reasons say in short lines why the machine is told what it is told.
	Reasons []string `json:"reasons,omitempty"`
}

// PodAction is one pod's part of a pass.
type PodAction struct {
	Machine   string         `json:"machine,omitempty"`
	Namespace string         `json:"namespace"`
	Name      string         `json:"name"`
	Owner     workload.Owner `json:"owner"`
	Action    Action         `json:"action"`
	Reason    string         `json:"reason,omitempty"`
	Hash      string         `json:"hash,omitempty"`
	UID       string         `json:"uid,omitempty"`
}

// Key is "namespace/name".
func (a PodAction) Key() string { return a.Namespace + "/" + a.Name }

// WorkloadStatus is one workload's status after the pass.
type WorkloadStatus struct {
	Owner  workload.Owner  `json:"owner"`
	Status workload.Status `json:"status"`
	Reason string          `json:"reason"`
	// Changes counts the pods this pass starts, replaces or stops.
	Changes int `json:"changes"`
}

// Unschedulable is a new pod no machine takes now.
type Unschedulable struct {
	Namespace string         `json:"namespace"`
	Name      string         `json:"name"`
	Owner     workload.Owner `json:"owner"`
	// Message is the scheduler's one line ("0/3 machines are available: ...").
	Message    string              `json:"message"`
	PerMachine map[string][]string `json:"perMachine,omitempty"`
}

// Error is a problem that keeps a pod (or a machine's set) from being sent,
// named by the object it comes from and where that object is written.
type Error struct {
	Object  string     `json:"object"`
	Pos     render.Pos `json:"pos,omitzero"`
	Pod     string     `json:"pod,omitempty"`
	Machine string     `json:"machine,omitempty"`
	Message string     `json:"message"`
}

// String is "file:line: Kind ns/name: message" (the message names the pod).
func (e Error) String() string {
	s := e.Object + ": " + e.Message
	if e.Pos.File != "" {
		s = e.Pos.String() + ": " + s
	}
	return s
}

// Changes counts the machines told something new.
func (p *Pass) Changes() int {
	n := 0
	for _, m := range p.Machines {
		if m.Send != nil {
			n++
		}
	}
	return n
}

// Summary counts what a pass does, for tools and exit codes.
type Summary struct {
	Start       int `json:"start"`
	Replace     int `json:"replace"`
	Update      int `json:"update"`
	Stop        int `json:"stop"`
	Keep        int `json:"keep"`
	Machines    int `json:"machines"`    // machines told a new set
	Unreachable int `json:"unreachable"` // machines of the repository that did not answer
	Held        int `json:"held"`
	Pending     int `json:"pending"`
	Errors      int `json:"errors"`
}

// Changed reports whether the pass tells any machine anything.
func (s Summary) Changed() bool { return s.Machines > 0 }

func summarize(p *Pass) Summary {
	var s Summary
	for _, a := range p.Pods {
		switch a.Action {
		case Start:
			s.Start++
		case Replace:
			s.Replace++
		case Update:
			s.Update++
		case Stop:
			s.Stop++
		case Keep:
			s.Keep++
		}
	}
	for _, m := range p.Machines {
		switch {
		case m.Send != nil:
			s.Machines++
		case m.InRepository && !m.Reachable:
			s.Unreachable++
		case m.Held != "":
			s.Held++
		}
	}
	s.Pending, s.Errors = len(p.Unschedulable), len(p.Errors)
	return s
}
