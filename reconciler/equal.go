package reconciler

import (
	"bytes"
	"reflect"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	"berth.dev/berth/render"
)

// equal reports whether two objects are semantically equal, the cheapest
// test first:
//
//  1. the same pointer: both revisions were loaded through one
//     render.Cache and the file did not change;
//  2. identicalValue, a walk of the two values that allocates nothing and
//     takes a few microseconds for a Deployment; when it holds, so does
//     equality.Semantic.DeepEqual;
//  3. equality.Semantic.DeepEqual, which also holds a Quantity of 1000m
//     equal to one of 1, but is about ten times slower and allocates (its
//     visited map, and a reflect call per Quantity).
func equal(from, to *render.Object) bool {
	if from == to || from.Obj == to.Obj {
		return true
	}
	a, b := reflect.ValueOf(from.Obj), reflect.ValueOf(to.Obj)
	if a.Type() == b.Type() && identicalValue(a, b) {
		return true
	}
	return equality.Semantic.DeepEqual(from.Obj, to.Obj)
}

// identicalValue reports whether a and b, of the same type, hold the same
// value field by field (unexported fields included), with a nil slice or
// map equal to an empty one and Quantities in a ResourceList compared by
// value, as in equality.Semantic. It assumes the values
// are trees, as API objects are: it keeps no record of visited pointers,
// so it must not be given a cyclic value. Kinds an API object does not hold
// (funcs, channels) compare unequal, which only sends the caller to the
// slower comparison.
func identicalValue(a, b reflect.Value) bool {
	switch a.Kind() {
	case reflect.Pointer:
		if a.UnsafePointer() == b.UnsafePointer() {
			return true
		}
		if a.IsNil() || b.IsNil() {
			return false
		}
		return identicalValue(a.Elem(), b.Elem())
	case reflect.Struct:
		for i := range a.NumField() {
			if !identicalValue(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Slice:
		if a.Len() != b.Len() {
			return false
		}
		if a.Len() == 0 || a.UnsafePointer() == b.UnsafePointer() {
			return true
		}
		if a.Type().Elem().Kind() == reflect.Uint8 {
			return bytes.Equal(a.Bytes(), b.Bytes())
		}
		for i := range a.Len() {
			if !identicalValue(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Array:
		for i := range a.Len() {
			if !identicalValue(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	case reflect.Map:
		if a.Len() != b.Len() {
			return false
		}
		if a.Len() == 0 || a.UnsafePointer() == b.UnsafePointer() {
			return true
		}
		if a.CanInterface() {
			// The maps API objects hold most, compared without
			// reflection, which would copy every key and value.
			switch x := a.Interface().(type) {
			case map[string]string: // labels, annotations, ConfigMap data
				y := b.Interface().(map[string]string)
				for k, v := range x {
					if w, ok := y[k]; !ok || w != v {
						return false
					}
				}
				return true
			case corev1.ResourceList: // requests and limits
				y := b.Interface().(corev1.ResourceList)
				for k, v := range x {
					if w, ok := y[k]; !ok || v.Cmp(w) != 0 {
						return false
					}
				}
				return true
			case map[string][]byte: // Secret data
				y := b.Interface().(map[string][]byte)
				for k, v := range x {
					if w, ok := y[k]; !ok || !bytes.Equal(v, w) {
						return false
					}
				}
				return true
			}
		}
		it := a.MapRange()
		for it.Next() {
			v := b.MapIndex(it.Key())
			if !v.IsValid() || !identicalValue(it.Value(), v) {
				return false
			}
		}
		return true
	case reflect.Interface:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		ea, eb := a.Elem(), b.Elem()
		return ea.Type() == eb.Type() && identicalValue(ea, eb)
	case reflect.String:
		return a.String() == b.String()
	case reflect.Bool:
		return a.Bool() == b.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return a.Int() == b.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return a.Uint() == b.Uint()
	case reflect.Float32, reflect.Float64:
		return a.Float() == b.Float()
	case reflect.Complex64, reflect.Complex128:
		return a.Complex() == b.Complex()
	}
	return false
}
