// Package policy is berth's admission: it decides whether the objects a
// repository declares may run, before anything is planned or applied. It
// owns two sets of rules:
//
//   - Pod Security Standards, per namespace, from the Namespace's
//     pod-security.kubernetes.io/{enforce,warn,audit} labels, evaluated with
//     Kubernetes' own checks (k8s.io/pod-security-admission), so that a
//     pod template is refused exactly when Kubernetes would refuse its
//     pods, with Kubernetes' words;
//   - the production checklist (replicas, resources, probes, non-root,
//     read-only root filesystem, no privilege escalation, dropped
//     capabilities, digest-pinned images, a dedicated ServiceAccount),
//     each rule warning by default and set to off, warn or deny by the
//     Cluster's spec.policy.checklist.
//
// Evaluate only reads the objects it is given: it never mutates or defaults
// them (render does the defaulting), and its result depends on nothing but
// its input.
package policy

import (
	"cmp"
	"runtime"
	"slices"
	"strings"
	"sync"

	"berth.dev/berth/render"
	"berth.dev/berth/render/api/v1alpha1"
)

// Violation is one object breaking one rule.
type Violation struct {
	// Rule is "pod-security", "checklist" (for the Cluster's checklist
	// settings themselves) or the name of a checklist rule.
	Rule string
	// Action is ActionDeny or ActionWarn, never ActionOff.
	Action v1alpha1.Action
	// Object is the object at fault.
	Object render.Key
	// Pos is the most specific place in the repository that the finding is
	// about: the field itself when it is written there, otherwise its
	// nearest written ancestor.
	Pos render.Pos
	// Field is the field path, in Kubernetes notation, that the finding is
	// about (it may be a field to add, absent from the source).
	Field   string
	Message string
}

// Diagnostic returns the violation as a render.Diagnostic: deny is an
// error, warn a warning. The message starts with the rule's name, the key
// a Cluster's spec.policy.checklist uses to change its action.
func (v Violation) Diagnostic() render.Diagnostic {
	sev := render.SeverityWarning
	if v.Action == v1alpha1.ActionDeny {
		sev = render.SeverityError
	}
	obj := ""
	if v.Object != (render.Key{}) {
		obj = v.Object.String()
	}
	return render.Diagnostic{
		Severity: sev,
		Pos:      v.Pos,
		Object:   obj,
		Field:    v.Field,
		Message:  v.Rule + ": " + v.Message,
	}
}

// Denied reports whether any violation denies admission.
func Denied(vs []Violation) bool {
	return slices.ContainsFunc(vs, func(v Violation) bool { return v.Action == v1alpha1.ActionDeny })
}

// Diagnostics converts violations with Violation.Diagnostic.
func Diagnostics(vs []Violation) render.Diagnostics {
	ds := make(render.Diagnostics, len(vs))
	for i, v := range vs {
		ds[i] = v.Diagnostic()
	}
	return ds
}

// Evaluate checks every object of d against the Pod Security Standards of
// its namespace and the production checklist, and returns the violations
// sorted by file, line and rule. Objects render could not decode are not
// in d and so are not checked.
func Evaluate(d *render.Desired) []Violation {
	// First the settings that other objects' checks depend on: Namespace
	// labels, the Cluster's checklist, which workloads an HPA scales.
	e := &evaluation{settings: &settings{}}
	var cluster *render.Object
	for _, o := range d.Objects {
		switch o.Kind {
		case "Namespace":
			e.namespace(o)
		case "Cluster":
			if o.APIVersion == v1alpha1.APIVersion {
				cluster = o
			}
		case "HorizontalPodAutoscaler":
			e.autoscaler(o)
		}
	}
	var checklist map[string]v1alpha1.Action
	if d.Cluster != nil {
		checklist = d.Cluster.Spec.Policy.Checklist
	}
	e.configure(cluster, checklist)
	// Those settings' own violations wait for their object's turn below,
	// but for those about no object (at no position), which come first.
	for _, v := range e.out {
		if e.pending == nil {
			e.pending = map[render.Key][]Violation{}
		}
		e.pending[v.Object] = append(e.pending[v.Object], v)
	}
	first := e.pending[render.Key{}]
	sortViolations(first)

	// Then every object in the order of the files. Each object's
	// violations lie inside its own document, so sorting them object by
	// object sorts them all, for a fraction of the cost of one big sort;
	// and objects are independent, so runs of them are checked in
	// parallel.
	objs := slices.Clone(d.Objects)
	slices.SortFunc(objs, func(a, b *render.Object) int {
		if a.Pos.File != b.Pos.File {
			return strings.Compare(a.Pos.File, b.Pos.File)
		}
		return cmp.Or(cmp.Compare(a.Pos.Line, b.Pos.Line), cmp.Compare(a.Pos.Column, b.Pos.Column))
	})
	workers := min(runtime.GOMAXPROCS(0), len(objs)/minPerWorker)
	parts := make([][][]Violation, max(workers, 1))
	if workers <= 1 {
		parts[0] = e.settings.objects(objs)
	} else {
		var wg sync.WaitGroup
		for i := range workers {
			run := objs[i*len(objs)/workers : (i+1)*len(objs)/workers]
			wg.Go(func() { parts[i] = e.settings.objects(run) })
		}
		wg.Wait()
	}
	chunks := [][]Violation{first}
	for _, p := range parts {
		chunks = append(chunks, p...)
	}
	out := slices.Concat(chunks...)
	// A violation outside its object's document would break the
	// argument above; it cannot happen, but checking is cheap.
	if !slices.IsSortedFunc(out, compareViolations) {
		sortViolations(out)
	}
	return out
}

