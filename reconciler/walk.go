package reconciler

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// diffFields compares two typed objects of the same kind through their
// JSON form and returns every changed leaf. The Go type of the objects
// steers the walk: it tells a struct's fields (spec.replicas) from a map's
// keys (metadata.labels[app]), gives the merge key of a list (the
// patchMergeKey struct tag Kubernetes' strategic merge patch uses), and
// says whether an empty value means anything.
func diffFields(from, to any, secret bool) []FieldChange {
	a, errA := toJSON(from)
	b, errB := toJSON(to)
	if errA != nil || errB != nil {
		// API types always marshal; should one not, say that it changed
		// rather than nothing.
		return []FieldChange{{Path: "(object)", Op: OpChange, Sensitive: secret}}
	}
	w := walker{secret: secret}
	w.walk("", reflect.TypeOf(to), "", a, b)
	return w.out
}

func toJSON(v any) (any, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var out any
	if err := dec.Decode(&out); err != nil {
		return nil, err
	}
	return out, nil
}

type walker struct {
	secret bool
	out    []FieldChange
}

// Metadata fields the API server sets, which are not desired state.
var ignoredMeta = map[string]bool{
	"creationTimestamp":          true,
	"deletionTimestamp":          true,
	"deletionGracePeriodSeconds": true,
	"generation":                 true,
	"managedFields":              true,
	"resourceVersion":            true,
	"selfLink":                   true,
	"uid":                        true,
}

var objectMetaType = reflect.TypeFor[metav1.ObjectMeta]()

// walk compares a and b, the JSON values at path, whose Go type is t (nil
// when unknown). mergeKey is the list's merge key when t is a slice.
func (w *walker) walk(path string, t reflect.Type, mergeKey string, a, b any) {
	// An empty Go map or slice marshals as {} or [] or is left out,
	// depending on omitempty, and means the same either way; so does an
	// empty struct held by value. An empty struct behind a pointer
	// (emptyDir: {}) is a value of its own.
	pointer := t != nil && t.Kind() == reflect.Pointer
	t = deref(t)
	if !pointer {
		a, b = nilIfEmpty(a), nilIfEmpty(b)
	}
	if a == nil && b == nil {
		return
	}
	am, aMap := a.(map[string]any)
	bm, bMap := b.(map[string]any)
	al, aList := a.([]any)
	bl, bList := b.([]any)
	switch {
	case (aMap || a == nil) && (bMap || b == nil):
		if len(am) == 0 && len(bm) == 0 {
			if (a == nil) != (b == nil) {
				w.emit(path, a, b) // absent ↔ {}
			}
			return
		}
		w.walkMap(path, t, am, bm)
	case (aList || a == nil) && (bList || b == nil):
		if len(al) == 0 && len(bl) == 0 {
			if (a == nil) != (b == nil) {
				w.emit(path, a, b)
			}
			return
		}
		w.walkList(path, t, mergeKey, al, bl)
	default:
		if !reflect.DeepEqual(a, b) {
			w.emit(path, a, b)
		}
	}
}

func (w *walker) walkMap(path string, t reflect.Type, a, b map[string]any) {
	var info *structInfo
	isStruct := t != nil && t.Kind() == reflect.Struct
	if isStruct {
		info = structInfoOf(t)
	}
	keys := make([]string, 0, len(a)+len(b))
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		var child reflect.Type
		var mk, p string
		switch {
		case isStruct:
			if t == objectMetaType && ignoredMeta[k] || k == "status" && info.object {
				continue
			}
			f := info.fields[k]
			child, mk = f.typ, f.mergeKey
			p = joinField(path, k)
		case t != nil && t.Kind() == reflect.Map:
			child = t.Elem()
			p = path + "[" + k + "]"
		default:
			p = joinField(path, k)
		}
		w.walk(p, child, mk, a[k], b[k])
	}
}

func (w *walker) walkList(path string, t reflect.Type, mergeKey string, a, b []any) {
	var elem reflect.Type
	if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
		elem = t.Elem()
	}
	// A list of plain values (command, args, finalizers) is one value:
	// shown whole, it reads better than element by element.
	if scalars(a) && scalars(b) {
		if !reflect.DeepEqual(a, b) {
			w.emit(path, listOrNil(a), listOrNil(b))
		}
		return
	}
	if mergeKey != "" {
		ka, okA := itemKeys(a, mergeKey)
		kb, okB := itemKeys(b, mergeKey)
		if okA && okB {
			w.walkKeyed(path, elem, mergeKey, a, b, ka, kb)
			return
		}
	}
	for i := range max(len(a), len(b)) {
		var x, y any
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		w.walk(path+"["+strconv.Itoa(i)+"]", elem, "", x, y)
	}
}

