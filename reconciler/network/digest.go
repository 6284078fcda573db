package network

import (
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"hash"
	"reflect"
	"strconv"
	"strings"

	"berth.dev/berth/nodes/api"
)

// Digests returns the Digest of every Network, by machine: the values
// api.Network.Digest gives, for a fraction of the work. The Networks share
// their Services, Pods and Ingress, which are most of their encoding; this
// encodes each shared part once instead of once per machine, and hashes
// the shared fields the encoding starts with (Services and Pods) once.
func (r *Result) Digests() map[string]string {
	d := digester{cache: map[sharedPart][]byte{}, prefixes: map[string]prefixState{}}
	out := make(map[string]string, len(r.Networks))
	for name, n := range r.Networks {
		out[name] = d.digest(n)
	}
	return out
}

// sharedPart identifies a slice or pointer field's value by where it
// points: Networks that share it share its encoding.
type sharedPart struct {
	field int
	ptr   uintptr
	len   int
}

type digester struct {
	cache map[sharedPart][]byte
	// prefixes hold the hash state after the leading fields that point at
	// shared values, by where those point.
	prefixes map[string]prefixState
}

type prefixState struct {
	state []byte // sha256 state (encoding.BinaryMarshaler)
	wrote bool   // a field was written: the next one needs a comma
}

// digest hashes what json.Marshal writes for the Network with Generation
// zero (api.Network.Digest), field by field, in the order and with the
// omissions encoding/json applies.
func (d *digester) digest(n *api.Network) string {
	c := *n
	c.Generation = 0
	v := reflect.ValueOf(c)
	t := v.Type()

	// The leading slice and pointer fields: Networks pointing at the same
	// values share the hash state after them.
	lead, key := 0, ""
	for ; lead < t.NumField(); lead++ {
		fv := v.Field(lead)
		if k := fv.Kind(); k != reflect.Slice && k != reflect.Pointer {
			break
		}
		p := uintptr(0)
		if !fv.IsNil() {
			p = fv.Pointer()
		}
		l := 0
		if fv.Kind() == reflect.Slice {
			l = fv.Len()
		}
		key += strconv.FormatUint(uint64(p), 16) + "/" + strconv.Itoa(l) + ","
	}
	h := sha256.New()
	var wrote bool
	if ps, ok := d.prefixes[key]; ok && h.(encoding.BinaryUnmarshaler).UnmarshalBinary(ps.state) == nil {
		wrote = ps.wrote
	} else {
		h.Reset()
		h.Write([]byte{'{'})
		wrote = d.fields(h, v, 0, lead, false)
		if st, err := h.(encoding.BinaryMarshaler).MarshalBinary(); err == nil {
			d.prefixes[key] = prefixState{st, wrote}
		}
	}
	d.fields(h, v, lead, t.NumField(), wrote)
	h.Write([]byte{'}'})
	return hex.EncodeToString(h.Sum(nil))
}

// fields writes fields [from, to) of v as encoding/json does, and says
// whether any field has been written.
func (d *digester) fields(h hash.Hash, v reflect.Value, from, to int, wrote bool) bool {
	t := v.Type()
	for i := from; i < to; i++ {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fv := v.Field(i)
		if omitted(fv, opts) {
			continue
		}
		if wrote {
			h.Write([]byte{','})
		}
		wrote = true
		key, _ := json.Marshal(name)
		h.Write(key)
		h.Write([]byte{':'})
		h.Write(d.encode(i, fv))
	}
	return wrote
}

func (d *digester) encode(field int, v reflect.Value) []byte {
	var key sharedPart
	shared := false
	switch v.Kind() {
	case reflect.Slice, reflect.Pointer:
		if !v.IsNil() {
			key, shared = sharedPart{field: field, ptr: v.Pointer()}, true
			if v.Kind() == reflect.Slice {
				key.len = v.Len()
			}
		}
	}
	if shared {
		if b, ok := d.cache[key]; ok {
			return b
		}
	}
	b, err := json.Marshal(v.Interface())
	if err != nil {
		// As api.Network.Digest: no two unencodable Networks compare equal.
		b = []byte("unencodable: " + err.Error())
	}
	if shared {
		d.cache[key] = b
	}
	return b
}

// omitted reports whether encoding/json leaves a field out.
func omitted(v reflect.Value, opts string) bool {
	for o := range strings.SplitSeq(opts, ",") {
		switch o {
		case "omitempty":
			switch v.Kind() {
			case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
				if v.Len() == 0 {
					return true
				}
			case reflect.Bool:
				if !v.Bool() {
					return true
				}
			case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
				if v.Int() == 0 {
					return true
				}
			case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
				if v.Uint() == 0 {
					return true
				}
			case reflect.Float32, reflect.Float64:
				if v.Float() == 0 {
					return true
				}
			case reflect.Interface, reflect.Pointer:
				if v.IsNil() {
					return true
				}
			}
		case "omitzero":
			if z, ok := v.Interface().(interface{ IsZero() bool }); ok {
				if z.IsZero() {
					return true
				}
			} else if v.IsZero() {
				return true
			}
		}
	}
	return false
}
