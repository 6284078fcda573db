package resolve

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"pgregory.net/rapid"
)

// kubeletExpand is Kubernetes' expansion as the kubelet's
// third_party/forked/golang/expansion states it, written independently
// of expand, as the model the property test checks against.
func kubeletExpand(input string, mapping func(string) string) string {
	var buf strings.Builder
	checkpoint := 0
	for cursor := 0; cursor < len(input); cursor++ {
		if input[cursor] == '$' && cursor+1 < len(input) {
			buf.WriteString(input[checkpoint:cursor])
			read, isVar, advance := tryReadVariableName(input[cursor+1:])
			if isVar {
				buf.WriteString(mapping(read))
			} else {
				buf.WriteString(read)
			}
			cursor += advance
			checkpoint = cursor + 1
		}
	}
	return buf.String() + input[checkpoint:]
}

func tryReadVariableName(input string) (string, bool, int) {
	switch input[0] {
	case '$':
		return input[0:1], false, 1
	case '(':
		for i := 1; i < len(input); i++ {
			if input[i] == ')' {
				return input[1:i], true, i + 1
			}
		}
		return "$(", false, 1
	default:
		return "$" + string(input[0]), false, 1
	}
}

// TestExpandModel: whatever the values, literal, from a ConfigMap or the
// pod's IP, a container sees after the agent's expansion exactly what a
// kubelet would give it.
func TestExpandModel(t *testing.T) {
	text := rapid.StringOf(rapid.SampledFrom([]rune("$()ABCx ")))
	names := rapid.SampledFrom([]string{"A", "B", "C"})
	rapid.Check(t, func(t *rapid.T) {
		data := rapid.MapOf(names, text).Draw(t, "configmap")
		prefixData := rapid.MapOf(names, text).Draw(t, "envFrom")
		type v struct {
			name, value string
			fromKey     string // when set, a configMapKeyRef
			podIP       bool   // a status.podIP fieldRef
		}
		vars := rapid.SliceOfN(rapid.Custom(func(t *rapid.T) v {
			x := v{name: names.Draw(t, "name")}
			switch rapid.IntRange(0, 2).Draw(t, "kind") {
			case 0:
				x.fromKey = names.Draw(t, "key")
			case 1:
				x.value = text.Draw(t, "value")
			default:
				x.podIP = true
			}
			return x
		}), 0, 8).Draw(t, "env")

		s := &Sources{}
		s.AddConfigMap(&corev1.ConfigMap{ObjectMeta: meta("gen"), Data: data})
		s.AddConfigMap(&corev1.ConfigMap{ObjectMeta: meta("from"), Data: prefixData})
		c := corev1.Container{Name: "c", Image: "i", EnvFrom: []corev1.EnvFromSource{fromCM("from", "", nil)}}
		for _, x := range vars {
			e := corev1.EnvVar{Name: x.name, Value: x.value}
			if x.fromKey != "" {
				e.ValueFrom = cmKey("gen", x.fromKey, ptr(true))
			}
			if x.podIP {
				e.ValueFrom = field("status.podIP")
			}
			c.Env = append(c.Env, e)
		}
		in := testInput(oneContainer(c))
		in.Sources = s
		res, err := Pod(in)
		if err != nil {
			// Only a pod IP variable redefined after values refer to it
			// is refused.
			redefined := false
			for i, x := range vars {
				for _, y := range vars[i+1:] {
					redefined = redefined || (x.podIP && y.name == x.name && !y.podIP)
				}
			}
			if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "redefines") || !redefined {
				t.Fatal(err)
			}
			return
		}
		const ip = "10.$(A).0.1" // what the agent fills in, not expanded again
		got := agentEnv(res.Pod.Spec.Containers[0].Env, map[string]string{"A": ip, "B": ip, "C": ip})

		// The kubelet's makeEnvironmentVariables, reduced to these sources.
		want := map[string]string{}
		for k, val := range prefixData {
			want[k] = val
		}
		mapping := func(name string) string {
			if val, ok := want[name]; ok {
				return val
			}
			return "$(" + name + ")"
		}
		for _, x := range vars {
			switch {
			case x.podIP:
				want[x.name] = ip
			case x.value != "":
				want[x.name] = kubeletExpand(x.value, mapping)
			case x.fromKey != "":
				val, ok := data[x.fromKey]
				if !ok {
					continue
				}
				want[x.name] = val
			default:
				want[x.name] = ""
			}
		}
		if len(got) != len(want) {
			t.Fatalf("got %d variables %q, want %d %q", len(got), got, len(want), want)
		}
		for k, w := range want {
			if got[k] != w {
				t.Fatalf("%s = %q, want %q (wire %q)", k, got[k], w, res.Pod.Spec.Containers[0].Env)
			}
		}
	})
}
