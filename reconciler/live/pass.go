package live

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"berth.dev/berth/nodes/api"
	"berth.dev/berth/reconciler/resolve"
	"berth.dev/berth/reconciler/schedule"
	"berth.dev/berth/reconciler/workload"
	"berth.dev/berth/render"
	"berth.dev/berth/render/api/v1alpha1"
)

// machine is one machine as a pass sees it.
type machine struct {
	name      string
	spec      *v1alpha1.Machine // nil: observed, but no longer in git
	obs       *Observed
	reachable bool
	since     time.Time // unreachable since
	sched     schedule.Machine
	plan      *MachinePlan
	pods      []*pod // what it should run
	held      []string
}

// pod is one wanted pod on its way to a machine.
type pod struct {
	want     workload.WantedPod
	machine  string
	tmpl     *corev1.PodTemplateSpec // nil: not known
	carried  bool                    // described by the current template under its old hash
	observed *api.PodStatus          // on its machine, same hash
	resolved *api.Pod
	action   Action
	reason   string
}

func (p *pod) key() string { return p.want.Namespace + "/" + p.want.Name }

// new: the pod is to be started; it needs a machine from the scheduler, or,
// when it is fixed to one (a DaemonSet's, spec.nodeName), the machine's
// admission (readiness, resources, ports), as a kubelet admits such a pod.
func (p *pod) new() bool { return p.want.Action == workload.Create && p.observed == nil }

// state is the working state of one Plan call.
type state struct {
	in       Input
	opts     Options
	pass     *Pass
	machines map[string]*machine
	order    []*machine // by name
	objects  map[workload.Owner]*render.Object
	// observed pods of reachable machines by key, and on which machine.
	observed map[string][]observedPod
	sources  *resolve.Sources
}

type observedPod struct {
	machine string
	status  *api.PodStatus
}

// Plan runs one pass. It is pure: the result depends only on its
// arguments, which it does not modify.
func Plan(in Input, opts Options) (*Pass, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if in.Desired == nil {
		return nil, ErrNoDesired
	}
	s := &state{
		in: in, opts: opts,
		pass:     &Pass{Now: in.Now},
		machines: map[string]*machine{},
		objects:  map[workload.Owner]*render.Object{},
		observed: map[string][]observedPod{},
		sources:  resolve.SourcesOf(in.Desired),
	}
	s.pass.Memory = Memory{
		Pods:        map[string]PodMemory{},
		Templates:   map[string]*corev1.PodTemplateSpec{},
		Unreachable: map[string]time.Time{},
		ConfigMaps:  configMapDigests(in.Desired),
		Network:     in.Memory.Network,
	}
	workloads := 0
	for _, o := range in.Desired.Objects {
		if isWorkload(o) {
			workloads++
			s.objects[workload.Owner{Kind: o.Kind, Namespace: o.Namespace, Name: o.Name}] = o
		}
	}
	s.fleet()
	pods := s.observedPods()
	if workloads == 0 && len(pods) > 0 && !opts.AllowEmpty {
		return nil, fmt.Errorf("%w: %d pods observed", ErrEmptyRender, len(pods))
	}

	res, err := workload.Compute(workload.Input{
		Objects: in.Desired.Objects, Machines: s.workloadMachines(), Pods: pods,
		Memory: in.Memory.Workloads, Now: in.Now,
	}, workload.Options{
		TemplateHash:    resolve.TemplateHash,
		Eligible:        s.eligible,
		RescheduleAfter: opts.RescheduleAfter,
	})
	if err != nil {
		return nil, fmt.Errorf("compute workloads: %w", err)
	}
	s.pass.Memory.Workloads = res.Memory
	s.pass.Wake = res.Wake

	// Pods with a machine first: one that cannot be described holds its
	// machine back, and a held machine takes no new pod.
	wanted := s.wanted(&res)
	for _, p := range wanted {
		if p.machine != "" && !p.new() {
			s.resolve(p)
		}
	}
	for _, p := range s.place(wanted) {
		s.resolve(p)
	}
	s.stops(&res, wanted)
	s.machinePlans()
	s.remember(wanted)
	s.pass.Converged = s.converged(wanted, &res)
	sortPass(s.pass)
	s.pass.Summary = summarize(s.pass)
	return s.pass, nil
}

