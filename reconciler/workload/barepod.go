package workload

import (
	corev1 "k8s.io/api/core/v1"
)

// barePod runs a Pod written as such: it exists under its own name, is
// replaced in place when its spec changes, and stays as it ended when it
// ended (a bare pod is not restarted by a controller).
func (p *pass) barePod(pod *corev1.Pod, ns, name string) Workload {
	owner, pods, mem, b := p.start(Owner{Kind: "Pod", Namespace: ns, Name: name})

	t := &corev1.PodTemplateSpec{Spec: pod.Spec}
	t.Labels, t.Annotations = pod.Labels, pod.Annotations
	hash := p.opts.TemplateHash(t)
	labels := ownerLabels(owner)
	labels[LabelPodTemplateHash] = hash
	tmpl := stamp(t, labels, nil)

	var cur *obs
	waiting := false
	for _, o := range pods {
		switch {
		case o.Name != name || o.lost:
		case o.Terminating:
			waiting = true
		default:
			cur = o
		}
	}
	var reason string
	switch {
	case cur == nil && waiting:
		reason = "waiting for the previous incarnation to stop"
	case cur == nil:
		b.add(name, hash, tmpl, pod.Spec.NodeName, nil, "pod is in the repository")
		reason = "start " + name
	case cur.hash == hash:
		b.keep(cur, tmpl, "")
		reason = "up to date"
	case cur.frozen:
		b.keep(cur, nil, "machine unreachable")
		reason = "spec changed; waiting for machine " + cur.Machine + " to replace " + name
	default:
		b.add(name, hash, tmpl, cur.Machine, cur, "spec changed")
		reason = "replace " + name + ": spec changed"
	}
	st := &b.w.Status
	st.UpdateRevision = hash
	if cur != nil && cur.active() {
		st.Replicas = 1
		if cur.ready {
			st.ReadyReplicas, st.AvailableReplicas = 1, 1
		}
		if cur.hash == hash {
			st.UpdatedReplicas = 1
		}
	}
	ready := Condition{Type: "Ready", Status: corev1.ConditionFalse, Reason: "PodNotReady"}
	if st.ReadyReplicas == 1 {
		ready = Condition{Type: "Ready", Status: corev1.ConditionTrue}
	}
	st.Conditions = p.conditions(mem, ready)
	return b.finish(pods, reason)
}