// walkKeyed matches the items of two lists by merge key, so that an
// inserted item does not show every one after it as changed.
func (w *walker) walkKeyed(path string, elem reflect.Type, mergeKey string, a, b []any, ka, kb []string) {
	n := len(w.out)
	inA := make(map[string]int, len(ka))
	for i, k := range ka {
		inA[k] = i
	}
	inB := make(map[string]bool, len(kb))
	for j, k := range kb {
		inB[k] = true
		var x any
		if i, ok := inA[k]; ok {
			x = a[i]
		}
		w.walk(path+"["+mergeKey+"="+k+"]", elem, "", x, b[j])
	}
	for i, k := range ka {
		if !inB[k] {
			w.walk(path+"["+mergeKey+"="+k+"]", elem, "", a[i], nil)
		}
	}
	if len(w.out) == n && !slices.Equal(ka, kb) {
		// The same items in another order: show the order.
		w.emit(path, stringsToAny(ka), stringsToAny(kb))
	}
}

// itemKeys returns the merge key of every item, or false when an item has
// none or two items share one (then the list is compared by index).
func itemKeys(items []any, mergeKey string) ([]string, bool) {
	keys := make([]string, len(items))
	seen := make(map[string]bool, len(items))
	for i, it := range items {
		m, ok := it.(map[string]any)
		if !ok {
			return nil, false
		}
		var k string
		switch v := m[mergeKey].(type) {
		case string:
			k = v
		case json.Number:
			k = v.String()
		default:
			return nil, false
		}
		if seen[k] {
			return nil, false
		}
		seen[k] = true
		keys[i] = k
	}
	return keys, true
}

func (w *walker) emit(path string, before, after any) {
	op := OpChange
	switch {
	case before == nil:
		op = OpAdd
	case after == nil:
		op = OpRemove
	}
	if w.secret && secretPath(path) {
		w.out = append(w.out, FieldChange{Path: path, Op: op, Sensitive: true})
		return
	}
	w.out = append(w.out, FieldChange{Path: path, Op: op, Before: plain(before), After: plain(after)})
}

// lastApplied is the annotation kubectl writes the whole applied object
// into: for a Secret, its data.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// secretPath reports whether a path of a Secret holds secret data.
func secretPath(p string) bool {
	return hasPathPrefix(p, "data") || hasPathPrefix(p, "stringData") ||
		p == "metadata.annotations["+lastApplied+"]"
}

// hasPathPrefix reports whether path is prefix or lies under it.
func hasPathPrefix(path, prefix string) bool {
	if !strings.HasPrefix(path, prefix) {
		return false
	}
	return len(path) == len(prefix) || path[len(prefix)] == '.' || path[len(prefix)] == '['
}

func joinField(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func deref(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

func nilIfEmpty(v any) any {
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 0 {
			return nil
		}
	case []any:
		if len(x) == 0 {
			return nil
		}
	}
	return v
}

func scalars(items []any) bool {
	for _, it := range items {
		switch it.(type) {
		case map[string]any, []any:
			return false
		}
	}
	return true
}

func listOrNil(l []any) any {
	if l == nil {
		return nil
	}
	return l
}

func stringsToAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// plain turns the json.Numbers of a decoded value into int64 or float64.
func plain(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		if f, err := x.Float64(); err == nil {
			return f
		}
		return x.String()
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = plain(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = plain(e)
		}
		return out
	}
	return v
}

// structInfo is what the walk needs to know about a struct type.
type structInfo struct {
	fields map[string]fieldInfo // by JSON name, inlined structs flattened
	// object is true for a struct with metadata, whose status is not
	// desired state.
	object bool
}

type fieldInfo struct {
	typ      reflect.Type
	mergeKey string
}

// structInfos caches structInfo by type, as encoding/json caches its
// encoders: the API types are fixed, so the cache is bounded by them.
var structInfos sync.Map // reflect.Type → *structInfo

func structInfoOf(t reflect.Type) *structInfo {
	if v, ok := structInfos.Load(t); ok {
		return v.(*structInfo)
	}
	info := &structInfo{fields: make(map[string]fieldInfo)}
	addFields(info, t)
	_, info.object = info.fields["metadata"]
	v, _ := structInfos.LoadOrStore(t, info)
	return v.(*structInfo)
}

func addFields(info *structInfo, t reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		inline := f.Anonymous && name == "" || strings.Contains(opts, "inline")
		if inline && deref(f.Type).Kind() == reflect.Struct {
			addFields(info, deref(f.Type))
			continue
		}
		if name == "" {
			name = f.Name
		}
		info.fields[name] = fieldInfo{typ: f.Type, mergeKey: f.Tag.Get("patchMergeKey")}
	}
}