func isWorkload(o *render.Object) bool {
	switch o.Obj.(type) {
	case *corev1.Pod, *appsv1.Deployment, *appsv1.StatefulSet, *appsv1.DaemonSet, *batchv1.Job, *batchv1.CronJob:
		return true
	}
	return false
}

// fleet joins the repository's machines with what was observed.
func (s *state) fleet() {
	for _, m := range s.in.Desired.Machines() {
		s.machines[m.Name] = &machine{name: m.Name, spec: m}
	}
	for i := range s.in.Observed {
		o := &s.in.Observed[i]
		m := s.machines[o.Machine]
		if m == nil {
			m = &machine{name: o.Machine}
			s.machines[o.Machine] = m
		}
		if m.obs == nil {
			m.obs = o
		}
	}
	for _, name := range slices.Sorted(maps.Keys(s.machines)) {
		m := s.machines[name]
		s.order = append(s.order, m)
		m.reachable = m.obs != nil && m.obs.Reachable
		m.plan = &MachinePlan{Name: name, Reachable: m.reachable, InRepository: m.spec != nil}
		switch {
		case m.obs == nil:
			m.plan.Err = "not observed"
		case !m.reachable:
			m.plan.Err = cmp.Or(m.obs.Err, "agent did not answer")
		}
		if !m.reachable && m.spec != nil {
			m.since = s.in.Memory.Unreachable[name]
			if m.since.IsZero() {
				m.since = s.in.Now
			}
			m.plan.UnreachableSince = m.since
			if g := s.opts.RescheduleAfter; g > 0 {
				m.plan.RescheduleAt = m.since.Add(g)
			}
			s.pass.Memory.Unreachable[name] = m.since
		}
		if m.reachable {
			m.plan.Generation, m.plan.Digest = m.obs.Node.Generation, m.obs.Node.DesiredDigest
		}
		if m.spec != nil {
			m.sched = schedule.Machine{
				Name: name, Labels: m.spec.Labels, Taints: m.spec.Spec.Taints,
				Unschedulable: m.spec.Spec.Unschedulable, Ready: m.reachable,
			}
			if m.reachable {
				m.sched.Allocatable = m.obs.Node.Allocatable
				// An agent whose containerd does not answer takes no new pod.
				m.sched.Ready = m.obs.Node.RuntimeError == ""
			}
		}
	}
}

func (s *state) workloadMachines() []workload.Machine {
	var out []workload.Machine
	for _, m := range s.order {
		if m.spec == nil {
			continue
		}
		out = append(out, workload.Machine{
			Name: m.name, Reachable: m.reachable, UnreachableSince: m.since,
			Labels: m.spec.Labels, Taints: m.spec.Spec.Taints,
		})
	}
	return out
}

