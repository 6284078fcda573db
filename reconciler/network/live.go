package network

import (
	"berth.dev/berth/nodes/api"
	"berth.dev/berth/reconciler/live"
)

// FromLive describes the machines as a live pass sees them, for
// Input.Machines: each reachable machine's reported pods, with the pod as
// resolved for it (from the set the pass sends, else from last, the sets
// this process sent before, else from the pass's remembered templates),
// and the pods the pass stops or replaces marked Stopping. Healthy is a
// reachable agent that applied its last Network.
func FromLive(observed []live.Observed, pass *live.Pass, last map[string]*api.DesiredPods) []Machine {
	stopping := map[[2]string]bool{}
	sends := map[string]*api.DesiredPods{}
	if pass != nil {
		for _, a := range pass.Pods {
			if a.Action == live.Stop || a.Action == live.Replace {
				stopping[[2]string{a.Machine, a.Key()}] = true
			}
		}
		for _, m := range pass.Machines {
			if m.Send != nil {
				sends[m.Name] = m.Send
			}
		}
	}
	out := make([]Machine, 0, len(observed))
	for _, o := range observed {
		m := Machine{Name: o.Machine, Reachable: o.Reachable, Healthy: o.Reachable && o.Node.Network.Error == ""}
		for _, st := range o.Pods {
			key := st.Namespace + "/" + st.Name
			m.Pods = append(m.Pods, Pod{
				Status:   st,
				Spec:     specOf(st, sends[o.Machine], last[o.Machine], pass, o.Machine),
				Stopping: stopping[[2]string{o.Machine, key}],
			})
		}
		out = append(out, m)
	}
	return out
}

// specOf finds the resolved pod of a reported one: the same incarnation
// (UID) in a set sent to its machine, else one built from the template the
// pass remembers for it.
func specOf(st api.PodStatus, send, last *api.DesiredPods, pass *live.Pass, machine string) *api.Pod {
	for _, set := range []*api.DesiredPods{send, last} {
		if set == nil {
			continue
		}
		for i := range set.Pods {
			p := &set.Pods[i]
			if p.Namespace == st.Namespace && p.Name == st.Name && p.UID == st.UID {
				return p
			}
		}
	}
	if pass == nil {
		return nil
	}
	pm, ok := pass.Memory.Pods[st.Namespace+"/"+st.Name]
	if !ok || pm.Machine != machine || pm.UID != st.UID {
		return nil
	}
	t := pass.Memory.Templates[pm.Template]
	if t == nil {
		return nil
	}
	return &api.Pod{
		Namespace: st.Namespace, Name: st.Name, UID: st.UID, Hash: st.Hash, Labels: st.Labels,
		Spec: api.PodSpec{
			Containers: t.Spec.Containers, Hostname: t.Spec.Hostname, Subdomain: t.Spec.Subdomain,
			HostNetwork: t.Spec.HostNetwork,
		},
	}
}
