package resolve

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// envList builds a container's environment the kubelet's way: envFrom
// sources first, in order, then env, in order; a later variable replaces
// an earlier one of the same name, keeping its place (unless its value
// still refers to a pod IP: then it moves last, see set). Values are kept
// in their wire form (see escape).
type envList struct {
	vars  []corev1.EnvVar
	index map[string]int
	// live marks variables whose wire form still holds a reference for
	// the agent to expand: the pod IP variables themselves, and values
	// that refer to them.
	live map[string]bool
	// referred marks pod IP variables that some value refers to.
	referred map[string]bool
}

// deferred reports whether name is, for now, a variable the agent fills.
func (l *envList) deferred(name string) bool {
	i, ok := l.index[name]
	return ok && l.vars[i].ValueFrom != nil
}

func (l *envList) set(v corev1.EnvVar, live bool) {
	if l.index == nil {
		l.index = make(map[string]int, 8)
		l.live = map[string]bool{}
		l.referred = map[string]bool{}
	}
	i, ok := l.index[v.Name]
	switch {
	case !ok:
		l.index[v.Name] = len(l.vars)
		l.vars = append(l.vars, v)
	case live:
		// The agent expands in list order, so a value that still refers
		// to a variable goes after everything it may refer to.
		l.vars = slices.Delete(l.vars, i, i+1)
		for j := i; j < len(l.vars); j++ {
			l.index[l.vars[j].Name] = j
		}
		l.index[v.Name] = len(l.vars)
		l.vars = append(l.vars, v)
	default:
		l.vars[i] = v
	}
	l.live[v.Name] = live
}

// wire returns the wire form of a defined variable's value: what a
// $(name) reference to it becomes, and whether that is live. A variable
// the agent fills (pod IPs) is referred to as $(name), for the agent's
// expansion.
func (l *envList) wire(name string) (w string, live, ok bool) {
	i, ok := l.index[name]
	if !ok {
		return "", false, false
	}
	if l.vars[i].ValueFrom != nil {
		l.referred[name] = true
		return "$(" + name + ")", true, true
	}
	return l.vars[i].Value, l.live[name], true
}

// env resolves one container's env and envFrom into literal values.
func (r *resolver) env(where string, c *corev1.Container, s *corev1.PodSpec) []corev1.EnvVar {
	var l envList
	for i, from := range c.EnvFrom {
		at := fmt.Sprintf("%s: envFrom[%d]", where, i)
		switch {
		case from.ConfigMapRef != nil:
			ref := from.ConfigMapRef
			cm := r.in.Sources.configMap(r.ns, ref.Name)
			if cm == nil {
				r.missing(at, ref.Optional, "configMap %s", quoteName(ref.Name))
				continue
			}
			r.envFrom(at, &l, from.Prefix, "configMap "+ref.Name, sortedKeys(cm.Data), func(k string) string { return cm.Data[k] })
		case from.SecretRef != nil:
			ref := from.SecretRef
			sec := r.in.Sources.secret(r.ns, ref.Name)
			if sec == nil {
				r.missing(at, ref.Optional, "secret %s", quoteName(ref.Name))
				continue
			}
			r.envFrom(at, &l, from.Prefix, "secret "+ref.Name, sortedKeys(sec.data), func(k string) string { return string(sec.data[k]) })
		default:
			r.fail(at, fmt.Errorf("neither configMapRef nor secretRef is set: %w", ErrInvalid))
		}
	}

	for i := range c.Env {
		e := &c.Env[i]
		at := where + ": env " + quoteName(e.Name)
		nv, live := corev1.EnvVar{Name: e.Name}, false
		switch {
		case e.Value != "":
			nv.Value, live = expand(e.Value, l.wire)
		case e.ValueFrom != nil:
			v, ok := r.valueFrom(at, e.ValueFrom, c, s)
			if !ok {
				continue
			}
			if v == nil {
				// Known only on the machine: the agent fills it.
				nv.ValueFrom = &corev1.EnvVarSource{FieldRef: e.ValueFrom.FieldRef.DeepCopy()}
				live = true
			} else {
				nv.Value = escape(*v)
			}
		}
		if !r.keepsPodIP(at, &l, nv) {
			continue
		}
		l.set(nv, live)
	}
	return l.vars
}

// keepsPodIP refuses to redefine a pod IP variable that a value refers
// to as anything else: the agent fills one value per name, so the wire
// cannot say "the pod's IP for those references, something else from
// here on".
func (r *resolver) keepsPodIP(at string, l *envList, v corev1.EnvVar) bool {
	if !l.deferred(v.Name) || !l.referred[v.Name] {
		return true
	}
	old := l.vars[l.index[v.Name]].ValueFrom.FieldRef.FieldPath
	if v.ValueFrom != nil && v.ValueFrom.FieldRef.FieldPath == old {
		return true // still the same value
	}
	r.fail(at, fmt.Errorf("redefines %s, which values before refer to as the pod's %s: %w", v.Name, old, ErrNotSupported))
	return false
}