// observedPods is the controllers' view of the fleet's pods: what
// reachable agents report, and what the previous pass placed on machines
// that did not answer (their pods are still there, as far as anyone knows).
// A pod name is given to the controllers once: should copies run on two
// machines (one was unreachable while its pod was replaced elsewhere), the
// one where the previous pass placed it wins, else a ready one, else the
// first by machine name; the others are stopped as strays.
func (s *state) observedPods() []workload.Pod {
	type candidate struct {
		pod     workload.Pod
		rank    int // lower wins
		machine string
	}
	byKey := map[string][]candidate{}
	var out []workload.Pod
	for _, m := range s.order {
		switch {
		case m.reachable:
			for i := range m.obs.Pods {
				st := &m.obs.Pods[i]
				key := st.Namespace + "/" + st.Name
				s.observed[key] = append(s.observed[key], observedPod{m.name, st})
				pm, remembered := s.in.Memory.Pods[key]
				var since time.Time
				if st.Ready {
					since = s.in.Now
					if remembered && pm.UID == st.UID && !pm.ReadySince.IsZero() {
						since = pm.ReadySince
					}
				}
				p := workload.Observed(m.name, &api.Pod{Labels: st.Labels}, st, time.Time{}, since)
				p.TemplateHash = st.Hash
				if st.Terminating {
					out = append(out, p)
					continue
				}
				rank := 2
				switch {
				case remembered && pm.Machine == m.name:
					rank = 0
				case st.Ready:
					rank = 1
				}
				byKey[key] = append(byKey[key], candidate{p, rank, m.name})
			}
		case m.spec != nil:
			for _, key := range slices.Sorted(maps.Keys(s.in.Memory.Pods)) {
				pm := s.in.Memory.Pods[key]
				if pm.Machine != m.name {
					continue
				}
				ns, name, _ := strings.Cut(key, "/")
				byKey[key] = append(byKey[key], candidate{workload.Pod{
					Namespace: ns, Name: name, Owner: pm.Owner, Machine: m.name,
					TemplateHash: pm.Hash, Phase: corev1.PodRunning,
				}, 3, m.name})
			}
		}
	}
	for _, key := range slices.Sorted(maps.Keys(byKey)) {
		cs := byKey[key]
		best := slices.MinFunc(cs, func(a, b candidate) int {
			return cmp.Or(cmp.Compare(a.rank, b.rank), cmp.Compare(a.machine, b.machine))
		})
		out = append(out, best.pod)
	}
	return out
}

// eligible is the scheduler's filters for a DaemonSet pod on one machine,
// apart from resources and readiness (a DaemonSet pod belongs on every
// machine it may run on, as in Kubernetes' nodeShouldRunDaemonPod).
func (s *state) eligible(spec *corev1.PodSpec, wm workload.Machine) bool {
	m := s.machines[wm.Name]
	if m == nil || m.spec == nil {
		return false
	}
	sm := m.sched
	sm.Ready, sm.Unschedulable = true, false
	sm.Allocatable = corev1.ResourceList{corev1.ResourcePods: *resource.NewQuantity(1, resource.DecimalSI)}
	for k, q := range schedule.PodRequests(spec) {
		sm.Allocatable[k] = q
	}
	spec = spec.DeepCopy()
	spec.NodeName = ""
	r := schedule.Schedule([]schedule.Machine{sm}, nil, []schedule.Pod{{Namespace: "eligibility", Name: "probe", Spec: spec}})
	return len(r.Placements) == 1
}

// wanted lists every pod the controllers want, with its template found.
func (s *state) wanted(res *workload.Result) []*pod {
	var out []*pod
	current := map[workload.Owner]*corev1.PodTemplateSpec{}
	for wi := range res.Workloads {
		for _, wp := range res.Workloads[wi].Pods {
			if wp.Template != nil && current[wp.Owner] == nil {
				current[wp.Owner] = wp.Template
			}
		}
	}
	for wi := range res.Workloads {
		w := &res.Workloads[wi]
		for _, wp := range w.Pods {
			p := &pod{want: wp, machine: wp.Machine, tmpl: wp.Template, reason: podReason(wp.Reason, w.Reason)}
			if p.tmpl == nil {
				cur := current[wp.Owner]
				if cur == nil {
					cur = s.writtenTemplate(wp.Owner)
				}
				p.tmpl, p.carried = s.knownTemplate(p, cur)
			}
			for _, o := range s.observed[p.key()] {
				if o.machine == p.machine && o.status.Hash == wp.Hash && !o.status.Terminating {
					p.observed = o.status
				}
			}
			out = append(out, p)
		}
	}
	return out
}

// podReason is the controller's reason for one pod, followed by what the
// workload does as a whole.
func podReason(pod, workload string) string {
	if pod == "" || workload == "" {
		return pod + workload
	}
	// The workload's reason goes on to name the pods it starts and stops;
	// each pod's line needs only the head ("rolling update 2/3: surge 1").
	for _, sep := range []string{", start ", ", stop "} {
		if i := strings.Index(workload, sep); i > 0 {
			workload = workload[:i]
		}
	}
	return pod + "; " + workload
}

