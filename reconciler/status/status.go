// Package status turns the outcome of a reconciler pass into the files of
// the status branch: one YAML file per workload and per machine, a summary,
// and the controller's memory, plus the commit message and the git note
// for the source commit. It is pure: the same pass gives the same bytes, and
// nothing in the files changes unless the fleet did (no clocks, no ages),
// so that a commit is made only when something changed.
package status

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/reconciler/live"
	"berth.dev/berth/reconciler/network"
	"berth.dev/berth/reconciler/workload"
)

// Outcomes of a pass, as the summary and the commit message say them.
const (
	Ready       = "Ready"       // converged: every wanted pod ready
	Progressing = "Progressing" // not yet converged
	Failed      = "Failed"      // the commit could not be applied (render, admission, resolution errors)
)

// MemoryFile is the controller's memory in the status branch.
const MemoryFile = "memory.json"

// Input is what the status of one source commit is made of.
type Input struct {
	// Commit is the source commit (full hash) the pass applied.
	Commit string
	// Pass is the last pass; nil when the commit could not be planned.
	Pass *live.Pass
	// Observed is what the machines reported for that pass.
	Observed []live.Observed
	// Problems are why the commit could not be applied ("file:line: ..."),
	// each one line; with them the outcome is Failed.
	Problems []string
	// Running is the commit still running when this one failed ("" if
	// none or unknown).
	Running string
	// Memory is the controller's memory to keep when there is no Pass (a
	// commit that failed before any pass): without it the status branch
	// would lose it.
	Memory *live.Memory
}

// Summary is summary.yaml.
type Summary struct {
	Commit   string   `json:"commit"`
	Outcome  string   `json:"outcome"`
	Running  string   `json:"running,omitempty"`
	Problems []string `json:"problems,omitempty"`
	Machines struct {
		Total     int `json:"total"`
		Reachable int `json:"reachable"`
	} `json:"machines"`
	Pods struct {
		Wanted int `json:"wanted"`
		Ready  int `json:"ready"`
	} `json:"pods"`
	// NotConverged names the workloads still changing, with why.
	NotConverged  []string `json:"notConverged,omitempty"`
	Unschedulable []string `json:"unschedulable,omitempty"`
	Errors        []string `json:"errors,omitempty"`
	Unreachable   []string `json:"unreachable,omitempty"`
}

// Status is the files and texts of one source commit's status.
type Status struct {
	Summary Summary
	// Files are the status branch's files, by slash path.
	Files map[string][]byte
	// Message is the status commit's message:
	// "status: 3f2a1c9 Ready - 12/12 pods ready".
	Message string
	// Note is the git note for the source commit.
	Note string
}

// Build makes the status of in.
func Build(in Input) (*Status, error) {
	s := &Status{Files: map[string][]byte{}}
	sum := &s.Summary
	sum.Commit, sum.Running, sum.Problems = in.Commit, in.Running, in.Problems
	p := in.Pass
	switch {
	case len(in.Problems) > 0 || p == nil:
		sum.Outcome = Failed
	case p.Converged:
		sum.Outcome = Ready
	default:
		sum.Outcome = Progressing
	}

	ready := map[string]bool{} // pod key on its machine
	for _, o := range in.Observed {
		for _, ps := range o.Pods {
			if ps.Ready || ps.Phase == "Succeeded" {
				ready[o.Machine+"/"+ps.Namespace+"/"+ps.Name] = true
			}
		}
	}
	if p != nil {
		for _, m := range p.Machines {
			if !m.InRepository {
				continue
			}
			sum.Machines.Total++
			if m.Reachable {
				sum.Machines.Reachable++
			} else {
				sum.Unreachable = append(sum.Unreachable, fmt.Sprintf("%s: %s", m.Name, m.Err))
			}
		}
		for _, a := range p.Pods {
			if a.Action == live.Stop {
				continue
			}
			sum.Pods.Wanted++
			if ready[a.Machine+"/"+a.Key()] {
				sum.Pods.Ready++
			}
		}
		for _, w := range p.Workloads {
			if w.Changes > 0 || !workloadDone(w) {
				sum.NotConverged = append(sum.NotConverged, fmt.Sprintf("%s: %s", w.Owner, w.Reason))
			}
			b, err := YAML(workloadFile{Owner: w.Owner, Status: w.Status, Reason: w.Reason})
			if err != nil {
				return nil, err
			}
			s.Files[objectPath(w.Owner)] = b
		}
		for _, u := range p.Unschedulable {
			sum.Unschedulable = append(sum.Unschedulable, fmt.Sprintf("%s/%s: %s", u.Namespace, u.Name, u.Message))
		}
		for _, e := range p.Errors {
			sum.Errors = append(sum.Errors, e.String())
		}
	}
	mem := in.Memory
	if p != nil {
		mem = &p.Memory
	}
	if mem != nil {
		b, err := json.MarshalIndent(mem, "", "  ")
		if err != nil {
			return nil, fmt.Errorf("status: memory: %w", err)
		}
		s.Files[MemoryFile] = append(b, '\n')
	}
	var podCIDRs map[string]netip.Prefix
	if mem != nil && len(mem.Network) > 0 {
		var nm network.Memory
		if json.Unmarshal(mem.Network, &nm) == nil {
			podCIDRs = nm.PodCIDRs
		}
	}
	for _, o := range in.Observed {
		mf := machineFileOf(o)
		if p, ok := podCIDRs[o.Machine]; ok {
			mf.PodCIDR = p.String()
		}
		b, err := YAML(mf)
		if err != nil {
			return nil, err
		}
		s.Files[path.Join("machines", o.Machine+".yaml")] = b
	}
	b, err := YAML(sum)
	if err != nil {
		return nil, err
	}
	s.Files["summary.yaml"] = b

	short := in.Commit
	if len(short) > 7 {
		short = short[:7]
	}
	switch sum.Outcome {
	case Failed:
		s.Message = fmt.Sprintf("status: %s Failed - %d problem(s)", short, len(in.Problems))
	default:
		s.Message = fmt.Sprintf("status: %s %s - %d/%d pods ready", short, sum.Outcome, sum.Pods.Ready, sum.Pods.Wanted)
	}
	var note strings.Builder
	note.WriteString(strings.TrimPrefix(s.Message, "status: "+short+" "))
	note.WriteString("\n")
	for _, l := range [][]string{in.Problems, sum.Errors, sum.Unschedulable, sum.NotConverged, sum.Unreachable} {
		for _, x := range l {
			note.WriteString("  " + x + "\n")
		}
	}
	if in.Running != "" && sum.Outcome == Failed {
		fmt.Fprintf(&note, "  still running: %s\n", in.Running)
	}
	s.Note = note.String()
	return s, nil
}

