package render

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"gopkg.in/yaml.v3"
)

// decoder fills a typed value from a yaml.v3 node tree, strictly: a field
// the type lacks, a value of the wrong shape or a duplicate key is an error
// at that node. It follows the types' json tags, as Kubernetes' own decoding
// does, and hands values whose type decodes itself (Quantity, IntOrString,
// Time) to their UnmarshalJSON.
type decoder struct {
	file   string
	fields []fieldPos
	errs   []fieldError
	// budget is how many more nodes may be visited; aliases count every
	// time they are expanded, so an alias bomb runs out quickly.
	budget int
}

type fieldError struct {
	pos   Pos
	path  string
	msg   string
	fatal bool
}

var errBudget = errors.New("document too large after expanding aliases")

func (d *decoder) pos(n *yaml.Node) Pos {
	return Pos{File: d.file, Line: n.Line, Column: n.Column}
}

func (d *decoder) record(path string, n *yaml.Node) {
	d.fields = append(d.fields, fieldPos{path: path, line: int32(n.Line), column: int32(n.Column)})
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, fieldError{pos: d.pos(n), path: path, msg: fmt.Sprintf(format, args...)})
}

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

// selfDecoding reports whether *t decodes itself from JSON (Quantity,
// IntOrString, Time). Asked for every node, so cached per type.
func selfDecoding(t reflect.Type) bool {
	if v, ok := selfDecodingCache.Load(t); ok {
		return v.(bool)
	}
	ok := reflect.PointerTo(t).Implements(jsonUnmarshaler)
	selfDecodingCache.Store(t, ok)
	return ok
}

var selfDecodingCache sync.Map

// decode fills v (addressable) from n. It returns errBudget when the
// document expands past the node budget; other problems are recorded.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) error {
	d.budget--
	if d.budget < 0 {
		return errBudget
	}
	if n.Kind == yaml.AliasNode {
		return d.decode(n.Alias, v, path)
	}
	if isNull(n) {
		v.Set(reflect.Zero(v.Type()))
		return nil
	}
	if v.Kind() != reflect.Pointer && v.CanAddr() && selfDecoding(v.Type()) {
		return d.decodeJSON(n, v.Addr(), path)
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return d.decode(n, v.Elem(), path)
	case reflect.Struct:
		return d.decodeStruct(n, v, path)
	case reflect.Map:
		return d.decodeMap(n, v, path)
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return d.decodeBytes(n, v, path)
		}
		return d.decodeSlice(n, v, path)
	case reflect.Interface:
		var x any
		if err := d.toAny(n, &x); err != nil {
			return err
		}
		if x != nil {
			v.Set(reflect.ValueOf(x))
		}
		return nil
	}
	return d.decodeScalar(n, v, path)
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// toAny converts n into plain Go values (maps, slices, scalars) while
// charging the node budget, so that aliases cannot explode here either.
func (d *decoder) toAny(n *yaml.Node, out *any) error {
	d.budget--
	if d.budget < 0 {
		return errBudget
	}
	switch n.Kind {
	case yaml.AliasNode:
		return d.toAny(n.Alias, out)
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil
		}
		return d.toAny(n.Content[0], out)
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode {
				d.fail(k, "", "map key must be a scalar")
				continue
			}
			var x any
			if err := d.toAny(n.Content[i+1], &x); err != nil {
				return err
			}
			m[k.Value] = x
		}
		*out = m
	case yaml.SequenceNode:
		s := make([]any, len(n.Content))
		for i, c := range n.Content {
			if err := d.toAny(c, &s[i]); err != nil {
				return err
			}
		}
		*out = s
	default:
		var x any
		if err := n.Decode(&x); err != nil {
			d.fail(n, "", "%v", cleanYAMLError(err))
			return nil
		}
		*out = x
	}
	return nil
}

func (d *decoder) decodeJSON(n *yaml.Node, pv reflect.Value, path string) error {
	var x any
	if err := d.toAny(n, &x); err != nil {
		return err
	}
	b, err := json.Marshal(x)
	if err != nil {
		d.fail(n, path, "cannot represent value: %v", err)
		return nil
	}
	if err := pv.Interface().(json.Unmarshaler).UnmarshalJSON(b); err != nil {
		d.fail(n, path, "invalid value %s: %v", shortValue(n), cleanJSONError(err))
	}
	return nil
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "expected a mapping, got %s", describe(n))
		return nil
	}
	fields := structFields(v.Type())
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.fail(k, path, "field name must be a string")
			continue
		}
		fp := joinField(path, k.Value)
		if seen[k.Value] {
			d.fail(k, fp, "duplicate field %q", k.Value)
			continue
		}
		seen[k.Value] = true
		idx, ok := fields[k.Value]
		if !ok {
			d.fail(k, fp, "unknown field %q", k.Value)
			continue
		}
		d.record(fp, k)
		if err := d.decode(val, v.FieldByIndex(idx), fp); err != nil {
			return err
		}
	}
	return nil
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "expected a mapping, got %s", describe(n))
		return nil
	}
	t := v.Type()
	if v.IsNil() {
		v.Set(reflect.MakeMapWithSize(t, len(n.Content)/2))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.AliasNode {
			k = k.Alias
		}
		if k.Kind != yaml.ScalarNode || t.Key().Kind() != reflect.String {
			d.fail(k, path, "map key must be a string")
			continue
		}
		kp := path + "[" + k.Value + "]"
		key := reflect.ValueOf(k.Value).Convert(t.Key())
		if v.MapIndex(key).IsValid() {
			d.fail(k, kp, "duplicate key %q", k.Value)
			continue
		}
		d.record(kp, k)
		ev := reflect.New(t.Elem()).Elem()
		if err := d.decode(val, ev, kp); err != nil {
			return err
		}
		v.SetMapIndex(key, ev)
	}
	return nil
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.SequenceNode {
		d.fail(n, path, "expected a list, got %s", describe(n))
		return nil
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, c := range n.Content {
		ip := path + "[" + strconv.Itoa(i) + "]"
		d.record(ip, c)
		if err := d.decode(c, s.Index(i), ip); err != nil {
			return err
		}
	}
	v.Set(s)
	return nil
}