// writtenTemplate is a workload's pod template as written in git, for
// when no pod of this pass carries it.
func (s *state) writtenTemplate(owner workload.Owner) *corev1.PodTemplateSpec {
	o := s.objects[owner]
	if o == nil {
		return nil
	}
	meta, spec, _, ok := render.PodTemplate(o)
	if !ok {
		return nil
	}
	return &corev1.PodTemplateSpec{ObjectMeta: *meta, Spec: *spec}
}

// knownTemplate finds the template of a kept pod whose revision is no
// longer in git: in memory, else the workload's current template (carried:
// the agent keeps what runs, since UID and hash are unchanged).
func (s *state) knownTemplate(p *pod, current *corev1.PodTemplateSpec) (*corev1.PodTemplateSpec, bool) {
	if pm, ok := s.in.Memory.Pods[p.key()]; ok && pm.Hash == p.want.Hash {
		if t := s.in.Memory.Templates[pm.Template]; t != nil {
			return t, false
		}
	}
	return current, current != nil
}

// place schedules the pods that have no machine yet, and returns those it
// placed.
func (s *state) place(wanted []*pod) []*pod {
	if !slices.ContainsFunc(wanted, (*pod).new) {
		return nil
	}
	var machines []schedule.Machine
	for _, m := range s.order {
		if m.spec != nil {
			sm := m.sched
			sm.Ready = sm.Ready && len(m.held) == 0
			machines = append(machines, sm)
		}
	}
	var bound []schedule.BoundPod
	var fixed, pending []schedule.Pod
	byKey := map[schedule.PodKey]*pod{}
	wantedKeys := map[string]bool{}
	for _, p := range wanted {
		wantedKeys[p.key()] = true
		sp := schedPod(p.want.Namespace, p.want.Name, p.want.Owner, p.tmpl)
		switch {
		case !p.new():
			if p.machine != "" && (p.observed == nil || !finished(p.observed)) {
				bound = append(bound, schedule.BoundPod{Pod: sp, Machine: p.machine})
			}
			continue
		case p.machine != "":
			// Admitted to its machine before anything is scheduled.
			spec := &corev1.PodSpec{}
			if sp.Spec != nil {
				spec = sp.Spec.DeepCopy()
			}
			spec.NodeName, sp.Spec = p.machine, spec
			fixed = append(fixed, sp)
		default:
			pending = append(pending, sp)
		}
		byKey[sp.Key()] = p
	}
	pending = append(fixed, pending...)
	// Pods on their way out still hold their resources and ports.
	for _, key := range slices.Sorted(maps.Keys(s.observed)) {
		if wantedKeys[key] {
			continue
		}
		for _, o := range s.observed[key] {
			if finished(o.status) {
				continue
			}
			var t *corev1.PodTemplateSpec
			if pm, ok := s.in.Memory.Pods[key]; ok && pm.Hash == o.status.Hash {
				t = s.in.Memory.Templates[pm.Template]
			}
			owner, _ := workload.OwnerFromLabels(o.status.Namespace, o.status.Labels)
			bound = append(bound, schedule.BoundPod{Pod: schedPod(o.status.Namespace, o.status.Name, owner, t), Machine: o.machine})
		}
	}
	r := schedule.Schedule(machines, bound, pending, schedule.WithNamespaceLabels(namespaceLabels(s.in.Desired)))
	var placed []*pod
	for _, sp := range pending {
		k := sp.Key()
		p := byKey[k]
		if m, ok := r.Placements[k]; ok {
			p.machine = m
			placed = append(placed, p)
			continue
		}
		p.machine = "" // refused by its machine: not sent
		fe := r.Unschedulable[k]
		u := Unschedulable{Namespace: k.Namespace, Name: k.Name, Owner: p.want.Owner}
		if fe != nil {
			u.Message, u.PerMachine = fe.Message, fe.PerMachine
		}
		s.pass.Unschedulable = append(s.pass.Unschedulable, u)
	}
	return placed
}

// finished: the pod ended (a Job's, or one with restartPolicy Never) and
// holds no resources.
func finished(st *api.PodStatus) bool {
	return st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed
}