// envFrom adds the keys of one envFrom source, in sorted order, skipping
// those that do not make a valid variable name, with a warning, as the
// kubelet does.
func (r *resolver) envFrom(at string, l *envList, prefix, what string, keys []string, value func(string) string) {
	var invalid []string
	for _, k := range keys {
		name := prefix + k
		if errs := validation.IsRelaxedEnvVarName(name); len(errs) > 0 {
			invalid = append(invalid, fmt.Sprintf("%q", name))
			continue
		}
		l.set(corev1.EnvVar{Name: name, Value: escape(value(k))}, false)
	}
	if len(invalid) > 0 {
		r.warn(at, "%s: keys %s skipped: not valid environment variable names", what, strings.Join(invalid, ", "))
	}
}

// valueFrom resolves one env var's source. It returns ok false when the
// variable is to be left out (a problem, or an optional reference that is
// missing), and a nil value when the agent fills it.
func (r *resolver) valueFrom(at string, vf *corev1.EnvVarSource, c *corev1.Container, s *corev1.PodSpec) (_ *string, ok bool) {
	switch {
	case vf.ConfigMapKeyRef != nil:
		ref := vf.ConfigMapKeyRef
		cm := r.in.Sources.configMap(r.ns, ref.Name)
		if cm == nil {
			r.missing(at, ref.Optional, "configMap %s", quoteName(ref.Name))
			return nil, false
		}
		v, found := cm.Data[ref.Key]
		if !found {
			r.missing(at, ref.Optional, "configMap %s key %s", quoteName(ref.Name), quoteName(ref.Key))
			return nil, false
		}
		return &v, true
	case vf.SecretKeyRef != nil:
		ref := vf.SecretKeyRef
		sec := r.in.Sources.secret(r.ns, ref.Name)
		if sec == nil {
			r.missing(at, ref.Optional, "secret %s", quoteName(ref.Name))
			return nil, false
		}
		b, found := sec.data[ref.Key]
		if !found {
			r.missing(at, ref.Optional, "secret %s key %s", quoteName(ref.Name), quoteName(ref.Key))
			return nil, false
		}
		v := string(b)
		return &v, true
	case vf.FieldRef != nil:
		v, deferred, err := r.envField(vf.FieldRef)
		if err != nil {
			r.fail(at, err)
			return nil, false
		}
		if deferred {
			return nil, true
		}
		return &v, true
	case vf.ResourceFieldRef != nil:
		ref := vf.ResourceFieldRef
		target := c
		if ref.ContainerName != "" && ref.ContainerName != c.Name {
			target = findContainer(s, ref.ContainerName)
			if target == nil {
				r.fail(at, fmt.Errorf("resourceFieldRef: container %s: %w", quoteName(ref.ContainerName), ErrInvalid))
				return nil, false
			}
		}
		v, err := r.resourceValue(ref, target)
		if err != nil {
			r.fail(at, err)
			return nil, false
		}
		return &v, true
	case vf.FileKeyRef != nil:
		r.fail(at, fmt.Errorf("fileKeyRef: %w", ErrNotSupported))
		return nil, false
	}
	r.fail(at, fmt.Errorf("valueFrom names no source: %w", ErrInvalid))
	return nil, false
}

// escape writes a value so that the runtime's $(VAR) expansion gives it
// back unchanged: "$" becomes "$$".
func escape(s string) string {
	return strings.ReplaceAll(s, "$", "$$")
}

// expand is Kubernetes' $(VAR) expansion of a literal env value (the
// kubelet's third_party/forked/golang/expansion), producing the wire form:
// a reference to a defined variable becomes that variable's wire form,
// and everything else is escaped, so that the runtime's own expansion
// changes nothing but references to variables the agent fills. live
// reports whether the result holds such a reference.
func expand(in string, wire func(string) (string, bool, bool)) (_ string, live bool) {
	if !strings.Contains(in, "$") {
		return in, false
	}
	var b strings.Builder
	checkpoint := 0
	for cur := 0; cur < len(in); cur++ {
		if in[cur] != '$' || cur+1 >= len(in) {
			continue
		}
		b.WriteString(escape(in[checkpoint:cur]))
		rest := in[cur+1:]
		advance := 1
		switch rest[0] {
		case '$': // "$$" is a literal "$"
			b.WriteString("$$")
		case '(':
			end := strings.IndexByte(rest, ')')
			if end < 0 { // incomplete: "$(" is literal
				b.WriteString("$$(")
				break
			}
			name := rest[1:end]
			if v, l, ok := wire(name); ok {
				b.WriteString(v)
				live = live || l
			} else { // undefined: left as written
				b.WriteString("$$(" + escape(name) + ")")
			}
			advance = end + 1
		default: // a "$" that starts nothing: literal, with the next byte
			b.WriteString("$$" + escape(rest[:1]))
		}
		cur += advance
		checkpoint = cur + 1
	}
	b.WriteString(escape(in[checkpoint:]))
	return b.String(), live
}

func findContainer(s *corev1.PodSpec, name string) *corev1.Container {
	for _, cs := range [][]corev1.Container{s.Containers, s.InitContainers} {
		for i := range cs {
			if cs[i].Name == name {
				return &cs[i]
			}
		}
	}
	return nil
}

func isTrue(b *bool) bool { return b != nil && *b }

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