// workloadDone: a workload whose conditions say it is done or failing for
// good (it will not change by itself).
func workloadDone(w live.WorkloadStatus) bool {
	st := w.Status
	for _, c := range st.Conditions {
		switch {
		case c.Type == "Progressing" && c.Status == "False":
			return false
		case (c.Type == "Complete" || c.Type == "Failed") && c.Status == "True":
			return true
		}
	}
	if w.Owner.Kind == "CronJob" {
		return len(st.ActiveJobs) == 0
	}
	if w.Owner.Kind == "Job" {
		return false
	}
	return st.ReadyReplicas == st.Replicas && st.UpdatedReplicas == st.Replicas
}

type workloadFile struct {
	Owner  workload.Owner  `json:"owner"`
	Reason string          `json:"reason,omitempty"`
	Status workload.Status `json:"status"`
}

// objectPath is objects/NAMESPACE/KIND/NAME.yaml.
func objectPath(o workload.Owner) string {
	return path.Join("objects", o.Namespace, strings.ToLower(o.Kind), o.Name+".yaml")
}

type machineFile struct {
	Name          string `json:"name"`
	Reachable     bool   `json:"reachable"`
	Error         string `json:"error,omitempty"`
	AgentVersion  string `json:"agentVersion,omitempty"`
	Containerd    string `json:"containerd,omitempty"`
	RuntimeError  string `json:"runtimeError,omitempty"`
	Generation    int64  `json:"generation,omitempty"`
	DesiredDigest string `json:"desiredDigest,omitempty"`
	// PodCIDR is the machine's pod CIDR, as given or allocated.
	PodCIDR string `json:"podCIDR,omitempty"`
	// Network is the Network the agent holds, and why it did not apply.
	Network *api.NetworkStatus `json:"network,omitempty"`
	Pods    []podLine          `json:"pods,omitempty"`
}

type podLine struct {
	Name     string `json:"name"` // namespace/name
	IP       string `json:"ip,omitempty"`
	Phase    string `json:"phase"`
	Ready    bool   `json:"ready"`
	Restarts int32  `json:"restarts,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

func machineFileOf(o live.Observed) machineFile {
	m := machineFile{Name: o.Machine, Reachable: o.Reachable, Error: o.Err}
	if !o.Reachable {
		return m
	}
	n := o.Node
	m.AgentVersion, m.Containerd, m.RuntimeError = n.AgentVersion, n.ContainerdVersion, n.RuntimeError
	m.Generation, m.DesiredDigest = n.Generation, n.DesiredDigest
	if n.Network.Generation > 0 || n.Network.Error != "" {
		ns := n.Network
		m.Network = &ns
	}
	for _, ps := range o.Pods {
		m.Pods = append(m.Pods, podLineOf(ps))
	}
	sort.Slice(m.Pods, func(i, j int) bool { return m.Pods[i].Name < m.Pods[j].Name })
	return m
}

func podLineOf(ps api.PodStatus) podLine {
	l := podLine{Name: ps.Namespace + "/" + ps.Name, IP: ps.PodIP, Phase: string(ps.Phase), Ready: ps.Ready, Reason: ps.Reason}
	for _, c := range ps.ContainerStatuses {
		l.Restarts += c.RestartCount
		if w := c.State.Waiting; w != nil && w.Reason != "" && l.Reason == "" {
			l.Reason = w.Reason
		}
	}
	return l
}

// YAML writes v as YAML with its JSON field names (through JSON, so that
// the types' json tags and omitempty rules hold).
func YAML(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	var generic any
	if err := json.Unmarshal(b, &generic); err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	out, err := yaml.Marshal(generic)
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	return out, nil
}