func schedPod(ns, name string, owner workload.Owner, t *corev1.PodTemplateSpec) schedule.Pod {
	sp := schedule.Pod{Namespace: ns, Name: name}
	if owner.Kind != "" && owner.Kind != "Pod" {
		sp.Owner = owner.Kind + "/" + owner.Name
	}
	if t != nil {
		sp.Labels, sp.Spec = t.Labels, &t.Spec
	}
	return sp
}

// resolve turns a placed pod into what its agent runs, and decides its
// action.
func (s *state) resolve(p *pod) {
	m := s.machines[p.machine]
	if m == nil || m.spec == nil {
		s.pass.Errors = append(s.pass.Errors, s.errorf(p, "machine %s is not in the repository", p.machine))
		return
	}
	uid := podUID(p.want.Namespace, p.want.Name, p.want.Hash)
	if p.observed != nil && p.observed.UID != "" {
		uid = p.observed.UID
	}
	switch {
	case p.observed != nil || p.want.Action == workload.Keep:
		p.action = Keep // on an unreachable machine: kept as remembered
	case p.want.Action == workload.Replace:
		p.action = Replace
	default:
		p.action = Start
	}
	m.pods = append(m.pods, p)
	if !m.reachable {
		return // nothing is sent; the pod is remembered where it is
	}
	if p.tmpl == nil || p.carried {
		// Exactly what runs, if this process sent it.
		if last := s.lastSent(p, uid); last != nil {
			if p.carried {
				p.tmpl, p.carried = nil, false // not its template: not remembered as one
			}
			p.resolved = last
			return
		}
	}
	if p.tmpl == nil {
		s.fail(m, p, "its template is neither in the repository nor in the controller's memory")
		return
	}
	if p.carried {
		s.pass.Warnings = append(s.pass.Warnings, fmt.Sprintf(
			"pod %s on %s: the template of its revision %s is not remembered; it is described by the current template under its old hash, so its agent keeps it as it runs until the rollout replaces it",
			p.key(), p.machine, p.want.Hash))
	}
	labels, annotations := p.tmpl.Labels, p.tmpl.Annotations
	if p.carried && p.observed != nil {
		labels = p.observed.Labels
	}
	r, err := resolve.Pod(&resolve.Input{
		Namespace: p.want.Namespace, Name: p.want.Name, UID: uid,
		Labels: labels, Annotations: annotations, Spec: &p.tmpl.Spec, Hash: p.want.Hash,
		Machine: resolve.Machine{Name: m.name, Addresses: addresses(m.spec), Allocatable: m.sched.Allocatable},
		Sources: s.sources,
	})
	if err != nil {
		s.fail(m, p, err.Error())
		return
	}
	for _, w := range r.Warnings {
		s.pass.Warnings = append(s.pass.Warnings, "pod "+p.key()+": "+w)
	}
	p.resolved = &r.Pod
	if p.action == Keep {
		if why := s.contentChange(p); why != "" {
			p.action, p.reason = Update, why
		}
	}
}

// fail records a pod that cannot be sent. A new pod is left out of its
// machine's set; a pod of that name that runs there (the pod itself, or
// the incarnation a Replace would stop) holds the whole set back, since
// leaving it out would stop it.
func (s *state) fail(m *machine, p *pod, msg string) {
	s.pass.Errors = append(s.pass.Errors, s.errorf(p, "%s", msg))
	p.reason = "not sent, see errors; " + p.reason
	runs := slices.ContainsFunc(s.observed[p.key()], func(o observedPod) bool {
		return o.machine == m.name && !o.status.Terminating
	})
	if runs {
		m.held = append(m.held, "pod "+p.key()+" cannot be described")
	}
}

func (s *state) errorf(p *pod, format string, args ...any) Error {
	e := Error{Object: p.want.Owner.String(), Pod: p.key(), Machine: p.machine, Message: fmt.Sprintf(format, args...)}
	if o := s.objects[p.want.Owner]; o != nil {
		e.Pos = o.Pos
	}
	return e
}

// lastSent finds the pod in the set this process last sent its machine.
func (s *state) lastSent(p *pod, uid string) *api.Pod {
	last := s.in.Last[p.machine]
	if last == nil {
		return nil
	}
	for i := range last.Pods {
		lp := &last.Pods[i]
		if lp.Key() == p.key() && lp.Hash == p.want.Hash && lp.UID == uid {
			return lp
		}
	}
	return nil
}