// decodeBytes reads a []byte the way JSON carries it: base64 text.
func (d *decoder) decodeBytes(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" && n.Tag != "!!binary" {
		d.fail(n, path, "expected base64 text, got %s", describe(n))
		return nil
	}
	s := strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, n.Value)
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		d.fail(n, path, "invalid base64 data: %v", err)
		return nil
	}
	v.SetBytes(b)
	return nil
}

func (d *decoder) decodeScalar(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, "expected %s, got %s", kindWord(v.Kind()), describe(n))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		if n.Tag != "!!str" {
			d.fail(n, path, "expected a string, got %s (quote it: %q)", describe(n), n.Value)
			return nil
		}
		v.SetString(n.Value)
	case reflect.Bool:
		if n.Tag != "!!bool" {
			d.fail(n, path, "expected true or false, got %s", describe(n))
			return nil
		}
		b, _ := strconv.ParseBool(strings.ToLower(n.Value))
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n.Tag != "!!int" {
			d.fail(n, path, "expected an integer, got %s", describe(n))
			return nil
		}
		var x int64
		if err := n.Decode(&x); err != nil {
			d.fail(n, path, "invalid integer %q", n.Value)
			return nil
		}
		if v.OverflowInt(x) {
			d.fail(n, path, "integer %s out of range for %s", n.Value, v.Type().Kind())
			return nil
		}
		v.SetInt(x)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		var x uint64
		if n.Tag != "!!int" || n.Decode(&x) != nil {
			d.fail(n, path, "expected a non-negative integer, got %s", describe(n))
			return nil
		}
		if v.OverflowUint(x) {
			d.fail(n, path, "integer %s out of range", n.Value)
			return nil
		}
		v.SetUint(x)
	case reflect.Float32, reflect.Float64:
		var x float64
		if (n.Tag != "!!int" && n.Tag != "!!float") || n.Decode(&x) != nil || math.IsNaN(x) || math.IsInf(x, 0) {
			d.fail(n, path, "expected a number, got %s", describe(n))
			return nil
		}
		v.SetFloat(x)
	default:
		d.fail(n, path, "cannot decode into %s", v.Type())
	}
	return nil
}

// structFields maps json names to field indexes, flattening inline
// embedded structs. Results are cached per type.
func structFields(t reflect.Type) map[string][]int {
	if m, ok := fieldCache.Load(t); ok {
		return m.(map[string][]int)
	}
	m := make(map[string][]int)
	var walk func(t reflect.Type, prefix []int)
	walk = func(t reflect.Type, prefix []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			name, opts, _ := strings.Cut(tag, ",")
			if name == "-" || (!f.IsExported() && !f.Anonymous) {
				continue
			}
			idx := append(append([]int(nil), prefix...), i)
			if f.Anonymous && (name == "" || strings.Contains(","+opts+",", ",inline,")) && f.Type.Kind() == reflect.Struct {
				walk(f.Type, idx)
				continue
			}
			if name == "" {
				name = f.Name
			}
			if _, dup := m[name]; !dup {
				m[name] = idx
			}
		}
	}
	walk(t, nil)
	fieldCache.Store(t, m)
	return m
}

var fieldCache sync.Map

func joinField(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	switch n.Tag {
	case "!!int":
		return "an integer " + n.Value
	case "!!float":
		return "a number " + n.Value
	case "!!bool":
		return "a boolean " + n.Value
	case "!!null":
		return "null"
	case "!!str":
		return "a string " + strconv.Quote(short(n.Value))
	}
	return "a " + strings.TrimPrefix(n.Tag, "!!") + " value"
}

func kindWord(k reflect.Kind) string {
	switch k {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "an integer"
}

func shortValue(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return strconv.Quote(short(n.Value))
	}
	return describe(n)
}

func short(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}

// cleanJSONError drops the Go type names encoding/json puts in messages.
func cleanJSONError(err error) string {
	var ute *json.UnmarshalTypeError
	if errors.As(err, &ute) {
		return "expected " + ute.Type.String() + ", got " + ute.Value
	}
	return err.Error()
}

// cleanYAMLError strips yaml.v3's "yaml: " prefix and line prefix, since
// diagnostics carry their own position.
func cleanYAMLError(err error) string {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	if strings.HasPrefix(s, "line ") {
		if _, rest, ok := strings.Cut(s, ": "); ok {
			s = rest
		}
	}
	return s
}
