package schedule

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
)

func TestSpreadFilter(t *testing.T) {
	machines := []Machine{
		machine("a1", zone("a")), machine("a2", zone("a")),
		machine("b1", zone("b")),
		machine("c1", zone("c"), labelled("disk", "hdd"), tainted("old", "", corev1.TaintEffectNoSchedule)),
		machine("x"),
	}
	web := podLabels("app", "web")
	byZone := spreadBy(corev1.LabelTopologyZone, 1, corev1.DoNotSchedule, selectLabels("app", "web"))
	const (
		skew    = "didn't match pod topology spread constraints"
		missing = "didn't match pod topology spread constraints (missing required label)"
	)
	honor, ignore := corev1.NodeInclusionPolicyHonor, corev1.NodeInclusionPolicyIgnore
	withPolicies := func(c corev1.TopologySpreadConstraint, affinity, taints *corev1.NodeInclusionPolicy) corev1.TopologySpreadConstraint {
		c.NodeAffinityPolicy, c.NodeTaintsPolicy = affinity, taints
		return c
	}
	noDisk := requiredNodeTerms(corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{expr("disk", corev1.NodeSelectorOpDoesNotExist)}})
	minDomains := func(c corev1.TopologySpreadConstraint, n int32) corev1.TopologySpreadConstraint {
		c.MinDomains = &n
		return c
	}
	tests := []struct {
		name  string
		bound []BoundPod
		pod   Pod
		want  map[string]string // machines that fail
	}{
		{
			name:  "a domain one ahead of the minimum is full at maxSkew 1",
			bound: []BoundPod{bound("w0", "a1", web), bound("w1", "b1", web)},
			// a: 1, b: 1, c: 0, so a and b would reach skew 2.
			pod:  pod("w2", web, spreading(byZone)),
			want: map[string]string{"a1": skew, "a2": skew, "b1": skew, "x": missing},
		},
		{
			name:  "pods of other labels and namespaces do not count",
			bound: []BoundPod{bound("d0", "a1", podLabels("app", "db")), bound("w0", "a1", web, inNamespace("other"))},
			pod:   pod("w2", web, spreading(byZone)),
			want:  map[string]string{"x": missing},
		},
		{
			name:  "a pod that does not match its own selector adds no skew",
			bound: []BoundPod{bound("w0", "a1", web)},
			pod:   pod("other", podLabels("app", "other"), spreading(byZone)),
			want:  map[string]string{"x": missing},
		},
		{
			name:  "nodeAffinityPolicy Honor: domains the pod cannot use do not hold the minimum down",
			bound: []BoundPod{bound("w0", "a1", web), bound("w1", "b1", web)},
			// Zone c (0 pods) is left out by the node affinity, so a and b,
			// both at 1, are the minimum.
			pod:  pod("w2", web, noDisk, spreading(byZone)),
			want: map[string]string{"x": missing},
		},
		{
			name:  "nodeTaintsPolicy Honor leaves out zones behind untolerated taints",
			bound: []BoundPod{bound("w0", "a1", web), bound("w1", "b1", web)},
			pod:   pod("w2", web, spreading(withPolicies(byZone, &honor, &honor))),
			want:  map[string]string{"x": missing},
		},
		{
			name:  "nodeAffinityPolicy Ignore counts every domain",
			bound: []BoundPod{bound("w0", "a1", web), bound("w1", "b1", web)},
			pod:   pod("w2", web, noDisk, spreading(withPolicies(byZone, &ignore, nil))),
			want:  map[string]string{"a1": skew, "a2": skew, "b1": skew, "x": missing},
		},
		{
			name:  "fewer domains than minDomains: the global minimum is 0",
			bound: []BoundPod{bound("w0", "a1", web)},
			pod:   pod("w1", web, spreading(minDomains(spreadBy(corev1.LabelTopologyZone, 1, corev1.DoNotSchedule, selectLabels("app", "web")), 4))),
			want:  map[string]string{"a1": skew, "a2": skew, "x": missing},
		},
		{
			name:  "ScheduleAnyway never filters",
			bound: []BoundPod{bound("w0", "a1", web), bound("w1", "a1", web)},
			pod:   pod("w2", web, spreading(spreadBy(corev1.LabelTopologyZone, 1, corev1.ScheduleAnyway, selectLabels("app", "web")))),
		},
		{
			name: "matchLabelKeys counts only pods with the same value",
			bound: []BoundPod{
				bound("w0", "a1", podLabels("app", "web", "rev", "1")),
				bound("w1", "a1", podLabels("app", "web", "rev", "1")),
				bound("w2", "b1", podLabels("app", "web", "rev", "2")),
			},
			pod: pod("w3", podLabels("app", "web", "rev", "2"), spreading(func() corev1.TopologySpreadConstraint {
				c := byZone
				c.MatchLabelKeys = []string{"rev"}
				return c
			}())),
			want: map[string]string{"b1": skew, "x": missing},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := run(t, machines, tt.bound, tt.pod)
			if diff := cmp.Diff(failing(c, tt.want), filterResults(c, spreadFilter)); diff != "" {
				t.Errorf("reasons (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSpreadScore(t *testing.T) {
	machines := []Machine{machine("a1", zone("a")), machine("a2", zone("a")), machine("b1", zone("b")), machine("x")}
	web := podLabels("app", "web")
	boundPods := []BoundPod{bound("w0", "a1", web), bound("w1", "a1", web), bound("w2", "b1", web)}

	// By zone, maxSkew 1: weight ln(2+2); a: 2*1.386 = 3, b: 1.386 = 1;
	// normalised 100*(3+1-s)/3. x lacks the key and scores 0.
	c := run(t, machines, boundPods, pod("w3", web, spreading(spreadBy(corev1.LabelTopologyZone, 1, corev1.ScheduleAnyway, selectLabels("app", "web")))))
	if diff := cmp.Diff(map[string]int64{"a1": 33, "a2": 33, "b1": 100, "x": 0}, scoreResults(c, spreadScore)); diff != "" {
		t.Errorf("zone scores (-want +got):\n%s", diff)
	}

	// By hostname: counts per machine, weight ln(4+2) = 1.79:
	// a1 3.58 -> 4, a2 0, b1 1.79 -> 2, x 0; normalised 100*(4+0-s)/4.
	c = run(t, machines, boundPods, pod("w3", web, spreading(spreadBy(corev1.LabelHostname, 1, corev1.ScheduleAnyway, selectLabels("app", "web")))))
	if diff := cmp.Diff(map[string]int64{"a1": 0, "a2": 100, "b1": 50, "x": 100}, scoreResults(c, spreadScore)); diff != "" {
		t.Errorf("hostname scores (-want +got):\n%s", diff)
	}
}

func TestSystemDefaultSpread(t *testing.T) {
	machines := []Machine{machine("m1"), machine("m2"), machine("m3")}
	boundPods := []BoundPod{
		bound("web-1", "m1", owned("Deployment/web")),
		bound("web-2", "m1", owned("Deployment/web")),
		bound("api-1", "m2", owned("Deployment/api")),
	}
	// Hostname maxSkew 3, weight ln(3+2) = 1.61: m1 2*1.61+2 = 5, m2 and
	// m3 2; the zone constraint scores nothing where the label is missing.
	// Normalised 100*(5+2-s)/5.
	c := run(t, machines, boundPods, pod("web-3", owned("Deployment/web")))
	if diff := cmp.Diff(map[string]int64{"m1": 40, "m2": 100, "m3": 100}, scoreResults(c, spreadScore)); diff != "" {
		t.Errorf("scores (-want +got):\n%s", diff)
	}
	// A pod with constraints of its own gets no defaults; one without an
	// owner neither.
	c = run(t, machines, boundPods, pod("web-3", owned("Deployment/web"), spreading(spreadBy("rack", 1, corev1.ScheduleAnyway, selectLabels("app", "web")))))
	if len(c.pod.soft) != 1 || c.pod.softSystem {
		t.Errorf("own constraints: soft = %+v, system %v", c.pod.soft, c.pod.softSystem)
	}
	c = run(t, machines, boundPods, pod("solo"))
	if len(c.pod.soft) != 0 {
		t.Errorf("pod without owner got constraints %+v", c.pod.soft)
	}
}

func TestSpreadCountsMachinesThatTakeNoPods(t *testing.T) {
	// Zone c's only machine is down and b's is cordoned; both still are
	// domains, as Nodes are in Kubernetes, so zone a (1 pod) is full at
	// maxSkew 1 while b and c hold the minimum at 0.
	machines := []Machine{machine("a1", zone("a")), machine("a2", zone("a")), machine("b1", zone("b"), cordoned), machine("c1", zone("c"), notReady)}
	web := podLabels("app", "web")
	p := pod("w1", web, spreading(spreadBy(corev1.LabelTopologyZone, 1, corev1.DoNotSchedule, selectLabels("app", "web"))))
	res := Schedule(machines, []BoundPod{bound("w0", "a1", web)}, []Pod{p})
	fe := res.Unschedulable[p.Key()]
	want := "0/4 machines are available: 2 didn't match pod topology spread constraints, 1 machine not ready, 1 machine unschedulable."
	if fe == nil || fe.Message != want {
		t.Errorf("result %+v, want message %q", res, want)
	}

	// With nodeTaintsPolicy Honor they drop out, as Nodes with the
	// unschedulable and not-ready taints do: zone a alone is the minimum.
	honor := corev1.NodeInclusionPolicyHonor
	p.Spec.TopologySpreadConstraints[0].NodeTaintsPolicy = &honor
	if got := Schedule(machines, []BoundPod{bound("w0", "a1", web)}, []Pod{p}).Placements[p.Key()]; got != "a2" {
		t.Errorf("with nodeTaintsPolicy Honor placed on %q, want a2", got)
	}
}