// contentChange says, for a kept pod, which ConfigMaps or Secrets it
// refers to changed since the previous pass and how the pod sees it.
// ConfigMaps are compared through their digests in memory; Secrets (never
// digested) only through the set this process last sent, when it has one.
func (s *state) contentChange(p *pod) string {
	var changed []src
	seen := map[src]bool{}
	var secrets []src
	for _, ref := range resolve.References(&p.tmpl.Spec) {
		k := src{ref.Kind, ref.Name}
		if seen[k] {
			continue
		}
		seen[k] = true
		if ref.Kind == resolve.KindSecret {
			secrets = append(secrets, k)
			continue
		}
		key := p.want.Namespace + "/" + ref.Name
		if old, ok := s.in.Memory.ConfigMaps[key]; ok && old != s.pass.Memory.ConfigMaps[key] {
			changed = append(changed, k)
		}
	}
	if last := s.lastSent(p, p.resolved.UID); len(changed) == 0 && last != nil && !samePod(last, p.resolved) {
		if len(secrets) == 0 {
			return "resolved content changed since the last set sent"
		}
		changed = secrets
	}
	var inPlace, later []string
	for _, c := range changed {
		in, l := resolve.Affected(&p.tmpl.Spec, c.kind, c.name)
		if len(in) > 0 {
			inPlace = append(inPlace, changedNames([]src{c}))
		}
		for _, r := range l {
			what := cmp.Or(r.Env, r.MountPath, r.Volume)
			later = append(later, fmt.Sprintf("%s (%s %s)", c.name, r.Via, what))
		}
	}
	var parts []string
	if len(inPlace) > 0 {
		parts = append(parts, strings.Join(inPlace, ", ")+" changed: files updated in place")
	}
	if len(later) > 0 {
		if len(inPlace) == 0 {
			parts = append(parts, changedNames(changed)+" changed")
		}
		parts = append(parts, "seen only after a restart: "+strings.Join(later, ", "))
	}
	return strings.Join(parts, "; ")
}

// src is a ConfigMap or Secret a pod refers to.
type src struct {
	kind resolve.Kind
	name string
}

func changedNames(cs []src) string {
	names := make([]string, len(cs))
	for i, c := range cs {
		names[i] = string(c.kind) + " " + c.name
	}
	return strings.Join(names, ", ")
}

func samePod(a, b *api.Pod) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

// stops records the observed pods that go: those the controllers stop,
// those whose owner left the repository, and copies of a wanted pod on
// another machine than the one it is wanted on.
func (s *state) stops(res *workload.Result, wanted []*pod) {
	stopped := map[string]bool{}
	add := func(st workload.Stop) {
		m := s.machines[st.Machine]
		switch {
		case m == nil || m.spec == nil:
			return // a machine outside the repository is told nothing
		case !m.reachable:
			st.Reason += " (once " + st.Machine + " answers again)"
		}
		stopped[st.Machine+"\x00"+st.Namespace+"/"+st.Name] = true
		s.pass.Pods = append(s.pass.Pods, PodAction{
			Machine: st.Machine, Namespace: st.Namespace, Name: st.Name, Owner: st.Owner,
			Action: Stop, Reason: st.Reason,
		})
	}
	for wi := range res.Workloads {
		w := &res.Workloads[wi]
		for _, st := range w.Stop {
			add(st)
		}
		s.pass.Workloads = append(s.pass.Workloads, WorkloadStatus{Owner: w.Owner, Status: w.Status, Reason: w.Reason, Changes: w.Changes()})
	}
	for _, st := range res.Orphans {
		add(st)
		s.pass.Pruned = append(s.pass.Pruned, st)
	}
	where := make(map[string]string, len(wanted))
	for _, p := range wanted {
		where[p.key()] = p.machine
	}
	for _, key := range slices.Sorted(maps.Keys(s.observed)) {
		for _, o := range s.observed[key] {
			if o.status.Terminating || stopped[o.machine+"\x00"+key] {
				continue
			}
			m, ok := where[key]
			if ok && m == o.machine {
				continue
			}
			owner, _ := workload.OwnerFromLabels(o.status.Namespace, o.status.Labels)
			why := "wanted on " + m + ", not here"
			if !ok || m == "" {
				why = "not wanted by any workload"
			}
			add(workload.Stop{Namespace: o.status.Namespace, Name: o.status.Name, Owner: owner, Machine: o.machine, Reason: why})
		}
	}
}

