package schedule

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
)

func TestTolerates(t *testing.T) {
	gpu := corev1.Taint{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule}
	tests := []struct {
		name string
		tol  corev1.Toleration
		want bool
	}{
		{"equal key and value", corev1.Toleration{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule}, true},
		{"empty operator is Equal", corev1.Toleration{Key: "dedicated", Value: "gpu"}, true},
		{"other value", corev1.Toleration{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "db"}, false},
		{"other key", corev1.Toleration{Key: "team", Operator: corev1.TolerationOpExists}, false},
		{"Exists on the key", corev1.Toleration{Key: "dedicated", Operator: corev1.TolerationOpExists}, true},
		{"Exists with empty key tolerates everything", corev1.Toleration{Operator: corev1.TolerationOpExists}, true},
		{"other effect", corev1.Toleration{Key: "dedicated", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute}, false},
		{"Gt is off", corev1.Toleration{Key: "dedicated", Operator: corev1.TolerationOpGt, Value: "1"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tolerates([]corev1.Toleration{tt.tol}, &gpu); got != tt.want {
				t.Errorf("tolerates = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestTaintFilter(t *testing.T) {
	machines := []Machine{
		machine("clean"),
		machine("gpu", tainted("dedicated", "gpu", corev1.TaintEffectNoSchedule)),
		machine("draining", tainted("drain", "", corev1.TaintEffectNoExecute)),
		machine("soft", tainted("spot", "true", corev1.TaintEffectPreferNoSchedule)),
	}
	c := run(t, machines, nil, pod("p"))
	want := map[string]string{
		"clean":    "",
		"gpu":      "untolerated taint {dedicated: gpu}",
		"draining": "untolerated taint {drain: }",
		"soft":     "", // only scored
	}
	if diff := cmp.Diff(want, filterResults(c, taintFilter)); diff != "" {
		t.Errorf("reasons (-want +got):\n%s", diff)
	}

	c = run(t, machines, nil, pod("p", tolerating(corev1.Toleration{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule})))
	if got := filterResults(c, taintFilter)["gpu"]; got != "" {
		t.Errorf("tolerated taint still filters: %q", got)
	}

	// spec.nodeName pods are only turned away by NoExecute.
	c = run(t, machines, nil, pod("p"))
	want = map[string]string{"clean": "", "gpu": "", "draining": "untolerated taint {drain: }", "soft": ""}
	if diff := cmp.Diff(want, filterResults(c, noExecuteFilter)); diff != "" {
		t.Errorf("NoExecute reasons (-want +got):\n%s", diff)
	}
}

func TestUnschedulableFilter(t *testing.T) {
	machines := []Machine{machine("open"), machine("cordoned", cordoned)}
	c := run(t, machines, nil, pod("p"))
	if diff := cmp.Diff(map[string]string{"open": "", "cordoned": "machine unschedulable"}, filterResults(c, unschedulableFilter)); diff != "" {
		t.Errorf("reasons (-want +got):\n%s", diff)
	}
	c = run(t, machines, nil, pod("p", tolerating(corev1.Toleration{Key: corev1.TaintNodeUnschedulable, Operator: corev1.TolerationOpExists})))
	if got := filterResults(c, unschedulableFilter)["cordoned"]; got != "" {
		t.Errorf("pod tolerating the unschedulable taint is refused: %q", got)
	}
}

func TestReadyFilter(t *testing.T) {
	c := run(t, []Machine{machine("up"), machine("down", notReady)}, nil, pod("p"))
	if diff := cmp.Diff(map[string]string{"up": "", "down": "machine not ready"}, filterResults(c, readyFilter)); diff != "" {
		t.Errorf("reasons (-want +got):\n%s", diff)
	}
}

func TestTaintScore(t *testing.T) {
	machines := []Machine{
		machine("clean"),
		machine("one", tainted("spot", "true", corev1.TaintEffectPreferNoSchedule)),
		machine("two", tainted("spot", "true", corev1.TaintEffectPreferNoSchedule), tainted("old", "", corev1.TaintEffectPreferNoSchedule)),
	}
	c := run(t, machines, nil, pod("p"))
	if diff := cmp.Diff(map[string]int64{"clean": 100, "one": 50, "two": 0}, scoreResults(c, taintScore)); diff != "" {
		t.Errorf("scores (-want +got):\n%s", diff)
	}
	// A NoSchedule toleration does not count against PreferNoSchedule.
	c = run(t, machines, nil, pod("p",
		tolerating(corev1.Toleration{Key: "spot", Operator: corev1.TolerationOpExists}),
		tolerating(corev1.Toleration{Key: "old", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule})))
	if diff := cmp.Diff(map[string]int64{"clean": 100, "one": 100, "two": 0}, scoreResults(c, taintScore)); diff != "" {
		t.Errorf("scores with tolerations (-want +got):\n%s", diff)
	}
}