// minPerWorker is the fewest objects worth a goroutine of their own.
const minPerWorker = 512

// chunkSize is how many violations a chunk of the result holds.
const chunkSize = 4096

// objects checks a run of objects, sorted by position, and returns their
// violations, sorted, in chunks. Violations go to chunks that are joined
// once at the end, because growing one big slice would copy it over and
// over.
func (s *settings) objects(objs []*render.Object) [][]Violation {
	e := &evaluation{settings: s}
	for _, o := range objs {
		if cap(e.out)-len(e.out) < 64 {
			e.done = append(e.done, e.out)
			e.out = make([]Violation, 0, chunkSize)
		}
		start := len(e.out)
		if s.pending != nil {
			e.out = append(e.out, s.pending[o.Key()]...)
		}
		if o.Kind == "HorizontalPodAutoscaler" && e.on(ruleReplicas) {
			e.minReplicas(o)
		}
		if meta, spec, path, ok := render.PodTemplate(o); ok && spec != nil {
			e.podSecurity(o, meta, spec, path)
			e.checklist(o, spec, path)
		}
		sortViolations(e.out[start:])
	}
	return append(e.done, e.out)
}

// settings are what Evaluate learns from the repository before checking
// its objects; read-only while they are checked.
type settings struct {
	// namespaces holds the Pod Security policy of each declared
	// Namespace; a namespace not in it (default, kube-system, or one
	// render already reports as undeclared) is privileged.
	namespaces map[string]*nsPolicy
	// scaled holds the workloads a HorizontalPodAutoscaler scales.
	scaled map[render.Key]bool
	// actions is the action of each checklist rule.
	actions [numRules]v1alpha1.Action
	// pending holds the violations of the settings themselves, by the
	// object they are about.
	pending map[render.Key][]Violation
}

// evaluation gathers the violations of some objects.
type evaluation struct {
	*settings
	// out is the chunk being filled, done the full ones.
	out  []Violation
	done [][]Violation
}

func (e *evaluation) add(o *render.Object, rule string, action v1alpha1.Action, field, msg string) {
	e.out = append(e.out, Violation{
		Rule:    rule,
		Action:  action,
		Object:  o.Key(),
		Pos:     o.FieldPos(field),
		Field:   field,
		Message: msg,
	})
}

// compareViolations orders violations by file, line and rule, then by
// everything else, so that the order is total and output stable.
func compareViolations(a, b Violation) int {
	// Equal strings are the common case (one file, one rule): == settles
	// them without comparing byte by byte.
	if a.Pos.File != b.Pos.File {
		return strings.Compare(a.Pos.File, b.Pos.File)
	}
	if a.Pos.Line != b.Pos.Line {
		return cmp.Compare(a.Pos.Line, b.Pos.Line)
	}
	if a.Rule != b.Rule {
		return strings.Compare(a.Rule, b.Rule)
	}
	return cmp.Or(
		cmp.Compare(a.Pos.Column, b.Pos.Column),
		a.Object.Compare(b.Object),
		cmp.Compare(a.Field, b.Field),
		cmp.Compare(a.Message, b.Message),
		cmp.Compare(a.Action, b.Action),
	)
}

func sortViolations(vs []Violation) {
	if len(vs) > 1 {
		slices.SortFunc(vs, compareViolations)
	}
}

// within reports whether path p is anc or lies under it.
func within(p, anc string) bool {
	if !strings.HasPrefix(p, anc) {
		return false
	}
	return len(p) == len(anc) || p[len(anc)] == '.' || p[len(anc)] == '['
}

// commonAncestor returns the deepest path that is a or b or an ancestor of
// both.
func commonAncestor(a, b string) string {
	for a != "" && !within(b, a) {
		a = render.ParentPath(a)
	}
	return a
}

// Admit evaluates d and adds the violations to d.Diagnostics (denials as
// errors), so that one sorted list tells everything wrong with a revision.
// The objects themselves are left untouched.
func Admit(d *render.Desired) []Violation {
	vs := Evaluate(d)
	d.Diagnostics = append(d.Diagnostics, Diagnostics(vs)...)
	d.Diagnostics.Sort()
	return vs
}