// machinePlans builds each reachable machine's set and decides whether it
// is sent.
func (s *state) machinePlans() {
	for _, m := range s.order {
		plan := m.plan
		var counts [5]int
		for _, p := range m.pods {
			s.pass.Pods = append(s.pass.Pods, PodAction{
				Machine: m.name, Namespace: p.want.Namespace, Name: p.want.Name, Owner: p.want.Owner,
				Action: p.action, Reason: p.reason, Hash: p.want.Hash, UID: uidOf(p),
			})
			counts[actionIndex(p.action)]++
		}
		s.pass.Machines = append(s.pass.Machines, *plan)
		mp := &s.pass.Machines[len(s.pass.Machines)-1]
		switch {
		case m.spec == nil:
			n := 0
			if m.obs != nil {
				n = len(m.obs.Pods)
			}
			mp.Reasons = append(mp.Reasons, fmt.Sprintf("not in the repository: left as it is (%d pods)", n))
			continue
		case !m.reachable:
			mp.Reasons = append(mp.Reasons, "unreachable: "+mp.Err)
			continue
		}
		set := api.DesiredPods{Pods: []api.Pod{}}
		for _, p := range m.pods {
			if p.resolved != nil {
				set.Pods = append(set.Pods, *p.resolved)
			}
		}
		slices.SortFunc(set.Pods, func(a, b api.Pod) int { return strings.Compare(a.Key(), b.Key()) })
		digest := set.Digest()
		mp.Pods = len(set.Pods)
		if len(m.held) > 0 {
			mp.Held = strings.Join(m.held, "; ")
			mp.Reasons = append(mp.Reasons, "held: "+mp.Held)
			continue
		}
		if digest == m.obs.Node.DesiredDigest {
			continue
		}
		set.Generation = m.obs.Node.Generation + 1
		mp.Send, mp.Generation, mp.Digest = &set, set.Generation, digest
		stops := 0
		for _, st := range s.pass.Pods {
			if st.Action == Stop && st.Machine == m.name {
				stops++
			}
		}
		mp.Reasons = append(mp.Reasons, summary(counts, stops))
	}
}

func actionIndex(a Action) int {
	return slices.Index([]Action{Start, Replace, Update, Keep, Stop}, a)
}

func summary(c [5]int, stops int) string {
	var parts []string
	for i, w := range []string{"start", "replace", "update"} {
		if c[i] > 0 {
			parts = append(parts, fmt.Sprintf("%d to %s", c[i], w))
		}
	}
	if stops > 0 {
		parts = append(parts, fmt.Sprintf("%d to stop", stops))
	}
	if len(parts) == 0 {
		return "pod set changed (resolved content, or the agent holds another set)"
	}
	return strings.Join(parts, ", ")
}

func uidOf(p *pod) string {
	if p.resolved != nil {
		return p.resolved.UID
	}
	if p.observed != nil {
		return p.observed.UID
	}
	return podUID(p.want.Namespace, p.want.Name, p.want.Hash)
}

