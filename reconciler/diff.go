package reconciler

import (
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"

	"berth.dev/berth/render"
)

// Action is what a change does to an object.
type Action string

// Actions, in the words Terraform uses.
const (
	ActionCreate  Action = "create"
	ActionUpdate  Action = "update"
	ActionDelete  Action = "delete"
	ActionReplace Action = "replace" // delete, then create: the update would be refused
)

// Change is what must happen to one object to go from one desired state to
// another.
type Change struct {
	Action     Action
	APIVersion string
	Kind       string
	Namespace  string // empty for cluster-scoped kinds
	Name       string
	// Pos is where the object is declared: in the newer state, or in the
	// older one for a delete.
	Pos render.Pos
	// Fields lists every changed leaf of an update or replace, in path
	// order. A create or delete lists none (the object is named), except
	// for a Secret, whose keys are listed as sensitive fields.
	Fields []FieldChange
	// Consequence says in one line what the change does to running pods
	// ("rolling update of 3 pods: maxSurge 1, maxUnavailable 0"), or is
	// empty.
	Consequence string
	// Reason, for a replace, names the field that cannot be updated in
	// place ("spec.selector is immutable").
	Reason string
}

// Key returns the identity of the changed object.
func (c *Change) Key() render.Key {
	o := render.Object{APIVersion: c.APIVersion, Kind: c.Kind, Namespace: c.Namespace, Name: c.Name}
	return o.Key()
}

// Ref names the object the way diagnostics do: "Kind ns/name".
func (c *Change) Ref() string { return c.Key().String() }

// FieldChange is one changed leaf of an object.
type FieldChange struct {
	// Path in Kubernetes notation: spec.replicas, metadata.labels[app],
	// spec.template.spec.containers[name=web].image. Items of lists that
	// have a merge key (containers by name, ports by port, volumeMounts by
	// mountPath, ...) are named by it, others by index.
	Path string
	// Before and After are JSON values (nil, bool, int64, float64, string,
	// []any, map[string]any); nil means absent. Both are nil when the
	// value is sensitive.
	Before, After any
	// Op says whether the field is added, removed or changed; it is the
	// only hint of what happened to a sensitive value.
	Op FieldOp
	// Sensitive marks a value that must not be shown: a Secret's data.
	Sensitive bool
}

// FieldOp is what happened to a field.
type FieldOp string

// Field operations.
const (
	OpAdd    FieldOp = "add"
	OpChange FieldOp = "change"
	OpRemove FieldOp = "remove"
)

// Below parallelThreshold object pairs Diff does not bother starting
// goroutines; above, workers take diffBatch pairs at a time.
const (
	parallelThreshold = 1024
	diffBatch         = 32
)

// Diff returns the changes that turn from into to, sorted by object key.
// Either may be nil, meaning an empty repository. Objects are matched by
// key (group, kind, namespace, name); two objects that are semantically
// equal (see equal: the same pointer, an allocation-free walk, then
// equality.Semantic) produce no change without being looked at further,
// so the cost of a diff is mostly in what changed. Objects are compared on
// every core when there are many. Consequences are worked out from to.
func Diff(from, to *render.Desired) []Change {
	pairs := pairUp(objectsOf(from), objectsOf(to))
	out := make([]*Change, len(pairs))
	workers := 1
	if len(pairs) >= parallelThreshold {
		workers = runtime.GOMAXPROCS(0)
	}
	if workers <= 1 {
		for i, p := range pairs {
			out[i] = diffPair(p.from, p.to)
		}
	} else {
		// Workers take small batches in turn: changes cluster (one
		// changed file holds neighbouring keys), and the unequal pairs
		// cost a hundred times the equal ones.
		var next atomic.Int64
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for {
					lo := int(next.Add(diffBatch)) - diffBatch
					if lo >= len(pairs) {
						return
					}
					for i := lo; i < min(lo+diffBatch, len(pairs)); i++ {
						out[i] = diffPair(pairs[i].from, pairs[i].to)
					}
				}
			})
		}
		wg.Wait()
	}

	var changes []Change
	var fromByKey, toByKey []*render.Object
	for i, c := range out {
		if c != nil {
			changes = append(changes, *c)
			fromByKey = append(fromByKey, pairs[i].from)
			toByKey = append(toByKey, pairs[i].to)
		}
	}
	cons := consumerIndexFor(to)
	for i := range changes {
		changes[i].Consequence = consequence(&changes[i], fromByKey[i], toByKey[i], cons)
	}
	return changes
}

func objectsOf(d *render.Desired) []*render.Object {
	if d == nil {
		return nil
	}
	objs := d.Objects
	less := func(a, b *render.Object) int { return a.Key().Compare(b.Key()) }
	if !slices.IsSortedFunc(objs, less) {
		objs = slices.Clone(objs)
		slices.SortStableFunc(objs, less)
	}
	return objs
}

type pair struct{ from, to *render.Object }

// pairUp merges two lists sorted by key into pairs of objects with the
// same key; one side is nil when the key is in one list only.
func pairUp(from, to []*render.Object) []pair {
	pairs := make([]pair, 0, max(len(from), len(to)))
	i, j := 0, 0
	for i < len(from) || j < len(to) {
		switch {
		case j == len(to):
			pairs = append(pairs, pair{from: from[i]})
			i++
		case i == len(from):
			pairs = append(pairs, pair{to: to[j]})
			j++
		default:
			switch c := from[i].Key().Compare(to[j].Key()); {
			case c < 0:
				pairs = append(pairs, pair{from: from[i]})
				i++
			case c > 0:
				pairs = append(pairs, pair{to: to[j]})
				j++
			default:
				pairs = append(pairs, pair{from: from[i], to: to[j]})
				i++
				j++
			}
		}
	}
	return pairs
}

// diffPair compares one pair, without its consequence, or returns nil when
// nothing changed.
func diffPair(from, to *render.Object) *Change {
	switch {
	case from == nil:
		c := newChange(ActionCreate, to)
		c.Fields = secretKeys(to, OpAdd)
		return c
	case to == nil:
		c := newChange(ActionDelete, from)
		c.Fields = secretKeys(from, OpRemove)
		return c
	}
	if equal(from, to) {
		return nil
	}
	fields := diffFields(from.Obj, to.Obj, isSecret(to))
	if len(fields) == 0 {
		// Different only in what is not desired state (status,
		// creationTimestamp, ...) or in how an equal value is spelled.
		return nil
	}
	c := newChange(ActionUpdate, to)
	c.Fields = fields
	if reason := immutable(from, to, fields); reason != "" {
		c.Action = ActionReplace
		c.Reason = reason
	}
	return c
}

func newChange(a Action, o *render.Object) *Change {
	return &Change{Action: a, APIVersion: o.APIVersion, Kind: o.Kind, Namespace: o.Namespace, Name: o.Name, Pos: o.Pos}
}

func isSecret(o *render.Object) bool {
	_, ok := o.Obj.(*corev1.Secret)
	return ok
}

// secretKeys lists the keys of a created or deleted Secret as sensitive
// fields, so that a plan says which keys it holds but never their values.
func secretKeys(o *render.Object, op FieldOp) []FieldChange {
	s, ok := o.Obj.(*corev1.Secret)
	if !ok {
		return nil
	}
	var fs []FieldChange
	for _, k := range sortedKeys(s.Data) {
		fs = append(fs, FieldChange{Path: "data[" + k + "]", Op: op, Sensitive: true})
	}
	for _, k := range sortedKeys(s.StringData) {
		fs = append(fs, FieldChange{Path: "stringData[" + k + "]", Op: op, Sensitive: true})
	}
	return fs
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
