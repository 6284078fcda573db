package schedule

import (
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
)

// unschedulableTaint is the taint Kubernetes puts on a cordoned node; a pod
// that tolerates it may still be scheduled there.
var unschedulableTaint = corev1.Taint{Key: corev1.TaintNodeUnschedulable, Effect: corev1.TaintEffectNoSchedule}

// notReadyTaint is the taint Kubernetes puts on a Node that is not ready.
var notReadyTaint = corev1.Taint{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoSchedule}

// tolerates says whether one of the tolerations tolerates the taint, with
// Kubernetes' rules (corev1.Toleration.ToleratesTaint). The numeric
// operators Gt and Lt are off, as they are by default in Kubernetes and in
// berth's validation.
func tolerates(tolerations []corev1.Toleration, taint *corev1.Taint) bool {
	for i := range tolerations {
		if tolerations[i].ToleratesTaint(logr.Discard(), taint, false) {
			return true
		}
	}
	return false
}

// untolerated returns the first of the machine's taints with one of the
// effects that the pod does not tolerate, or nil.
func untolerated(taints []corev1.Taint, tolerations []corev1.Toleration, effects ...corev1.TaintEffect) *corev1.Taint {
	for i := range taints {
		t := &taints[i]
		for _, e := range effects {
			if t.Effect == e && !tolerates(tolerations, t) {
				return t
			}
		}
	}
	return nil
}

func untoleratedReason(t *corev1.Taint) []string {
	return []string{"untolerated taint {" + t.Key + ": " + t.Value + "}"}
}

// unschedulableFilter is NodeUnschedulable: a cordoned machine takes only
// pods that tolerate the unschedulable taint.
func unschedulableFilter(c *cycle, m *machineState) []string {
	if m.unschedulable && !tolerates(c.pod.tolerations, &unschedulableTaint) {
		return []string{"machine unschedulable"}
	}
	return nil
}

// taintFilter is TaintToleration's filter: every NoSchedule and NoExecute
// taint must be tolerated.
func taintFilter(c *cycle, m *machineState) []string {
	if t := untolerated(m.taints, c.pod.tolerations, corev1.TaintEffectNoSchedule, corev1.TaintEffectNoExecute); t != nil {
		return untoleratedReason(t)
	}
	return nil
}

// noExecuteFilter is the kubelet's admission check for a pod bound by
// spec.nodeName: only NoExecute taints turn it away.
func noExecuteFilter(c *cycle, m *machineState) []string {
	if t := untolerated(m.taints, c.pod.tolerations, corev1.TaintEffectNoExecute); t != nil {
		return untoleratedReason(t)
	}
	return nil
}

// taintScore is TaintToleration's score: fewer untolerated
// PreferNoSchedule taints score higher. Only tolerations with no effect or
// PreferNoSchedule count, as in kube-scheduler.
func taintScore(c *cycle, feasible []*machineState, out []int64) {
	var tols []corev1.Toleration
	for _, t := range c.pod.tolerations {
		if t.Effect == "" || t.Effect == corev1.TaintEffectPreferNoSchedule {
			tols = append(tols, t)
		}
	}
	for i, m := range feasible {
		for j := range m.taints {
			t := &m.taints[j]
			if t.Effect == corev1.TaintEffectPreferNoSchedule && !tolerates(tols, t) {
				out[i]++
			}
		}
	}
	normalize(out, true)
}