// remember keeps, for the next pass, every wanted pod that has a machine,
// with its template.
func (s *state) remember(wanted []*pod) {
	mem := &s.pass.Memory
	// A revision's pods share one template value: digest it once.
	digests := map[*corev1.PodTemplateSpec]string{}
	for _, p := range wanted {
		if p.machine == "" || (p.resolved == nil && p.observed == nil && s.machines[p.machine].reachable) {
			continue // never reached a machine: nothing to remember
		}
		pm := PodMemory{Machine: p.machine, Owner: p.want.Owner, Hash: p.want.Hash, UID: uidOf(p)}
		if prev, ok := s.in.Memory.Pods[p.key()]; ok && prev.UID == pm.UID {
			pm.ReadySince = prev.ReadySince
		}
		if p.observed != nil {
			switch {
			case !p.observed.Ready:
				pm.ReadySince = time.Time{}
			case pm.ReadySince.IsZero():
				pm.ReadySince = s.in.Now
			}
		}
		if p.tmpl != nil && !p.carried {
			d, ok := digests[p.tmpl]
			if !ok {
				d = templateDigest(p.tmpl)
				digests[p.tmpl] = d
			}
			mem.Templates[d] = p.tmpl
			pm.Template = d
		}
		mem.Pods[p.key()] = pm
	}
}

// converged: nothing left to do but wait.
func (s *state) converged(wanted []*pod, res *workload.Result) bool {
	if len(s.pass.Errors) > 0 || len(s.pass.Unschedulable) > 0 || res.Changes() > 0 {
		return false
	}
	for _, m := range s.pass.Machines {
		if m.InRepository && (!m.Reachable || m.Send != nil || m.Held != "") {
			return false
		}
	}
	for _, p := range wanted {
		if p.observed == nil || (!p.observed.Ready && !finished(p.observed)) {
			return false
		}
	}
	where := make(map[string]string, len(wanted))
	for _, p := range wanted {
		where[p.key()] = p.machine
	}
	for key, os := range s.observed {
		for _, o := range os {
			if m, ok := where[key]; !ok || m != o.machine || o.status.Terminating {
				return false // still to stop, or still stopping
			}
		}
	}
	return true
}

func sortPass(p *Pass) {
	slices.SortFunc(p.Pods, func(a, b PodAction) int {
		return cmp.Or(cmp.Compare(a.Machine, b.Machine), cmp.Compare(a.Namespace, b.Namespace),
			cmp.Compare(a.Name, b.Name), cmp.Compare(actionIndex(a.Action), actionIndex(b.Action)))
	})
	slices.SortFunc(p.Unschedulable, func(a, b Unschedulable) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	slices.SortStableFunc(p.Errors, func(a, b Error) int {
		return cmp.Or(cmp.Compare(a.Object, b.Object), cmp.Compare(a.Pod, b.Pod))
	})
	slices.Sort(p.Warnings)
	p.Warnings = slices.Compact(p.Warnings)
}

// podUID derives a pod's UID from its namespace, name and template hash, in
// the form of a UUID: the same pod gets the same UID from any pass, a new
// template under the same name a new one.
func podUID(ns, name, hash string) string {
	sum := sha256.Sum256([]byte("berth.dev/pod\x00" + ns + "\x00" + name + "\x00" + hash))
	h := hex.EncodeToString(sum[:16])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

func templateDigest(t *corev1.PodTemplateSpec) string {
	b, err := json.Marshal(t)
	if err != nil {
		b = []byte(err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12])
}

// configMapDigests digests every ConfigMap's content (ConfigMaps hold no
// secrets; Secrets are not digested, so memory reveals nothing of them).
func configMapDigests(d *render.Desired) map[string]string {
	out := map[string]string{}
	for _, o := range d.Objects {
		cm, ok := o.Obj.(*corev1.ConfigMap)
		if !ok {
			continue
		}
		b, _ := json.Marshal(struct {
			D map[string]string `json:"d"`
			B map[string][]byte `json:"b"`
		}{cm.Data, cm.BinaryData})
		sum := sha256.Sum256(b)
		out[o.Namespace+"/"+o.Name] = hex.EncodeToString(sum[:12])
	}
	return out
}

func addresses(m *v1alpha1.Machine) []string {
	if _, err := netip.ParseAddr(m.Spec.Address); err == nil {
		return []string{m.Spec.Address}
	}
	return nil
}

// namespaceLabels are the labels of the repository's Namespaces, for pod
// affinity terms with a namespaceSelector.
func namespaceLabels(d *render.Desired) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, o := range d.Objects {
		if ns, ok := o.Obj.(*corev1.Namespace); ok {
			out[o.Name] = ns.Labels
		}
	}
	return out
}
