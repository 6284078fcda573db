package render

import (
	"cmp"
	"slices"
	"strings"

	"berth.dev/berth/render/api/v1alpha1"
)

// Key identifies an object in a repository. Namespace is empty for
// cluster-scoped kinds.
type Key struct {
	Group     string `json:"group,omitempty"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// String is "Kind ns/name", or "Kind name" for cluster-scoped objects: the
// way diagnostics and plans name an object.
func (k Key) String() string {
	if k.Namespace == "" {
		return k.Kind + " " + k.Name
	}
	return k.Kind + " " + k.Namespace + "/" + k.Name
}

// Compare orders keys by group, kind, namespace and name.
func (k Key) Compare(o Key) int {
	return cmp.Or(
		cmp.Compare(k.Group, o.Group),
		cmp.Compare(k.Kind, o.Kind),
		cmp.Compare(k.Namespace, o.Namespace),
		cmp.Compare(k.Name, o.Name),
	)
}

// Object is one decoded, defaulted document of the repository.
type Object struct {
	APIVersion string
	Kind       string
	Namespace  string // defaulted to "default" for namespaced kinds
	Name       string
	// Obj points at the typed value: *corev1.Pod, *appsv1.Deployment,
	// *v1alpha1.Machine, ...
	Obj any
	// Pos is where the document starts.
	Pos Pos
	// fields holds the position of every field present in the source, by
	// path in Kubernetes notation (spec.containers[0].image,
	// metadata.labels[app]), in document order. A slice, not a map: it is
	// built for every field of every object and read only for the few
	// that a diagnostic names.
	fields []fieldPos
}

type fieldPos struct {
	path         string
	line, column int32
}

func (o *Object) lookup(path string) (Pos, bool) {
	for _, f := range o.fields {
		if f.path == path {
			return Pos{File: o.Pos.File, Line: int(f.line), Column: int(f.column)}, true
		}
	}
	return Pos{}, false
}

// Key returns the object's identity.
func (o *Object) Key() Key {
	g, _, _ := strings.Cut(o.APIVersion, "/")
	if !strings.Contains(o.APIVersion, "/") {
		g = ""
	}
	return Key{Group: g, Kind: o.Kind, Namespace: o.Namespace, Name: o.Name}
}

// Ref names the object for messages: "Kind ns/name".
func (o *Object) Ref() string { return o.Key().String() }

// FieldPos returns the position of path in the source, or of its nearest
// ancestor that is present there, or of the document itself.
func (o *Object) FieldPos(path string) Pos {
	for p := path; p != ""; p = ParentPath(p) {
		if pos, ok := o.lookup(p); ok {
			return pos
		}
	}
	return o.Pos
}

// HasField reports whether path was written in the source (as opposed to
// filled in by a default).
func (o *Object) HasField(path string) bool {
	_, ok := o.lookup(path)
	return ok
}

// ParentPath strips the last element of a field path: a.b[0].c -> a.b[0] ->
// a.b -> a -> "".
func ParentPath(p string) string {
	if strings.HasSuffix(p, "]") {
		if i := strings.LastIndexByte(p, '['); i > 0 {
			return p[:i]
		}
		return ""
	}
	i := strings.LastIndexAny(p, ".]")
	if i < 0 {
		return ""
	}
	if p[i] == ']' {
		return p[:i+1]
	}
	return p[:i]
}

// Desired is what a repository says the fleet should run.
type Desired struct {
	// Objects, sorted by key; ignored and invalid documents are left out.
	Objects []*Object
	// Cluster is the repository's Cluster document with defaults applied,
	// or the defaults alone when there is none.
	Cluster *v1alpha1.Cluster
	// Diagnostics from loading and validation, sorted.
	Diagnostics Diagnostics

	index map[Key]*Object
}

// Get returns the object with key k, or nil.
func (d *Desired) Get(k Key) *Object {
	return d.index[k]
}

// Machines returns the Machine objects, sorted by name.
func (d *Desired) Machines() []*v1alpha1.Machine {
	var ms []*v1alpha1.Machine
	for _, o := range d.Objects {
		if m, ok := o.Obj.(*v1alpha1.Machine); ok {
			ms = append(ms, m)
		}
	}
	return ms
}

func (d *Desired) finish() {
	slices.SortFunc(d.Objects, func(a, b *Object) int { return a.Key().Compare(b.Key()) })
	d.index = make(map[Key]*Object, len(d.Objects))
	for _, o := range d.Objects {
		d.index[o.Key()] = o
	}
	d.Diagnostics.Sort()
}
